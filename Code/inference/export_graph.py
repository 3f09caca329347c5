"""The deployable inference graph of a HermesNet and its export to ONNX and TorchScript.

Graph (:class:`InferenceGraph`): ``image`` B×C×H×W float32, already pre-processed (see the metadata) →
``lesion_prob`` B×1×H×W = softmax(seg_logits)[:, 1] and ``class_prob`` B×K = softmax(cls_logits / T), with T the
temperature (1 when uncalibrated). Batch size and spatial size are dynamic (H and W multiples of 32).

Metadata (:func:`export_metadata`, a JSON document stored as the ONNX model's ``metadata_props["hermes"]`` and as
the TorchScript archive's extra file ``hermes.json``) says how to pre-process an image: decode as 8-bit
grayscale, resize to ``input_size`` (area when shrinking, bilinear when enlarging), x / 255, then
(x − mean) / std per channel, the gray image repeated over ``channels``; plus class names, temperature, review
thresholds and where the weights came from.
"""
from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple, Union

import torch
from torch import nn

from Code.common.file_mode import user_file_mode
from Code.errors import UserError

METADATA_KEY = "hermes"
TORCHSCRIPT_EXTRA = "hermes.json"
INPUT_NAME, OUTPUT_NAMES = "image", ("lesion_prob", "class_prob")
FORMATS = ("onnx", "torchscript")
SUFFIXES = {"onnx": (".onnx",), "torchscript": (".ts", ".pt")}  # predict.py --model: .onnx → ONNX, else TorchScript
MAX_SIDE = 8192  # largest spatial size the ONNX graph is exported for (dynamic up to this)


class InferenceGraph(nn.Module):
    """``x`` B×C×H×W → ``(lesion_prob B×1×H×W, class_prob B×K)``; see the module docstring."""

    def __init__(self, model: nn.Module, temperature: float = 1.0):
        super().__init__()
        if not temperature > 0:
            raise UserError(f"the temperature must be positive, got {temperature!r}")
        self.model, self.temperature = model.eval(), float(temperature)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        out = self.model(x)
        lesion = out["seg_logits"].float().softmax(dim=1)[:, 1:2]
        return lesion, (out["cls_logits"].float() / self.temperature).softmax(dim=1)


def check_exportable(config: Dict[str, Any]) -> None:
    """Gradient saliency needs autograd inside the forward pass, which neither format records."""
    model = config["model"]
    if model.get("saliency") and model.get("saliency_mode") == "gradient":
        raise UserError("model.saliency_mode=gradient needs autograd at inference and cannot be exported "
                        "(train with saliency_mode: cam to export)")


def export_metadata(config: Dict[str, Any], temperature: float, review_thresholds: Optional[Dict[str, float]],
                    source: str, step: Optional[int]) -> Dict[str, Any]:
    """The pre-processing and output description stored in the exported file."""
    from Code.data import CLASS_NAMES, normalization

    channels = config["data"]["in_channels"]
    mean, std = normalization(channels)
    size = config["data"]["size"]
    return {
        "format_version": 1,
        "input": {"name": INPUT_NAME, "layout": "NCHW", "dtype": "float32", "channels": channels,
                  "input_size": [size, size], "size_multiple": 32,
                  "preprocess": "decode as 8-bit grayscale; resize to input_size (area when shrinking, bilinear "
                                "when enlarging); x/255; (x - mean)/std per channel; gray repeated over channels",
                  "scale": 1.0 / 255.0, "mean": [float(m) for m in mean], "std": [float(s) for s in std]},
        "outputs": {"lesion_prob": "B×1×H×W probability of lesion (threshold 0.5 for the mask)",
                    "class_prob": "B×K softmax(class logits / temperature)"},
        "class_names": list(CLASS_NAMES),
        "temperature": float(temperature),
        "review_thresholds": review_thresholds,
        "source_checkpoint": source,
        "step": step,
    }


def _atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Write via ``write(tmp)`` to a temporary file in ``path``'s folder, then rename it to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, user_file_mode())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _example(metadata: Dict[str, Any], batch: int = 2) -> torch.Tensor:
    size = metadata["input"]["input_size"]
    return torch.randn(batch, metadata["input"]["channels"], *size)


