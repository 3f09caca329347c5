"""bench.py gpu (make gpu-check): one line and exit 0 without CUDA; the full code path in its tiny CPU mode."""
import json
import re

import torch
from helpers import load_script

bench = load_script("bench")


def test_without_cuda_one_line_and_exit_0(monkeypatch, capsys):
    """Mutation checked: without the early return the check goes on to torch.device('cuda') and fails."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert bench.main(["gpu"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("gpu-check: no CUDA device on this machine")


def test_tiny_cpu_mode_runs_eager_compiled_and_bench_train(capsys):
    """Mutations checked: skipping the compiled variant or the bench.py train call fails the line checks."""
    assert bench.main(["gpu", "--tiny-cpu", "--iters", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("gpu-check on CPU (tiny mode)") and "tu-test_resnet 64², batch 2 + 2" in lines[0]
    pattern = r"(eager|compiled): +3 iterations, [\d.]+ images/s, CPU, loss ([\d.]+) → ([\d.]+) \(mean"
    matches = [re.match(pattern, line) for line in lines[1:3]]
    assert [m.group(1) for m in matches] == ["eager", "compiled"]
    first = [float(m.group(2)) for m in matches]
    assert first[0] == first[1] > 0  # same seed, same data: compiling does not change the first losses
    assert lines[3].startswith("bench.py train --device cpu")
    result = json.loads(lines[4])
    assert result["device"] == "cpu" and result["encoder"] == "tu-test_resnet" and result["sec_per_iter"] > 0
