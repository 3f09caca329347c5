"""Run-folder rules (Code/engine/run_folder.py): --force, --resume PATH, unstarted runs, metrics.csv after a kill,
--iters on an existing run, SIGINT. Most tests use fake run folders (a config.yaml and a tiny checkpoint), so that
no training is needed; one end-to-end test drives seg_train.py through a failed start, Ctrl-C and two --iters changes.
"""
import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from Code.common.checkpoint import save_checkpoint
from Code.engine.config import dump_config, load_config
from Code.engine.run_folder import REPO_ROOT, prepare_run_dir
from Code.errors import UserError
from helpers import SUBPROCESS_ENV as ENV

SMOKE = REPO_ROOT / "configs" / "smoke.yaml"


def smoke_config(split, **train):
    config = load_config(str(SMOKE), overrides=[{"data": {"split": str(split), "labels": 4}, "train": train}])
    config["task"] = "seg"
    return config


def fake_run(folder: Path, config, step: int, rows=(3, 6)) -> Path:
    """A run folder as the trainer leaves it: config.yaml, checkpoints/latest.pt at ``step``, metrics.csv rows."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(dump_config(config))
    save_checkpoint(folder / "checkpoints" / "latest.pt", {"model": {}, "config": config, "step": step})
    with (folder / "metrics.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([["step", "dice"], *[[r, 0.5] for r in rows]])
    return folder


def metric_steps(folder: Path):
    with (folder / "metrics.csv").open() as handle:
        return [row[0] for row in list(csv.reader(handle))[1:]]


def test_force_refuses_a_folder_holding_the_data_the_repository_or_other_files(tmp_path):
    """Defect 1. Mutation checked: dropping the check_force_target call lets --force delete the split."""
    project = tmp_path / "project"
    split = project / "split"
    split.mkdir(parents=True)
    (split / "split.json").write_text("{}")
    config = smoke_config(split)
    fake_run(project, config, 3)
    with pytest.raises(UserError, match="contains the --data split"):
        prepare_run_dir(project, config, None, force=True)
    assert (split / "split.json").read_text() == "{}"
    with pytest.raises(UserError, match="is the repository"):
        prepare_run_dir(REPO_ROOT, smoke_config(tmp_path / "elsewhere"), None, force=True)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("mine")
    with pytest.raises(UserError, match="not a Hermes run folder"):
        prepare_run_dir(mine, config, None, force=True)
    assert (mine / "thesis.tex").read_text() == "mine"
    run = fake_run(tmp_path / "run", config, 3)  # a real run folder is still replaced
    plan = prepare_run_dir(run, config, None, force=True)
    assert plan.checkpoint is None and not (run / "checkpoints").exists()


def test_force_refuses_another_scripts_run_and_the_encoder_weights(tmp_path):
    """The output rule (Code/outputs.py) for run folders: --force replaces only a run of the same entry script and
    never one holding the encoder weights it starts from. Mutations checked: the task comparison dropped lets
    seg_train.py --force delete a cls run; encoder_weights left out of the inputs lets it delete the weights."""
    config = smoke_config(tmp_path / "split")
    cls_run = fake_run(tmp_path / "cls_run", dict(config, task="cls"), 3)
    with pytest.raises(UserError, match="holds a run of cls_train.py"):
        prepare_run_dir(cls_run, config, None, force=True)
    assert (cls_run / "checkpoints" / "latest.pt").is_file()
    run = fake_run(tmp_path / "run", config, 3)
    (run / "encoder.pth").write_bytes(b"weights")
    config["model"]["encoder_weights"] = str(run / "encoder.pth")
    with pytest.raises(UserError, match="contains the encoder weights"):
        prepare_run_dir(run, config, None, force=True)
    assert (run / "encoder.pth").read_bytes() == b"weights"


def test_resume_path_follows_the_folder_rules(tmp_path):
    """Defect 2 and §3. Mutation checked: without the 'already holds another run' refusal, run B's config.yaml
    is rewritten with run A's while its best.pt and metrics.csv stay (the test's byte comparison fails)."""
    config_a = smoke_config(tmp_path / "split", iters=6)
    config_b = smoke_config(tmp_path / "split", iters=9)
    run_a, run_b = fake_run(tmp_path / "a", config_a, 6), fake_run(tmp_path / "b", config_b, 9, rows=(3, 6, 9))
    before = {p.name: p.read_bytes() for p in (run_b / "config.yaml", run_b / "checkpoints" / "latest.pt")}
    with pytest.raises(UserError, match="already holds another run"):
        prepare_run_dir(run_b, config_b, str(run_a / "checkpoints" / "latest.pt"), force=False)
    assert {p.name: p.read_bytes() for p in (run_b / "config.yaml", run_b / "checkpoints" / "latest.pt")} == before
    fork = tmp_path / "fork"
    plan = prepare_run_dir(fork, config_b, str(run_a / "checkpoints" / "latest.pt"), force=False, explicit=set())
    assert plan.fork and plan.checkpoint == run_a / "checkpoints" / "latest.pt"
    assert plan.config["train"]["iters"] == 6 and yaml.safe_load((fork / "config.yaml").read_text()) == plan.config
    with pytest.raises(UserError, match=r"loss\.cls.*drop those flags"):  # a contradicting flag is never ignored
        asked = smoke_config(tmp_path / "split", iters=6)
        asked["loss"]["cls"] = 2.0
        prepare_run_dir(tmp_path / "fork2", asked, str(run_a / "checkpoints" / "latest.pt"), False, {"loss.cls"})
    own = prepare_run_dir(run_a, config_a, str(run_a / "checkpoints" / "latest.pt"), force=False)
    assert not own.fork and own.checkpoint == run_a / "checkpoints" / "latest.pt"


def test_resume_from_a_bad_file_is_a_one_line_error(tmp_path, phantom_split, run_script, assert_one_line_error):
    """Defect 3. Mutation checked: torch.load instead of load_checkpoint gives an UnpicklingError traceback."""
    good = tmp_path / "good.pt"
    save_checkpoint(good, {"model": {}, "config": smoke_config(phantom_split), "step": 3})
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:100])
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    for path, message in ((foreign, "not a Hermes checkpoint"), (text, "cannot read checkpoint")):
        with pytest.raises(UserError, match=message):
            prepare_run_dir(tmp_path / f"out_{path.stem}", smoke_config(phantom_split), str(path), force=False)
    result = run_script("Code/seg_train.py", "--config", SMOKE, "--data", phantom_split, "--labels", "4",
                        "--out", tmp_path / "r", "--resume", truncated)
    assert_one_line_error(result, "cannot read checkpoint", str(truncated))


def test_rows_written_after_the_checkpoint_are_dropped_on_resume(tmp_path):
    """Defect 5 (a kill between the metrics.csv row and the checkpoint). Mutation checked: without
    truncate_metrics the resumed run keeps row 6 and would append a second one."""
    config = smoke_config(tmp_path / "split")
    run = fake_run(tmp_path / "run", config, step=3, rows=(3, 6))
    plan = prepare_run_dir(run, config, None, force=False)
    assert plan.checkpoint == run / "checkpoints" / "latest.pt"
    assert metric_steps(run) == ["3"]


def test_tensorboard_events_after_the_checkpoint_are_purged_on_resume(tmp_path):
    """Defect 5, TensorBoard side. Mutation checked: without purge_after the resumed run's step 4 appears twice."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from Code.engine.logging import RunLogger

    killed = RunLogger(tmp_path, ["dice"])
    for step in range(1, 7):
        killed.scalars({"total": float(step)}, step)
    killed.close()
    resumed = RunLogger(tmp_path, ["dice"])
    resumed.purge_after(3)
    resumed.scalars({"total": 40.0}, 4)
    resumed.close()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("loss/total")] == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 40.0)]


