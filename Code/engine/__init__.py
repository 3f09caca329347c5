"""The one training engine: config, loop, method steps, best-model choice, checkpoints of a run, logging,
distributed helpers. Evaluation and prediction live in ``Code/inference/``, the checkpoint file in ``Code/common/``."""
