"""Inference: a trained network (checkpoint or exported file) → probabilities, metrics, calibration, uncertainty.

Used by ``evaluate.py``, ``predict.py``, ``export.py`` and ``suggest.py`` (and by the trainer's evaluations). It
sits below the scripts and above ``Code/models``: it imports ``Code.models``, ``Code.data``, ``Code.common`` and
``Code.errors``, never ``Code.engine``, ``Code.reporting``, ``Code.active`` or a script
(``tests/test_inference_layering.py``), so it can be read, and served, without the training engine.

- ``loading.py``: a checkpoint → the network in eval mode;
- ``prediction.py``: batched forward pass, per-image records of a labeled loader;
- ``metrics.py``: per-image Dice/IoU, set-level segmentation and classification metrics;
- ``calibration.py`` / ``calibration_fit.py``: ECE, Brier, temperature scaling, the calibration document;
- ``uncertainty.py``: normalised entropies, review thresholds and flags, risk–coverage;
- ``predictors.py``: one calling convention for a checkpoint, an ONNX or a TorchScript model;
- ``export_graph.py``: the exported graph, its metadata, ONNX / TorchScript writing and reading.
"""
