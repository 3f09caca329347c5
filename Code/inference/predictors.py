"""One calling convention for a checkpoint and for an exported model (ONNX Runtime or TorchScript).

A predictor maps a pre-processed batch ``images`` (B×C×S×S float32, CPU tensor) to ``(seg_probs, cls_probs)``:
B×2×S×S softmax over {background, lesion} and B×K class probabilities, both float32 CPU tensors. It also tells
the input ``size`` and ``in_channels`` the images must be prepared with, the ``temperature`` applied to the
class logits and the ``review_thresholds`` (or None) of its calibration.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import torch

from Code.errors import UserError

Probs = Tuple[torch.Tensor, torch.Tensor]


class CheckpointPredictor:
    """A HermesNet (from a checkpoint) with an optional calibration document applied."""

    def __init__(self, model: torch.nn.Module, config: Dict[str, Any], device: torch.device, amp: bool = False,
                 calibration: Optional[Dict[str, Any]] = None):
        from Code.inference.calibration import apply_temperature

        self.device, self.amp = device, amp
        self.temperature = 1.0 if calibration is None else float(calibration["temperature"])
        self.review_thresholds = None if calibration is None else calibration.get("review_thresholds")
        self.model = apply_temperature(model, calibration)
        self.size, self.in_channels = config["data"]["size"], config["data"]["in_channels"]

    def __call__(self, images: torch.Tensor) -> Probs:
        from Code.inference.prediction import predict_batch

        seg, cls = predict_batch(self.model, images.to(self.device), self.amp)
        return seg.cpu(), cls.cpu()


class _ExportedPredictor:
    """Shared part of the exported-model predictors: settings from the file's metadata."""

    def __init__(self, metadata: Dict[str, Any]):
        self.metadata = metadata
        size = metadata["input"]["input_size"]
        self.size, self.in_channels = int(size[0]), int(metadata["input"]["channels"])
        self.temperature = float(metadata.get("temperature", 1.0))
        self.review_thresholds = metadata.get("review_thresholds")

    @staticmethod
    def _to_probs(lesion: torch.Tensor, cls: torch.Tensor) -> Probs:
        lesion = lesion.float()
        return torch.cat([1.0 - lesion, lesion], dim=1), cls.float()


class OnnxPredictor(_ExportedPredictor):
    """An exported ``.onnx`` model run by ONNX Runtime on the CPU (intra-op threads = torch's thread count)."""

    def __init__(self, path: Union[str, Path], threads: Optional[int] = None):
        import onnxruntime as ort
        from Code.inference.export_graph import INPUT_NAME, read_onnx_metadata

        super().__init__(read_onnx_metadata(path))
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        self.input_name = INPUT_NAME
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, images: torch.Tensor) -> Probs:
        lesion, cls = self.session.run(None, {self.input_name: images.detach().cpu().float().numpy()})
        return self._to_probs(torch.from_numpy(lesion), torch.from_numpy(cls))


class TorchScriptPredictor(_ExportedPredictor):
    """An exported TorchScript file run by PyTorch on the CPU."""

    def __init__(self, path: Union[str, Path]):
        from Code.inference.export_graph import load_torchscript

        self.module, metadata = load_torchscript(path)
        super().__init__(metadata)

    def __call__(self, images: torch.Tensor) -> Probs:
        with torch.no_grad():
            lesion, cls = self.module(images.detach().cpu().float())
        return self._to_probs(lesion, cls)


def open_exported(path: Union[str, Path]):
    """The predictor of an exported model file: ``.onnx`` → ONNX Runtime, anything else → TorchScript."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"model file not found: {path}")
    return OnnxPredictor(path) if path.suffix.lower() == ".onnx" else TorchScriptPredictor(path)
