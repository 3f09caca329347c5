"""Checkpoints (issue 12, part 2; issue 22): atomic writes that survive a failing save, a slim ``best.pt`` = the
best row of ``metrics.csv`` (and the weights the sealed test scores at the val-chosen step), and checkpoints of
compiled / DDP-wrapped models that load into a plain model.

Every test names in its docstring the deliberate break of ``Code/common/checkpoint.py`` or ``trainer.py`` it was
seen to fail on.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from Code.engine.builders import build_model
from Code.common.checkpoint import clean_state_dict, load_checkpoint, save_checkpoint
from Code.inference.loading import load_model_from_checkpoint
from Code.engine.config import load_config
from Code.inference.metrics import METRIC_KEYS
from helpers import SELECTION_COLUMN, smoke_config

pytestmark = pytest.mark.usefixtures("single_thread")


def _failing_save(fail_after: int):
    """A ``torch.save`` stand-in that writes ``fail_after`` bytes of garbage to the handle, then raises."""
    def save(obj, handle, *args, **kwargs):
        handle.write(b"\x80partial-checkpoint" * (fail_after // 19 + 1))
        raise OSError("disk full (simulated)")
    return save


def test_failed_save_keeps_previous_latest_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    """A save that dies part-way keeps the old ``latest.pt`` loadable and removes its temporary file.

    Mutations checked: writing straight to ``latest.pt`` (no temporary file + rename) → the old checkpoint is
    garbage and ``load_checkpoint`` fails; dropping the ``os.unlink(tmp)`` clean-up → a ``.latest.pt.*.tmp`` file
    stays in ``checkpoints/``."""
    path = tmp_path / "checkpoints" / "latest.pt"
    good = {"model": {"w": torch.arange(6.0)}, "config": {"task": "seg"}, "step": 3}
    save_checkpoint(path, good)
    monkeypatch.setattr(torch, "save", _failing_save(fail_after=64))
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"model": {"w": torch.zeros(6)}, "config": {"task": "seg"}, "step": 6})
    monkeypatch.undo()
    assert sorted(p.name for p in path.parent.iterdir()) == ["latest.pt"]
    state = load_checkpoint(path)
    assert state["step"] == 3 and torch.equal(state["model"]["w"], torch.arange(6.0))


def test_failed_first_save_leaves_nothing(tmp_path, monkeypatch):
    """With no previous checkpoint, a failed save leaves neither a half-written ``best.pt`` nor a temporary file.

    Mutation checked: dropping the ``os.unlink(tmp)`` clean-up → the temporary file stays."""
    path = tmp_path / "checkpoints" / "best.pt"
    monkeypatch.setattr(torch, "save", _failing_save(fail_after=10))
    with pytest.raises(OSError):
        save_checkpoint(path, {"model": {}, "config": {}, "step": 1})
    assert list(path.parent.iterdir()) == []


def _scripted_val(scores, calls):
    """A ``Trainer.evaluate`` stand-in for training-time evaluations: the k-th (of the val part, the only part
    evaluated during training) returns every metric equal to ``scores[k]``."""
    def evaluate(trainer, loader=None, *args, **kwargs):
        assert loader is not None and loader is trainer.val_loader, "test evaluated during training"
        calls.append(trainer.step)
        return {key: scores[len(calls) - 1] for key in METRIC_KEYS}
    return evaluate


def _checkpoint_rows(path, loader):
    """Per-image test records of the model in checkpoint ``path`` as the prediction CSVs write them."""
    from Code.inference.prediction import evaluate_model

    model, _, _ = load_model_from_checkpoint(path)
    return {r["name"]: r for r in evaluate_model(model, loader, "cpu")}


@pytest.mark.parametrize("task, scores", [("seg", [0.2, 0.7, 0.4]), ("cls", [0.1, 0.3, 0.3])])
def test_best_checkpoint_is_the_best_row_of_metrics_csv(phantom_split, tmp_path, monkeypatch, task, scores):
    """``best.pt`` holds the step whose selection score (the val part's, ``SELECTION_COLUMN``) in ``metrics.csv``
    is the highest (the first on a tie); it is slim (weights, config, step, val metrics) while ``latest.pt`` keeps
    the full state; the sealed test's ``test_at_best_val`` and ``test_predictions_best.csv`` are those of exactly
    the weights in ``best.pt``, and ``test_at_final`` / ``test_predictions_final.csv`` those of ``latest.pt``.

    Mutations checked: ``improved`` always true in ``Trainer._evaluate_and_save`` (best.pt = the last evaluation);
    the incumbent's score keyed with a later step than its own (a tie moves best.pt to the later step, cls case);
    the end-of-run test scoring without swapping in best.pt's weights (the best CSV holds the final weights'
    probabilities); ``slim_state`` returning the full state (best.pt keys)."""
    from Code.engine import trainer as trainer_module
    from Code.inference.metrics import summarize_metrics
    from Code.engine.sealed_test import read_predictions

    run = tmp_path / "run"
    config = smoke_config(phantom_split, method="supervised", task=task,
                          train={"iters": 6}, eval={"every": 2})
    calls = []
    monkeypatch.setattr(trainer_module.Trainer, "evaluate", _scripted_val(scores, calls))
    trainer = trainer_module.Trainer(config, run, torch.device("cpu"))
    result = trainer.fit()
    assert calls == [2, 4, 6]
    with (run / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["step"]) for r in rows] == [2, 4, 6]
    column = [float(r[SELECTION_COLUMN[task]]) for r in rows]
    assert column == pytest.approx(scores)
    best_row = max(range(len(rows)), key=lambda i: (column[i], -i))  # first maximum
    expected_step = int(rows[best_row]["step"])
    assert expected_step != 6  # the scripted scores make the last evaluation not the best
    best = torch.load(run / "checkpoints" / "best.pt", weights_only=False)
    latest = torch.load(run / "checkpoints" / "latest.pt", weights_only=False)
    assert best["step"] == expected_step and latest["step"] == 6
    assert set(best) == {"step", "config", "model", "val", "slim"} and best["val"]["dice"] == scores[best_row]
    assert {"seg_optimizer", "cls_optimizer", "streams", "rng"} <= set(latest)
    final = json.loads((run / "final_metrics.json").read_text())
    assert final["best_val_step"] == expected_step == result["best_val_step"]
    assert any(not torch.equal(v, latest["model"][k]) for k, v in best["model"].items())
    for point, name, weights in (("best", "test_at_best_val", "best.pt"), ("final", "test_at_final", "latest.pt")):
        expected = _checkpoint_rows(run / "checkpoints" / weights, trainer.eval_loader)
        written = read_predictions(run / final["predictions"][point])
        assert [r["image"] for r in written] == sorted(expected)
        for row in written:
            assert row["prob_malignant"] == pytest.approx(expected[row["image"]]["prob_malignant"], abs=2e-6)
            assert row["dice"] == pytest.approx(expected[row["image"]]["dice"], abs=2e-6)
        summary = summarize_metrics(list(expected.values()))
        assert final[name]["step"] == (expected_step if point == "best" else 6)
        assert final[name]["auc"] == pytest.approx(summary["auc"], abs=1e-9, nan_ok=True)


@pytest.fixture
def gloo_group(tmp_path_factory):
    """A one-process gloo group (file rendezvous), so that a model can be wrapped in DDP on the CPU."""
    import torch.distributed as dist

    if dist.is_initialized():
        pytest.skip("a process group already exists in this process")
    init = tmp_path_factory.mktemp("gloo") / "rendezvous"
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def _tiny_model():
    config = load_config(str(Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"))
    config["model"]["encoder_weights"] = None
    torch.manual_seed(0)
    return build_model(config), config


@pytest.mark.parametrize("wrapping", ["compile", "ddp", "compile+ddp"])
def test_wrapped_model_checkpoint_loads_into_a_plain_model(gloo_group, tmp_path, wrapping):
    """A checkpoint whose keys carry ``_orig_mod.`` (torch.compile) and/or ``module.`` (DDP) prefixes loads into
    a plain model with identical weights and identical outputs.

    Mutations checked: ``_PREFIXES`` without ``"_orig_mod."`` (compile cases fail with a UserError) and without
    ``"module."`` (DDP cases fail)."""
    model, config = _tiny_model()
    wrapped = model
    if "ddp" in wrapping:
        wrapped = torch.nn.parallel.DistributedDataParallel(wrapped, find_unused_parameters=True)
    if "compile" in wrapping:
        wrapped = torch.compile(wrapped)  # wrapping only: nothing is compiled until a forward
    state = wrapped.state_dict()
    assert all(k.startswith("_orig_mod." if "compile" in wrapping else "module.") for k in state)
    path = tmp_path / "checkpoints" / "best.pt"
    save_checkpoint(path, {"model": state, "config": config, "step": 5})
    plain, saved_config, step = load_model_from_checkpoint(path)
    assert step == 5 and saved_config["model"] == config["model"] and not plain.training
    reference = model.state_dict()
    loaded = plain.state_dict()
    assert set(loaded) == set(reference)
    for key, value in reference.items():
        assert torch.equal(loaded[key], value), key
    model.eval()
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        a, b = model(x), plain(x)
    assert torch.equal(a["seg_logits"], b["seg_logits"]) and torch.equal(a["cls_logits"], b["cls_logits"])


def test_clean_state_dict_strips_nested_prefixes_only():
    """``clean_state_dict`` removes wrapper prefixes at the front and inside (a compiled sub-module) but keeps a
    parameter whose own name merely contains ``module``.

    Mutation checked: stripping every occurrence of ``module`` (e.g. ``str.replace("module", "")``) → the
    ``submodule.weight`` key is damaged."""
    state = {"_orig_mod.module.encoder.w": 1, "module.head._orig_mod.b": 2, "submodule.weight": 3}
    assert clean_state_dict(state) == {"encoder.w": 1, "head.b": 2, "submodule.weight": 3}


def test_trainer_state_of_a_compiled_model_has_plain_keys(phantom_split, tmp_path):
    """``Trainer.state_dict`` of a run with ``train.compile: true`` holds plain parameter names, so ``latest.pt``
    loads without the wrapper.

    Mutation checked: ``"model": self.model.state_dict()`` instead of ``unwrap(self.model)`` in
    ``Trainer.state_dict`` → ``_orig_mod.`` keys."""
    from Code.engine.trainer import Trainer

    config = smoke_config(phantom_split, method="supervised", train={"compile": True})
    trainer = Trainer(config, tmp_path / "run", torch.device("cpu"))
    assert hasattr(trainer.model, "_orig_mod")  # the run's model is the compiled wrapper
    keys = list(trainer.state_dict()["model"])
    assert keys and not any(k.startswith(("_orig_mod.", "module.")) for k in keys)
    trainer.logger.close()
