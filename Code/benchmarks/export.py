"""Inference benchmark, checkpoint (PyTorch eager) vs the exported ONNX model (ONNX Runtime), CPU:
``python Code/bench.py export [--checkpoint CKPT [--onnx FILE] | --encoder resnet34] [--size 224] [--batches 1 8]
[--runs 10]``.

The same inference graph (``inference/export_graph.py``: lesion probability at input size + class probabilities)
runs in both; the ONNX file is exported to a temporary folder first, unless ``--onnx`` names the export of
``--checkpoint`` (its temperature is then used for the PyTorch graph too). Per batch size, the median time of
``--runs`` calls after 2 warm-up calls gives images/s. Both runtimes use the same number of intra-op threads
(torch's, i.e. ``OMP_NUM_THREADS`` or ``--threads``). Prints one JSON line per runtime and batch size
(``runtime``, ``batch``, ``ms_per_batch``, ``images_per_sec``) and a last line with the speed-up of ONNX Runtime
and the largest absolute difference of the two runtimes' probabilities.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

from Code.errors import UserError


def _median_seconds(call: Callable[[], object], runs: int) -> float:
    for _ in range(2):
        call()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _load(args: argparse.Namespace):
    """(model, config) from ``--checkpoint``, else a randomly initialised model of ``--encoder``."""
    if args.checkpoint:
        from Code.inference.loading import load_model_from_checkpoint
        model, config, _ = load_model_from_checkpoint(args.checkpoint, "cpu")
        return model, dict(config, data=dict(config["data"], size=args.size))
    from Code.engine.builders import build_model
    from Code.engine.config import load_config
    config = load_config(args.config, overrides=[{"model": {"encoder_name": args.encoder, "encoder_weights": None},
                                                  "data": {"size": args.size}}])
    torch.manual_seed(0)
    return build_model(config).eval(), config


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="a trained checkpoint (default: a random model of --encoder)")
    parser.add_argument("--onnx", help="an existing export of --checkpoint (default: export to a temporary file)")
    parser.add_argument("--encoder", default="resnet34")
    parser.add_argument("--config", help="config of the random model (default: base)")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--threads", type=int, help="intra-op threads of both runtimes (default: torch's)")
    args = parser.parse_args(argv)
    if args.size <= 0 or args.size % 32 or args.runs <= 0 or min(args.batches) <= 0:
        raise UserError("--size must be a positive multiple of 32; --runs and --batches positive")
    if args.checkpoint and not Path(args.checkpoint).is_file():
        raise UserError(f"checkpoint not found: {args.checkpoint}")
    if args.onnx and not (args.checkpoint and Path(args.onnx).is_file()):
        raise UserError(f"--onnx needs --checkpoint and an existing file: {args.onnx}")
    if args.threads:
        torch.set_num_threads(args.threads)
    from Code.inference.export_graph import (InferenceGraph, check_exportable, export_metadata, export_onnx,
                                          read_onnx_metadata)
    from Code.inference.predictors import OnnxPredictor

    model, config = _load(args)
    check_exportable(config)
    graph = InferenceGraph(model, read_onnx_metadata(args.onnx)["temperature"] if args.onnx else 1.0)
    channels = config["data"]["in_channels"]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(args.onnx) if args.onnx else Path(folder) / "model.onnx"
        if not args.onnx:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                export_onnx(graph, path, export_metadata(config, 1.0, None, args.checkpoint or args.encoder, None))
        onnx_model = OnnxPredictor(path, threads=torch.get_num_threads())
        speedups, max_diff = {}, 0.0
        for batch in args.batches:
            x = torch.randn(batch, channels, args.size, args.size, generator=torch.Generator().manual_seed(batch))
            with torch.no_grad():
                reference = graph(x)
            got = onnx_model.session.run(None, {onnx_model.input_name: x.numpy()})
            max_diff = max(max_diff, *(float((torch.from_numpy(g) - r).abs().max()) for g, r in zip(got, reference)))
            seconds = {}
            for runtime, call in (("pytorch", lambda: _torch_call(graph, x)),
                                  ("onnxruntime", lambda: onnx_model.session.run(None, {onnx_model.input_name:
                                                                                         x.numpy()}))):
                seconds[runtime] = _median_seconds(call, args.runs)
                print(json.dumps({"runtime": runtime, "batch": batch, "size": args.size,
                                  "ms_per_batch": round(1000 * seconds[runtime], 2),
                                  "images_per_sec": round(batch / seconds[runtime], 2),
                                  "encoder": config["model"]["encoder_name"], "threads": torch.get_num_threads()}))
            speedups[str(batch)] = round(seconds["pytorch"] / seconds["onnxruntime"], 3)
    print(json.dumps({"onnxruntime_speedup": speedups, "max_abs_diff": max_diff}))
    return 0


def _torch_call(graph: torch.nn.Module, x: torch.Tensor):
    with torch.no_grad():
        return graph(x)
