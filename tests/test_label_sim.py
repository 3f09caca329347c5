"""simulate_labeling.py (issue #24 part 2): the rounds, rounds.csv, the per-strategy split copies, resume after a
stop, and the one-line refusals. In-process on the session's phantom split (budget 4, a pool of 18 images with
truth, 64x64); the trainings are replaced by a fake ``run_child`` that writes what a finished run leaves (the
resolved config.yaml, a tiny random model's best.pt, final_metrics.json), so that suggest.py's code scores real
checkpoints; the real trainers run in the one ``slow`` test."""
import csv
import hashlib
import json
import shutil
import signal
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from Code.active import simulation
from helpers import SMOKE_CONFIG, load_script, smoke_model_with_decisions

pytestmark = pytest.mark.usefixtures("single_thread")
simulate = load_script("simulate_labeling")


class FakeTrainer:
    """Stands in for ``run_experiments.run_child``: records each command; ``stop_at`` (call number, from 1) leaves
    that run unfinished (config.yaml only) and reports SIGTERM, as a stopped training does."""

    def __init__(self, stop_at=None):
        self.calls, self.stop_at = [], stop_at

    def __call__(self, cmd):
        from Code.common.checkpoint import save_checkpoint
        from Code.engine.cli import build_parser, resolve_config

        self.calls.append(list(cmd))
        config = resolve_config(build_parser("seg").parse_args(list(cmd[2:])), "seg")
        folder = Path(cmd[cmd.index("--out") + 1])
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.yaml").write_text(yaml.safe_dump(config))
        if len(self.calls) == self.stop_at:
            return 143, signal.SIGTERM
        model = smoke_model_with_decisions(config, seed=len(self.calls))
        save_checkpoint(folder / "checkpoints" / "best.pt", {"model": model.state_dict(), "config": config, "step": 2})
        metrics = {"dice": 0.5, "accuracy": 0.5, "step": 2}
        (folder / "final_metrics.json").write_text(json.dumps({"test_at_best_val": metrics, "test_at_final": metrics}))
        return 0, None

    def runs(self):
        return [(c[c.index("--out") + 1].split("/runs/")[-1], "--resume" in c) for c in self.calls]


def _args(split, out, *extra, k=2, rounds=2, strategies=("random", "entropy")):
    return ["--config", SMOKE_CONFIG, "--data", split, "--start", 4, "--k", k, "--rounds", rounds,
            "--strategies", *strategies, "--methods", "supervised", "--out", out, "--iters", 2,
            "--set", "eval.every=2", *extra]