def test_a_run_without_checkpoint_is_not_protected_and_out_may_not_be_a_file(tmp_path):
    """Defects 7 and 9. Mutations checked: treating 'unstarted' as 'run' refuses the corrected config ('different
    config'); without the is-a-file check mkdir raises FileExistsError."""
    failed = tmp_path / "failed"
    failed.mkdir()
    (failed / "config.yaml").write_text(dump_config(smoke_config(tmp_path / "typo")))
    (failed / "metrics.csv").write_text("step,dice\n")
    (failed / "my_notes.txt").write_text("kept")
    fixed = smoke_config(tmp_path / "split")
    plan = prepare_run_dir(failed, fixed, None, force=False, explicit={"*"})
    assert plan.checkpoint is None and yaml.safe_load((failed / "config.yaml").read_text()) == fixed
    assert not (failed / "metrics.csv").exists() and (failed / "my_notes.txt").read_text() == "kept"
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(UserError, match="is an existing file"):
        prepare_run_dir(a_file, fixed, None, force=False)


def test_iters_extends_or_shortens_but_never_below_the_current_step(tmp_path):
    """§3. Mutation checked: dropping the train.iters exception refuses the extension as 'a different config'."""
    config = smoke_config(tmp_path / "split", iters=6)
    run = fake_run(tmp_path / "run", config, step=6)
    ends = ("final_metrics.json", "test_predictions_final.csv", "test_predictions_best.csv")
    for name in ends:
        (run / name).write_text("{}")
    with pytest.raises(UserError, match="already at step 6"):
        prepare_run_dir(run, smoke_config(tmp_path / "split", iters=4), None, False, {"train.iters"})
    longer = smoke_config(tmp_path / "split", iters=10)
    with pytest.raises(UserError, match="different config"):  # iters from a changed default, not a flag
        prepare_run_dir(run, longer, None, False, set())
    plan = prepare_run_dir(run, longer, None, False, {"train.iters"})
    assert plan.config["train"]["iters"] == 10 and plan.checkpoint == run / "checkpoints" / "latest.pt"
    assert any("stretched to 10 iterations from step 6" in n and "0.000 → 0.438" in n for n in plan.notes)
    assert not any((run / name).exists() for name in ends)  # stale once the run goes on: test is scored at its end
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["iters"] == 10


