"""The sealed test split (issue 22, items 1 and 2): during training only val/ is evaluated and logged; test/ is
scored once after the last step (final weights and best.pt's), into ``final_metrics.json`` and the per-image
``test_predictions_{final,best}.csv`` — also when the run was stopped and resumed, and never again when a finished
run is invoked once more. ``eval.test_curves: true`` brings the test columns and TensorBoard tags back.

The runs go through the entry scripts' ``main`` in-process (as ``python Code/seg_train.py ...`` parses them).
"""
from __future__ import annotations

import csv
import json

import pytest
import torch

from Code.engine.cli import main as train_main
from Code.inference.metrics import METRIC_KEYS
from Code.engine.sealed_test import PREDICTION_COLUMNS
from helpers import SMOKE_CONFIG

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("single_thread")]


def _run(split, out, *extra):
    argv = ["--config", str(SMOKE_CONFIG), "--data", str(split), "--labels", "4", "--out", str(out),
            "--device", "cpu", "--method", "supervised", *extra]
    assert train_main(argv, task="seg") == 0


@pytest.fixture
def test_scorings(monkeypatch):
    """Steps at which the trainer evaluated its test part (``Trainer.records`` on ``eval_loader``)."""
    from Code.engine.trainer import Trainer

    steps, records = [], Trainer.records

    def counting(trainer, loader):
        if loader is trainer.eval_loader:
            steps.append(trainer.step)
        return records(trainer, loader)

    monkeypatch.setattr(Trainer, "records", counting)
    return steps


def _header(run):
    with (run / "metrics.csv").open() as handle:
        return next(csv.reader(handle))


def _scalar_tags(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    return set(acc.Tags()["scalars"])


def test_stopped_and_resumed_run_scores_test_once_at_the_end(phantom_split, tmp_path, test_scorings, capsys):
    """Mutations checked (each fails this test): test evaluated at every evaluation again (``self.test_curves``
    forced true: scorings at 3 and test columns/tags); the final scoring at a ``--stop-after`` stop (``_stop``
    calling ``_score_test_once``: a scoring at step 4); ``finished_result`` ignored (the re-invoked finished run
    scores test again); the CSVs unsorted or without the header; the best CSV not written."""
    run = tmp_path / "run"
    _run(phantom_split, run, "--stop-after", "4")
    assert test_scorings == [] and not (run / "final_metrics.json").exists()
    assert not list(run.glob("test_predictions_*.csv"))
    _run(phantom_split, run)  # the same command continues to step 6, then scores test: final and best weights
    assert test_scorings == [6, 6]
    assert _header(run) == ["step", *(f"val_{k}" for k in METRIC_KEYS)]
    tags = _scalar_tags(run)
    assert "val/dice" in tags and not [t for t in tags if t.startswith("eval/")]

    final = json.loads((run / "final_metrics.json").read_text())
    assert final["step"] == 6 and final["test_curves"] is False and final["test_at_final"]["step"] == 6
    assert final["predictions"] == {"final": "test_predictions_final.csv", "best": "test_predictions_best.csv"}
    assert final["test_at_best_val"]["step"] == final["best_val_step"] in (3, 6)
    names = sorted(line.split()[0] for line in (phantom_split / "test" / "labeled.txt").read_text().splitlines())
    labels = {line.split()[0]: int(line.split()[-1]) for line in (phantom_split / "test" / "labeled.txt")
              .read_text().splitlines()}
    for point in ("final", "best"):
        with (run / final["predictions"][point]).open() as handle:
            rows = list(csv.reader(handle))
        assert tuple(rows[0]) == PREDICTION_COLUMNS == ("image", "label", "prob_malignant", "pred_class", "dice", "iou")
        assert [r[0] for r in rows[1:]] == names  # one row per test image, sorted
        assert all(int(r[1]) == labels[r[0]] and len(r[2].split(".")[1]) == 6 for r in rows[1:])
        accuracy = sum(int(r[1]) == int(r[3]) for r in rows[1:]) / len(names)
        at = final["test_at_final" if point == "final" else "test_at_best_val"]
        assert accuracy == pytest.approx(at["accuracy"])

    _check_val_predictions(run, phantom_split, final)

    capsys.readouterr()
    _run(phantom_split, run)  # finished: the same command again does not score test again
    assert test_scorings == [6, 6] and "test is not scored again" in capsys.readouterr().err
    assert json.loads((run / "final_metrics.json").read_text()) == final


def _check_val_predictions(run, split, final):
    """The trainer's ``val_predictions_{final,best}.csv``: one sorted row per val image, accuracy and Dice equal to
    ``val_at_final`` / ``val_at_best``; ``python -m Code.engine.val_predictions`` writes the same bytes for a run
    without them (val only: no test scoring) and leaves existing files alone. Mutation checked: the trainer not
    passing val records to ``write_outputs`` (no files)."""
    from Code.engine import val_predictions

    names = sorted(line.split()[0] for line in (split / "val" / "labeled.txt").read_text().splitlines())
    written = {}
    for point, key in (("final", "val_at_final"), ("best", "val_at_best")):
        path = run / f"val_predictions_{point}.csv"
        with path.open() as handle:
            rows = list(csv.reader(handle))
        assert [r[0] for r in rows[1:]] == names
        assert sum(int(r[1]) == int(r[3]) for r in rows[1:]) / len(names) == pytest.approx(final[key]["accuracy"])
        assert sum(float(r[4]) for r in rows[1:]) / len(names) == pytest.approx(final[key]["dice"], abs=1e-5)
        written[point] = path.read_bytes()
        path.unlink()
    (run / "val_predictions_final.csv").write_text("mine\n")
    assert val_predictions.main([str(run), "--device", "cpu"]) == 0
    assert (run / "val_predictions_final.csv").read_text() == "mine\n"
    assert (run / "val_predictions_best.csv").read_bytes() == written["best"]
    (run / "val_predictions_final.csv").unlink()
    assert val_predictions.main([str(run), "--device", "cpu"]) == 0
    assert (run / "val_predictions_final.csv").read_bytes() == written["final"]


@pytest.fixture(scope="module")
def curves_run(phantom_split, tmp_path_factory):
    """A 3-step run with ``eval.test_curves: true``: ``(run folder, steps of its test scorings)``."""
    from Code.engine.trainer import Trainer

    run, steps, records = tmp_path_factory.mktemp("curves") / "run", [], Trainer.records

    def counting(trainer, loader):
        if loader is trainer.eval_loader:
            steps.append(trainer.step)
        return records(trainer, loader)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Trainer, "records", counting)
        _run(phantom_split, run, "--iters", "3", "--set", "eval.test_curves=true")
    return run, steps