def export_onnx(graph: InferenceGraph, path: Union[str, Path], metadata: Dict[str, Any]) -> None:
    """ONNX (torch.export-based exporter, opset of the exporter) with dynamic batch and spatial size."""
    batch = torch.export.Dim("batch", min=1, max=4096)
    height = torch.export.Dim("height32", min=1, max=MAX_SIDE // 32)
    width = torch.export.Dim("width32", min=1, max=MAX_SIDE // 32)
    program = torch.onnx.export(graph, (_example(metadata),), dynamo=True, verbose=False, external_data=False,
                                input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
                                dynamic_shapes={"x": {0: batch, 2: 32 * height, 3: 32 * width}})
    program.model.metadata_props[METADATA_KEY] = json.dumps(metadata)
    _atomic(Path(path), lambda tmp: program.save(tmp, external_data=False))


def export_torchscript(graph: InferenceGraph, path: Union[str, Path], metadata: Dict[str, Any]) -> None:
    """TorchScript by tracing (the graph has no data-dependent control flow; sizes are traced symbolically)."""
    with torch.no_grad():
        traced = torch.jit.trace(graph, (_example(metadata),), check_trace=False)
    extra = {TORCHSCRIPT_EXTRA: json.dumps(metadata)}
    _atomic(Path(path), lambda tmp: torch.jit.save(traced, str(tmp), _extra_files=extra))


def read_onnx_metadata(path: Union[str, Path]) -> Dict[str, Any]:
    """The ``hermes`` metadata of an exported ONNX file; UserError if the file is not one."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises several kinds for a damaged file
        raise UserError(_unreadable(path, "onnx", exc)) from None
    props = {p.key: p.value for p in model.metadata_props}
    if METADATA_KEY not in props:
        raise UserError(f"{path} has no '{METADATA_KEY}' metadata (not exported by Code/export.py)")
    return json.loads(props[METADATA_KEY])


def load_torchscript(path: Union[str, Path]) -> Tuple[torch.jit.ScriptModule, Dict[str, Any]]:
    """An exported TorchScript file and its metadata."""
    extra = {TORCHSCRIPT_EXTRA: ""}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # "torch.jit.load is deprecated"
            module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except Exception as exc:  # noqa: BLE001
        raise UserError(_unreadable(path, "torchscript", exc)) from None
    if not extra[TORCHSCRIPT_EXTRA]:
        raise UserError(f"{path} has no {TORCHSCRIPT_EXTRA} (not exported by Code/export.py)")
    return module.eval(), json.loads(extra[TORCHSCRIPT_EXTRA])


def check_out_suffix(out: Path, fmt: str) -> None:
    """UserError unless ``out`` is named as a ``fmt`` file (:data:`SUFFIXES`): ``predict.py --model`` picks the
    runtime by the name."""
    wanted = SUFFIXES[fmt]
    if Path(out).suffix.lower() not in wanted:
        raise UserError(f"--out {out}: a {fmt} file is named *{' or *'.join(wanted)} (predict.py --model picks the "
                        f"runtime by the name); e.g. --out {Path(out).with_suffix(wanted[0])}")


def sniff_model_file(path: Union[str, Path]) -> str:
    """What ``path`` holds, by its content: ``torchscript``, ``checkpoint`` (a ``torch.save`` archive), ``onnx``
    or ``unknown``."""
    import zipfile

    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
        return "torchscript" if any("/code/" in n or n.endswith("/constants.pkl") for n in names) else "checkpoint"
    try:
        import onnx

        return "onnx" if len(onnx.load(str(path), load_external_data=False).graph.node) else "unknown"
    except Exception:  # noqa: BLE001 — not ONNX either
        return "unknown"


def _unreadable(path: Union[str, Path], expected: str, exc: Exception) -> str:
    """The one-line reason why ``path`` does not load as an ``expected`` (``onnx``/``torchscript``) model."""
    found = sniff_model_file(path)
    if found == "checkpoint":
        return (f"{path} is a PyTorch checkpoint, not an exported model: use predict.py --checkpoint {path}, or "
                "export it with Code/export.py")
    if found == "onnx" and expected == "torchscript":
        return f"{path} is not a TorchScript file: it is an ONNX model (is it named wrongly? use a .onnx name)"
    if found == "torchscript" and expected == "onnx":
        return f"{path} is not an ONNX model: it is a TorchScript file (is it named wrongly? use a .ts name)"
    name = "ONNX model" if expected == "onnx" else "TorchScript model"
    reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else "unreadable"
    return f"cannot read {name} {path}: {type(exc).__name__}: {reason}"