def _tree(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _names(path):
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


def _rows(out):
    with (out / "rounds.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture
def trainer(monkeypatch):
    fake = FakeTrainer()
    monkeypatch.setattr("Code.run_experiments.run_child", fake)
    return fake


def test_two_rounds_two_strategies(run_main, trainer, phantom_split, tmp_path):
    source_before, out = _tree(phantom_split), tmp_path / "sim"
    result = run_main(simulate.main, *_args(phantom_split, out))
    assert result.returncode == 0, result.stderr
    assert trainer.runs() == [("start/supervised_n4_s0", False), ("random/supervised_n6_s0", False),
                              ("entropy/supervised_n6_s0", False), ("random/supervised_n8_s0", False),
                              ("entropy/supervised_n8_s0", False)]  # the start budget is trained once
    rows = _rows(out)
    assert list(rows[0]) == list(simulation.COLUMNS)
    assert [(r["strategy"], r["seed"], r["round"], r["labels"], r["method"], r["run"]) for r in rows] == [
        (s, "0", str(r), str(4 + 2 * r), "supervised", f"runs/{'start' if r == 0 else s}/supervised_n{4 + 2 * r}_s0")
        for s in ("entropy", "random") for r in range(3)]
    assert all(float(r["train_seconds"]) >= 0 for r in rows)
    assert [r["suggest_seconds"] == "" for r in rows] == [r["round"] == "0" for r in rows]
    assert _tree(phantom_split) == source_before  # the source split is never written
    for strategy in ("random", "entropy"):
        copy = out / "splits" / f"{strategy}_s0"
        for part in ("test", "val", "train/4"):  # byte-identical: hard links of the source's files
            assert _tree(copy / part) == _tree(phantom_split / part) and _tree(copy / part)
            first = next(p for p in sorted((copy / part).rglob("*")) if p.is_file())
            assert first.stat().st_ino == (phantom_split / first.relative_to(copy)).stat().st_ino
        for r, (before, after) in enumerate(((4, 6), (6, 8)), start=1):
            chosen = [line.split(",")[1] for line in (out / "rounds" / f"{strategy}_s0" / f"r{r}" /
                                                       "to_label.csv").read_text().splitlines()[1:]]
            labeled = _names(copy / "train" / str(after) / "labeled" / "labeled.txt")
            assert sorted(labeled) == sorted(_names(copy / "train" / str(before) / "labeled" / "labeled.txt") + chosen)
            assert len(labeled) == after  # budgets grow by k
            pool = copy / "train" / str(before) / "unlabeled"
            truth = {e.split()[0]: e.split()[1:] for e in (pool / "truth.txt").read_text().splitlines()}
            entries = {e.split()[0]: e.split()[1:] for e in
                       (copy / "train" / str(after) / "labeled" / "labeled.txt").read_text().splitlines()}
            for name in chosen:  # the annotator's mask and label are the pool's truth
                mask = cv2.imread(str(copy / "train" / str(after) / "labeled" / "mask" / entries[name][0]), 0)
                assert np.array_equal(mask > 0, cv2.imread(str(pool / "mask" / truth[name][0]), 0) > 0)
                assert entries[name][1] == truth[name][1]
        record = json.loads((copy / "split.json").read_text())
        assert [(r["from"], r["budget"]) for r in record["rounds"]] == [(4, 6), (6, 8)]
        assert all(f"{strategy}_s0" in r["csv"] for r in record["rounds"])  # each copy has only its own rounds
    random_pick = (out / "rounds" / "random_s0" / "r1" / "to_label.csv").read_text().splitlines()[1:]
    assert all(line.split(",")[3] == "" for line in random_pick)  # random: no model, no score parts
    entropy_pick = (out / "rounds" / "entropy_s0" / "r1" / "to_label.csv").read_text().splitlines()[1:]
    assert all(line.split(",")[3] != "" for line in entropy_pick)  # scored by suggest.py's code


def test_random_picks_as_suggest_random(run_main, trainer, phantom_split, tmp_path):
    """The simulation's random round chooses what ``suggest.py --strategy random`` chooses with the same seed."""
    out = tmp_path / "sim"
    assert run_main(simulate.main, *_args(phantom_split, out, rounds=1, strategies=("random",))).returncode == 0
    suggest = load_script("suggest")
    result = run_main(suggest.main, "--checkpoint", out / "runs/start/supervised_n4_s0/checkpoints/best.pt",
                      "--data", phantom_split, "--labels", 4, "--k", 2, "--out", tmp_path / "s", "--strategy",
                      "random", "--seed", 1, "--device", "cpu")
    assert result.returncode == 0, result.stderr

    def images(folder):
        return [line.split(",")[1] for line in (folder / "to_label.csv").read_text().splitlines()[1:]]
    assert images(out / "rounds" / "random_s0" / "r1") == images(tmp_path / "s")


def test_resume_after_a_stop(run_main, monkeypatch, phantom_split, tmp_path, assert_one_line_error):
    """Stopped during the 4th training (random at 8): the same command continues that run with --resume, trains
    the rest, and neither redoes a finished run nor a round whose budget exists (its files keep their inode).
    Mutation checked: without the "budget exists" skip in label_round the resume fails (add_labels refuses)."""
    out = tmp_path / "sim"
    first = FakeTrainer(stop_at=4)
    monkeypatch.setattr("Code.run_experiments.run_child", first)
    stopped = run_main(simulate.main, *_args(phantom_split, out))
    assert stopped.returncode == 130 and "run the same command again" in stopped.stdout
    assert len(_rows(out)) == 4
    kept = (out / "splits/random_s0/train/8/labeled/labeled.txt").stat().st_ino
    suggested = []
    original = simulation.Simulation.suggest

    def spy(self, strategy, r, *rest):
        suggested.append((strategy, r))
        return original(self, strategy, r, *rest)
    monkeypatch.setattr(simulation.Simulation, "suggest", spy)
    second = FakeTrainer()
    monkeypatch.setattr("Code.run_experiments.run_child", second)
    assert run_main(simulate.main, *_args(phantom_split, out)).returncode == 0
    assert second.runs() == [("random/supervised_n8_s0", True), ("entropy/supervised_n8_s0", False)]
    assert suggested == [("entropy", 2)]
    assert (out / "splits/random_s0/train/8/labeled/labeled.txt").stat().st_ino == kept
    assert len(_rows(out)) == 6
    assert run_main(simulate.main, *_args(phantom_split, out)).returncode == 0 and len(second.calls) == 2
    assert_one_line_error(run_main(simulate.main, *_args(phantom_split, out, k=3)), "other settings", "k=2")


def test_refusals(run_main, trainer, phantom_split, tmp_path, assert_one_line_error):
    no_truth = tmp_path / "no_truth"
    shutil.copytree(phantom_split, no_truth)
    (no_truth / "train/4/unlabeled/truth.txt").unlink()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    out = tmp_path / "sim"
    cases = [(_args(phantom_split, out, k=10), ("--k 10 x --rounds 2 = 20", "18 images")),
             (_args(no_truth, out), ("needs the pool's truth", "truth.txt")),
             (_args(phantom_split, out) + ["--start", "5"], ("start budget train/5/ is missing", "has: 4, 10")),
             (_args(phantom_split, foreign), ("is not a simulation",)),
             (_args(phantom_split, out, "--suggest-with", "hermes"), ("--suggest-with hermes is not among",)),
             (_args(phantom_split, out) + ["--methods", "nope"], ("unknown method(s) nope",)),
             (_args(phantom_split, out) + ["--data", tmp_path / "d{draw}", "--seed", 1], ("no split.json",))]
    for argv, fragments in cases:
        assert_one_line_error(run_main(simulate.main, *argv), *fragments)
    assert trainer.calls == [] and not out.exists() and (foreign / "notes.txt").read_text() == "mine"


def test_dry_run_writes_nothing(run_main, trainer, phantom_split, tmp_path):
    result = run_main(simulate.main, *_args(phantom_split, tmp_path / "sim", "--dry-run"))
    assert result.returncode == 0, result.stderr
    assert "(5 trainings)" in result.stdout and "would run" in result.stdout and "add them as budget 8" in result.stdout
    assert trainer.calls == [] and not (tmp_path / "sim").exists()


def test_planned_runs_formula():
    assert simulation.planned_runs(methods=2, strategies=4, rounds=3) == 26  # the BUSI plan, per draw


@pytest.mark.slow
def test_real_trainings_and_the_curve(run_main, phantom_split, tmp_path):
    """One round, two strategies, supervised-only, with the real seg_train.py (2 iterations), then label-curve."""
    out = tmp_path / "sim"
    result = run_main(simulate.main, *_args(phantom_split, out, rounds=1))
    assert result.returncode == 0, result.stderr
    assert len(_rows(out)) == 4 and all((out / r["run"] / "final_metrics.json").is_file() for r in _rows(out))
    figures = load_script("make_figures")
    assert run_main(figures.main, "label-curve", out, "--out", tmp_path / "curve.png").returncode == 0
    assert len((tmp_path / "curve.csv").read_text().splitlines()) == 1 + 2 * 2 * 2  # metrics x strategies x budgets