def _train(split, out, *extra):
    cmd = [sys.executable, str(REPO_ROOT / "Code" / "seg_train.py"), "--config", str(SMOKE), "--data", str(split),
           "--labels", "4", "--out", str(out), *map(str, extra)]
    return subprocess.run(cmd, cwd=REPO_ROOT, env=ENV, capture_output=True, text=True, timeout=600)


def wait_until_training(proc: subprocess.Popen) -> None:
    """Read the trainer's stderr up to its "run …" line (the loop has started), then let it take a few steps."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if line.startswith("run ") or not line:
            break
    time.sleep(3)


def test_failed_start_then_ctrl_c_then_iters_end_to_end(phantom_split, tmp_path):
    """Defects 6 and 7 and §3 through seg_train.py (extending a finished run: the unit test above). Mutations checked: without the signal handler Ctrl-C leaves no
    latest.pt ('error: interrupted'); without the 'unstarted' rule the corrected command is refused."""
    run = tmp_path / "run"
    bad = _train(tmp_path / "missing_split", run, "--iters", "400")
    assert bad.returncode == 2 and "not found" in bad.stderr and (run / "config.yaml").is_file()
    cmd = [sys.executable, str(REPO_ROOT / "Code" / "seg_train.py"), "--config", str(SMOKE), "--data",
           str(phantom_split), "--labels", "4", "--out", str(run), "--iters", "400"]
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as in a terminal
    wait_until_training(proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-2000:]
    step = torch.load(run / "checkpoints" / "latest.pt", weights_only=False)["step"]
    assert 0 < step < 400 and f"stopped at step {step}" in out and "--resume auto" in out
    shorter = _train(phantom_split, run, "--iters", step + 1)
    assert shorter.returncode == 0, shorter.stderr[-2000:]
    assert f"shortening {run} from 400 to {step + 1} iterations at step {step}" in shorter.stderr
    state = torch.load(run / "checkpoints" / "latest.pt", weights_only=False)
    assert state["seg_optimizer"]["param_groups"][0]["lr"] == 0.0  # the schedule now ends at the new last step
    assert f"test metrics at the final step ({step + 1})" in shorter.stdout and metric_steps(run)[-1] == str(step + 1)
    refused = _train(phantom_split, run, "--iters", step)
    assert refused.returncode == 2 and f"already at step {step + 1}" in refused.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_group_signal_with_loader_workers_saves(phantom_split, tmp_path, sig):
    """A Ctrl-C in a terminal (or ``kill -- -PGID``) signals the DataLoader workers too: the run must still save
    latest.pt and print how to continue. Mutation checked: without ``worker_init_fn=isolate_worker`` the SIGTERM
    case dies on "DataLoader worker ... is killed by signal: Terminated" (exit 1, no mid-run latest.pt); PyTorch's
    workers already swallow SIGINT, so that case guards the terminal path against a regression. The workers' own
    life cycle: tests/test_loader_workers.py."""
    run = tmp_path / "run"
    cmd = [sys.executable, str(REPO_ROOT / "Code" / "seg_train.py"), "--config", str(SMOKE), "--data",
           str(phantom_split), "--labels", "4", "--out", str(run), "--iters", "400", "--set", "data.num_workers=1"]
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True,  # its own process group, like a terminal's foreground job
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    wait_until_training(proc)
    os.killpg(proc.pid, sig)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-2000:]  # "stopped on request", whichever signal
    assert "exited unexpectedly" not in err and "killed by signal" not in err
    step = torch.load(run / "checkpoints" / "latest.pt", weights_only=False)["step"]
    assert 0 < step < 400 and f"stopped at step {step}" in out


def test_messages_name_the_script_every_key_and_a_fitting_hint(tmp_path):
    """Issue 21 (messages). Mutations checked: the old ``{task}_train.py`` wording ('pretrain_train.py'); the key
    list cut at 4 without a count; the fork hint suggesting "another --out" when a new --out was given."""
    config = smoke_config(tmp_path / "split")
    pretrain_ckpt = tmp_path / "pre.pt"
    save_checkpoint(pretrain_ckpt, {"model": {}, "config": dict(config, task="pretrain"), "step": 2})
    with pytest.raises(UserError, match=r"checkpoint of pretrain\.py, not of seg_train\.py"):
        prepare_run_dir(tmp_path / "new", config, str(pretrain_ckpt), force=False)

    run = fake_run(tmp_path / "run", config, step=3)
    changed = smoke_config(tmp_path / "split")
    keys = []
    for section in ("contrast", "loss"):  # every number of two sections differs
        for key, value in changed[section].items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                changed[section][key] = value + 1
                keys.append(f"{section}.{key}")
    keys.sort()
    assert len(keys) > 8
    with pytest.raises(UserError) as refused:
        prepare_run_dir(run, changed, None, False, set(keys))
    message = str(refused.value)
    assert all(k in message for k in keys[:8]) and keys[8] not in message
    assert f"and {len(keys) - 8} more" in message

    other_method = dict(smoke_config(tmp_path / "split"), method="fixmatch")
    with pytest.raises(UserError) as refused:
        prepare_run_dir(tmp_path / "fork", other_method, str(run / "checkpoints" / "latest.pt"), False, {"method"})
    message = str(refused.value)
    assert "method (saved 'hermes', asked 'fixmatch')" in message
    assert "another --out" not in message and "leave out --resume" in message
    assert not (tmp_path / "fork").exists()
