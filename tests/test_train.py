"""End-to-end tests of the training engine through the two entry scripts (tiny encoder, CPU, a few iterations)."""
import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from Code.inference.metrics import METRIC_KEYS
from helpers import SUBPROCESS_ENV as ENV

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "configs" / "smoke.yaml")
UNLABELED_TERMS = ("seg_unsup", "cls_unsup", "pixel_contrast", "image_contrast", "consistency")


@pytest.fixture(scope="module")
def tiny_split(phantom_split):
    """The shared tiny phantom split (conftest); these tests train on its 4-label budget."""
    return phantom_split


def train(script, split, out, *extra, check=True):
    cmd = [sys.executable, str(ROOT / "Code" / script), "--config", SMOKE, "--data", str(split), "--labels", "4",
           "--out", str(out), *extra]
    proc = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def train_in_process(run_main, script, split, out, *extra, check=True):
    """``train`` without a new interpreter: the entry script's ``main`` through ``run_cli``, as its ``__main__``."""
    from Code.engine.cli import main

    entry = lambda argv: main(argv, task="seg" if script == "seg_train.py" else "cls")  # noqa: E731
    proc = run_main(entry, "--config", SMOKE, "--data", split, "--labels", "4", "--out", out, *extra)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def scalar_tags(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    return set(acc.Tags()["scalars"]), set(acc.Tags()["images"])


def read_metrics(run):
    with (run / "metrics.csv").open() as handle:
        return list(csv.reader(handle))


@pytest.mark.slow
@pytest.mark.parametrize("script", ["seg_train.py", "cls_train.py"])
def test_smoke_run_writes_everything(script, tiny_split, tmp_path):
    run = tmp_path / "run"
    proc = train(script, tiny_split, run)
    assert "test metrics at the final step (6)" in proc.stdout
    rows = read_metrics(run)
    assert rows[0] == ["step", *(f"val_{k}" for k in METRIC_KEYS)]  # the test part is sealed (test_sealed_test.py)
    assert [r[0] for r in rows[1:]] == ["3", "6"]
    state = torch.load(run / "checkpoints" / "latest.pt", weights_only=False)
    assert state["step"] == 6 and state["config"]["task"] == ("seg" if script == "seg_train.py" else "cls")
    assert state["config"]["model"]["saliency"] == (script == "seg_train.py")
    assert state["config"]["model"]["ias"] == (script == "cls_train.py")
    assert (run / "checkpoints" / "best.pt").is_file() and (run / "config.yaml").is_file()
    final = json.loads((run / "final_metrics.json").read_text())
    assert final["test_at_final"]["step"] == 6 and set(METRIC_KEYS) <= set(final["test_at_final"])
    assert final["selection"] == "val" and final["best_val_step"] in (3, 6)
    assert set(METRIC_KEYS) <= set(final["test_at_best_val"]) and set(METRIC_KEYS) <= set(final["val_at_best"])
    scalars, images = scalar_tags(run)
    for term in ("seg_sup", "cls_sup", "total", *UNLABELED_TERMS):
        assert f"loss/{term}" in scalars, term
    assert {"ssl/seg_keep_ratio", "ssl/cls_keep_ratio", "ssl/seg_threshold_0", "ssl/cls_threshold_1", "lr/seg",
            "lr/cls", "val/dice"} <= scalars, scalars
    assert not [t for t in scalars if t.startswith("eval/")]
    assert any(t.startswith("bank/pixel_fill") for t in scalars)
    assert {"images/input", "images/pseudo", "images/keep", "images/entropy", "images/prediction"} <= images


@pytest.mark.slow
def test_supervised_logs_no_unlabeled_terms(tiny_split, tmp_path, run_main):
    run = tmp_path / "sup"
    train_in_process(run_main, "seg_train.py", tiny_split, run, "--method", "supervised")
    scalars, _ = scalar_tags(run)
    assert "loss/seg_sup" in scalars and "loss/cls_sup" in scalars
    assert not [t for t in scalars if any(term in t for term in UNLABELED_TERMS) or t.startswith("ssl/")]


@pytest.mark.slow
def test_resume_gives_the_same_weights_and_metrics(tiny_split, tmp_path, run_main):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    train_in_process(run_main, "seg_train.py", tiny_split, whole)
    stopped = train_in_process(run_main, "seg_train.py", tiny_split, parts, "--stop-after", "2")
    assert "stopped at step 2" in stopped.stdout
    assert torch.load(parts / "checkpoints" / "latest.pt", weights_only=False)["step"] == 2
    resumed = train_in_process(run_main, "seg_train.py", tiny_split, parts, "--resume", "auto")
    assert "resuming" in resumed.stderr and "from step 2" in resumed.stderr
    a = torch.load(whole / "checkpoints" / "latest.pt", weights_only=False)
    b = torch.load(parts / "checkpoints" / "latest.pt", weights_only=False)
    assert a["step"] == b["step"] == 6
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert a["method"]["banks"]  # hermes: the memory banks are part of the method's state
    for key, value in a["method"]["banks"].items():
        assert torch.equal(value, b["method"]["banks"][key]), key
    assert read_metrics(whole) == read_metrics(parts)


@pytest.mark.slow
def test_same_folder_same_config_resumes_automatically_and_other_config_is_refused(tiny_split, tmp_path, run_main):
    run = tmp_path / "run"
    train_in_process(run_main, "seg_train.py", tiny_split, run, "--stop-after", "3")
    config_before = (run / "config.yaml").read_text()
    refused = train_in_process(run_main, "seg_train.py", tiny_split, run, "--set", "loss.cls=2.0", check=False)
    assert refused.returncode == 2 and "different config" in refused.stderr and "loss.cls" in refused.stderr
    assert "Traceback" not in refused.stderr and (run / "config.yaml").read_text() == config_before
    again = train_in_process(run_main, "seg_train.py", tiny_split, run)
    assert "from step 3" in again.stderr
    forced = train_in_process(run_main, "seg_train.py", tiny_split, run, "--force", "--iters", "3")
    assert "resuming" not in forced.stderr and [r[0] for r in read_metrics(run)[1:]] == ["3"]


def test_errors_are_one_line(tiny_split, tmp_path, run_main, assert_one_line_error):
    """The entry scripts' error paths, in-process (``run_cli`` around ``cli.main``, as the scripts' ``__main__``)."""
    def train_error(task, split, out, *extra):
        script = "seg_train.py" if task == "seg" else "cls_train.py"
        return train_in_process(run_main, script, split, out, *extra, check=False)

    assert_one_line_error(train_error("seg", tmp_path / "missing", tmp_path / "r1"), "not found")
    assert_one_line_error(train_error("seg", tiny_split, tmp_path / "r2", "--set", "train.nope=1"), "train.nope")
    assert_one_line_error(train_error("seg", tiny_split, tmp_path / "r3", "--set", "train.iters=x"), "train.iters")
    if not torch.cuda.is_available():
        assert_one_line_error(train_error("cls", tiny_split, tmp_path / "r4", "--device", "cuda"), "CUDA")
    broken = tmp_path / "broken"
    shutil.copytree(tiny_split, broken)
    (broken / "train" / "4" / "labeled" / "labeled.txt").write_text("")
    assert_one_line_error(train_error("seg", broken, tmp_path / "r5"), "labeled.txt")
    (broken / "test" / "labeled.txt").unlink()
    assert_one_line_error(train_error("seg", broken, tmp_path / "r6"), "test")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert_one_line_error(train_error("seg", tiny_split, foreign), "not a Hermes run")
    assert (foreign / "notes.txt").read_text() == "mine"


def test_non_finite_loss_stops_and_keeps_last_checkpoint(tiny_split, tmp_path):
    from Code.engine.config import load_config
    from Code.engine.trainer import Trainer
    from Code.errors import UserError

    config = load_config(SMOKE, overrides=[{"data": {"split": str(tiny_split), "labels": 4}}])
    trainer = Trainer(config, tmp_path / "run", torch.device("cpu"))
    assert trainer.fit(stop_after=3)["stopped"]
    with torch.no_grad():
        next(trainer.model.parameters()).fill_(float("nan"))
    with pytest.raises(UserError, match=r"non-finite loss term '\w+' at step 3"):
        trainer.fit()
    assert torch.load(tmp_path / "run" / "checkpoints" / "latest.pt", weights_only=False)["step"] == 3


@pytest.mark.slow
def test_torchrun_two_processes(tiny_split, tmp_path):
    run = tmp_path / "ddp"
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--standalone", "--nproc_per_node=2", str(ROOT / "Code" / "seg_train.py"), "--config", SMOKE,
           "--data", str(tiny_split), "--labels", "4", "--out", str(run), "--set", "train.iters=4", "eval.every=2"]
    proc = subprocess.run(cmd, cwd=ROOT, env=dict(ENV, OMP_NUM_THREADS="1"), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [r[0] for r in read_metrics(run)[1:]] == ["2", "4"]
    state = torch.load(run / "checkpoints" / "latest.pt", weights_only=False)
    assert len(state["rng"]) == 2 and not any(k.startswith("module.") for k in state["model"])
    from Code.inference.loading import load_model_from_checkpoint
    model, config, step = load_model_from_checkpoint(run / "checkpoints" / "latest.pt")
    assert config["task"] == "seg" and step == 4 and not model.training
