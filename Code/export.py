"""Export a checkpoint's inference graph for deployment: ONNX or TorchScript.

Usage::

    python Code/export.py --checkpoint RUN/checkpoints/best.pt --format onnx|torchscript --out FILE
        [--temperature VALUE|FILE|auto] [--force]

The exported graph takes the pre-processed image batch ``image`` (B×C×H×W float32; batch and spatial size
dynamic, H and W multiples of 32) and returns ``lesion_prob`` (B×1×H×W) and ``class_prob`` (B×K, the class
logits divided by the temperature before the softmax). The pre-processing (input size, normalisation, channels),
class names, temperature and review thresholds are stored in the file's metadata (``inference/export_graph.py``).
``--temperature``: a number, a calibration file of ``evaluate.py --calibrate`` (its review thresholds are stored
too) or ``auto`` (the one next to the checkpoint); default 1 (no calibration). ``--out`` is named for its format
(``.onnx``; ``.ts`` or ``.pt`` for TorchScript): ``predict.py --model`` picks the runtime by the name. An existing
``--out`` is replaced only with ``--force`` and only when it is a model of export.py (README "Outputs and --force":
never the checkpoint or another input); the file is written atomically. Runs on the CPU.
"""
from __future__ import annotations

import _bootstrap  # noqa: F401

import argparse
import logging
import warnings
from pathlib import Path
from typing import Optional, Sequence

from Code.errors import UserError, run_cli
from Code.outputs import prepare_output_file


def is_exported_model(path: Path) -> bool:
    """A file written by this script: TorchScript with ``hermes.json``, or ONNX with ``hermes`` metadata (never a
    training checkpoint, which is a zip archive without ``hermes.json``)."""
    import zipfile

    from Code.inference.export_graph import TORCHSCRIPT_EXTRA, read_onnx_metadata

    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith(f"extra/{TORCHSCRIPT_EXTRA}") for name in archive.namelist())
    try:
        read_onnx_metadata(path)
    except (UserError, ValueError):
        return False
    return True


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Export a Hermes checkpoint to ONNX or TorchScript.")
    parser.add_argument("--checkpoint", required=True, help="RUN/checkpoints/best.pt or latest.pt")
    parser.add_argument("--format", required=True, choices=("onnx", "torchscript"))
    parser.add_argument("--out", required=True, help="output file: *.onnx for onnx, *.ts or *.pt for torchscript")
    parser.add_argument("--temperature", metavar="VALUE|FILE|auto",
                        help="temperature for the class probabilities: a number, a calibration JSON, or auto")
    parser.add_argument("--force", action="store_true",
                        help="replace an earlier --out file of export.py (never an input, never another kind of file)")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    checkpoint, out = Path(args.checkpoint), Path(args.out)
    if not checkpoint.is_file():
        raise UserError(f"checkpoint not found: {checkpoint}")
    if out.is_dir():
        raise UserError(f"--out {out} is a folder (name the file to write, e.g. {out / 'model.onnx'})")
    from Code.inference.export_graph import check_out_suffix
    check_out_suffix(out, args.format)
    inputs = [(checkpoint, f"--checkpoint {checkpoint}")]
    if args.temperature and Path(args.temperature).is_file():
        inputs.append((args.temperature, f"--temperature {args.temperature}"))
    prepare_output_file(out, "export.py", args.force, inputs, kind=is_exported_model,
                        kind_name="a model exported by export.py (ONNX or TorchScript)")
    from Code.inference.calibration import resolve_temperature
    calibration = resolve_temperature(args.temperature, checkpoint) or {"temperature": 1.0,
                                                                        "review_thresholds": None}
    import torch
    from Code.inference.loading import load_model_from_checkpoint
    from Code.inference.export_graph import (InferenceGraph, check_exportable, export_metadata, export_onnx,
                                          export_torchscript)

    model, config, step = load_model_from_checkpoint(checkpoint, "cpu")
    check_exportable(config)
    graph = InferenceGraph(model, calibration["temperature"])
    metadata = export_metadata(config, calibration["temperature"], calibration.get("review_thresholds"),
                               str(checkpoint.resolve()), step)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and exporter warnings about the shape checks of the model
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        with torch.no_grad():
            (export_onnx if args.format == "onnx" else export_torchscript)(graph, out, metadata)
    print(f"wrote {out} ({args.format}, input {metadata['input']['channels']}×H×W, trained at "
          f"{config['data']['size']}², temperature {calibration['temperature']:.4f})")
    return 0


if __name__ == "__main__":
    run_cli(main)