def test_test_curves_on_request(curves_run):
    """``eval.test_curves: true``: test metrics at every evaluation in metrics.csv (plain names) and TensorBoard
    ``eval/``, and ``final_metrics.json`` says so. Mutation checked: the logger given no test keys (no columns)."""
    run, steps = curves_run
    assert _header(run) == ["step", *METRIC_KEYS, *(f"val_{k}" for k in METRIC_KEYS)]
    assert "eval/dice" in _scalar_tags(run)
    assert steps == [3, 3, 3]  # the evaluation at step 3, then the final and best scorings
    assert json.loads((run / "final_metrics.json").read_text())["test_curves"] is True


def test_slim_best_pt_serves_evaluate_predict_export_but_not_resume(curves_run, phantom_split, tmp_path, run_main,
                                                                    assert_one_line_error):
    """The slim ``best.pt`` (no optimiser, teacher, stream or RNG state) is all that evaluate.py, predict.py and
    export.py need; continuing a run from it is a one-line error naming latest.pt. Mutation checked: without the
    ``slim`` check in ``run_folder._checkpoint_info`` the resume fails with a KeyError traceback."""
    from helpers import load_script

    run, _ = curves_run
    best = run / "checkpoints" / "best.pt"
    assert set(torch.load(best, weights_only=False)) == {"step", "config", "model", "val", "slim"}
    evaluate, predict, export = (load_script(name) for name in ("evaluate", "predict", "export"))
    assert evaluate.main(["--checkpoint", str(best), "--data", str(phantom_split / "test"), "--device", "cpu",
                          "--no-overlays", "--out", str(tmp_path / "eval")]) == 0
    evaluated = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    sealed = json.loads((run / "final_metrics.json").read_text())["test_at_best_val"]
    assert evaluated["step"] == sealed["step"] and evaluated["dice"] == pytest.approx(sealed["dice"], abs=1e-6)
    image = sorted((phantom_split / "test" / "image").iterdir())[0]
    assert predict.main(["--checkpoint", str(best), "--images", str(image), "--device", "cpu", "--no-overlays",
                         "--out", str(tmp_path / "pred")]) == 0
    assert export.main(["--checkpoint", str(best), "--format", "torchscript", "--out", str(tmp_path / "m.ts")]) == 0
    assert (tmp_path / "m.ts").stat().st_size > 1000
    entry = lambda argv: train_main(argv, task="seg")  # noqa: E731
    refused = run_main(entry, "--config", SMOKE_CONFIG, "--data", phantom_split, "--labels", "4", "--device", "cpu",
                       "--out", tmp_path / "fork", "--resume", best)
    assert_one_line_error(refused, "slim best.pt", "latest.pt")


def test_a_run_saved_before_the_seal_keeps_its_test_columns(phantom_split, tmp_path):
    """A config saved before ``eval.test_curves`` existed (``--resume auto`` of an older run) continues with test
    columns, so that its metrics.csv keeps one header. Mutation checked: a default of false for the absent key."""
    from Code.engine.trainer import Trainer
    from helpers import smoke_config

    config = smoke_config(phantom_split)
    del config["eval"]["test_curves"]
    trainer = Trainer(config, tmp_path / "old", torch.device("cpu"))
    assert trainer.test_curves and trainer.logger.metric_keys == list(METRIC_KEYS)
    trainer.logger.close()
    trainer.close()
