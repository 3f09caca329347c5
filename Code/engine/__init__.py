"""The one training engine: config, loop, method steps, evaluation, checkpoints, logging, distributed helpers."""
