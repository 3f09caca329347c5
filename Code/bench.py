"""Benchmarks: ``python Code/bench.py {data,losses,train,gpu,export,pretrain} [options]`` (``--help`` after the name
for options).

- ``data``: data-loading throughput per mode, against a naive PIL + scipy loader doing the same work;
- ``losses``: forward + backward time of the pixel and image contrastive losses;
- ``train``: seconds per training iteration, images/s and peak memory, one JSON line;
- ``gpu``: the GPU check (paper-size iterations with and without ``torch.compile``; one line and exit 0 without CUDA);
- ``export``: inference images/s of the checkpoint (PyTorch) vs the exported ONNX model (ONNX Runtime), CPU;
- ``pretrain``: seconds per self-supervised pre-training (MoCo v2) step, images/s and peak memory, one JSON line.
"""
import _bootstrap  # noqa: F401

import importlib
import sys

from Code.errors import UserError, run_cli

NAMES = ("data", "losses", "train", "gpu", "export", "pretrain")


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in NAMES:
        raise UserError(f"usage: python Code/bench.py {{{','.join(NAMES)}}} [options]")
    name, rest = argv[0], argv[1:]
    return importlib.import_module(f"Code.benchmarks.{name}").main(rest)  # Code/benchmarks/<name>.py


if __name__ == "__main__":
    run_cli(main)
