"""Resume after an evaluation (issue 12, part 3): a run stopped once it has evaluated (and written ``best.pt``),
then resumed with the same command, ends exactly like an uninterrupted run: ``best.pt``, ``final_metrics.json``,
``metrics.csv``, weights, optimiser and scheduler states and memory banks. Once for ``seg_train.py --method
fixmatch`` and once for ``cls_train.py`` (Hermes, with memory banks).

The runs go through the entry scripts' ``main`` in-process (the command line is parsed exactly as
``python Code/seg_train.py ...`` would; a subprocess would only add interpreter start-up).
"""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from Code.engine import selection
from Code.engine.cli import main as train_main
from Code.methods import method_teacher
from helpers import SMOKE_CONFIG

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("single_thread")]

CASES = {
    # name: (task, extra command-line arguments, --stop-after); smoke config: 6 iterations, evaluations at 3 and 6
    "fixmatch": ("seg", ["--method", "fixmatch", "--set", "fixmatch.teacher=ema"], 4),  # stopped one step after
    # the first evaluation; the EMA-teacher variant, so that the teacher's state must survive the resume
    "cls_train": ("cls", ["--set", "ssl.prior_aware=true"], 3),  # stopped right at the first evaluation;
    # prior_aware adds the running unlabeled-pool prior to the state that must survive the resume; its latest.pt is
    # rewritten in the layout of runs saved before Code/methods/ (banks, teacher, pool_prior at the top level)
}


def _run(task, split, out, *extra):
    argv = ["--config", str(SMOKE_CONFIG), "--data", str(split), "--labels", "4", "--out", str(out),
            "--device", "cpu", *extra]
    assert train_main(argv, task=task) == 0


def _assert_same(a, b, where=""):
    """Recursive equality of checkpoint contents (tensors bit-exact)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and np.array_equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), (where, sorted(set(a) ^ set(b)))
        for key in a:
            _assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, (where, a, b)


def _load(run, name):
    return torch.load(run / "checkpoints" / name, weights_only=False)


def _rows(run):
    with (run / "metrics.csv").open() as handle:
        return list(csv.reader(handle))


@pytest.fixture
def first_evaluation_stays_best(monkeypatch):
    """Every evaluation scores the same, so the first one (step 3) stays best: a resumed run must keep the best
    record of the interrupted one instead of declaring its own first evaluation (step 6) the best."""
    monkeypatch.setattr(selection, "best_score", lambda metrics, task, step: (0.0,))


@pytest.mark.parametrize("case", sorted(CASES))
def test_resume_after_an_evaluation_equals_an_uninterrupted_run(case, phantom_split, tmp_path, capsys,
                                                                 first_evaluation_stays_best):
    """Stop after the first evaluation, resume, compare everything with an uninterrupted run (the split has a
    val/ part, so best.pt is chosen on val).

    Mutations checked (each fails this test): ``load_state_dict`` not restoring ``self.best`` (best.pt and
    final_metrics.json then name step 6); not loading the optimiser states (weights and Adam moments differ); not
    loading the schedulers (learning rates differ); not loading the memory banks or the pool prior (cls_train case); not
    loading the EMA teacher; the old checkpoint layout not mapped into the method's state (``method_state`` returning
    ``{}`` for it); a stream that restarts from batch 0 on resume (``consumed`` not restored)."""
    task, extra, stop = CASES[case]
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    _run(task, phantom_split, whole, *extra)
    _run(task, phantom_split, parts, *extra, "--stop-after", str(stop))
    assert "stopped at step" in capsys.readouterr().out
    assert _load(parts, "latest.pt")["step"] == stop
    stopped = _load(parts, "latest.pt")
    assert stopped["train_seconds"] > 0
    stopped["train_seconds"] = 1e6  # a marker: the resumed run must add its own time to the saved one
    if case == "cls_train":  # a run saved before Code/methods/: the method's state at the top level
        stopped.update(stopped.pop("method"))
        assert {"banks", "teacher", "pool_prior"} <= set(stopped)
    torch.save(stopped, parts / "checkpoints" / "latest.pt")
    assert _load(parts, "best.pt")["step"] == 3 and [r[0] for r in _rows(parts)[1:]] == ["3"]
    assert not (parts / "final_metrics.json").exists()
    _run(task, phantom_split, parts, *extra)  # the same command again continues the run
    assert f"from step {stop}" in capsys.readouterr().err

    assert _rows(whole) == _rows(parts) and [r[0] for r in _rows(whole)[1:]] == ["3", "6"]
    final_whole = json.loads((whole / "final_metrics.json").read_text())
    final_parts = json.loads((parts / "final_metrics.json").read_text())
    # wall time is the one thing that differs; it adds up over sessions (mutation: not restored on resume)
    assert 1e6 < final_parts.pop("train_seconds") < 1e6 + 3600 and final_whole.pop("train_seconds") > 0
    assert final_whole == final_parts
    assert final_whole["best_val_step"] == 3 and final_whole["test_at_final"]["step"] == 6
    for name in ("best.pt", "latest.pt"):
        a, b = _load(whole, name), _load(parts, name)
        a.pop("train_seconds", None), b.pop("train_seconds", None)
        assert a["step"] == b["step"] == (3 if name == "best.pt" else 6)
        _assert_same(a, b, name)  # every entry: weights, optimisers, schedulers, banks, teacher, streams, RNGs, ...
    latest = _load(whole, "latest.pt")
    assert latest["seg_optimizer"]["state"] and latest["cls_optimizer"]["state"]  # real moments were compared
    assert [s["last_epoch"] for s in latest["schedulers"]] == [6, 6]
    method = latest["method"]  # the method's own state (Code/methods/): teacher, pool prior, banks
    assert "teacher" in method or method_teacher(latest["config"]) != "ema"  # the EMA teacher compared
    if case == "cls_train":
        assert method["pool_prior"] is not None
        assert method["banks"] and any(v.abs().sum() > 0 for v in method["banks"].values())
