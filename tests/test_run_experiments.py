"""run_experiments.py: the grid, skipping finished runs, resuming interrupted ones, failures; no real training."""
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import load_script

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "Code" / "run_experiments.py"


run_experiments = load_script("run_experiments")

FAKE_ENTRY = """
import json, sys
from pathlib import Path
args = sys.argv[1:]
out = Path(args[args.index("--out") + 1])
out.mkdir(parents=True, exist_ok=True)
(out / "argv.json").write_text(json.dumps(args))
if args[args.index("--method") + 1] == "fixmatch":
    sys.exit(3)
(out / "final_metrics.json").write_text("{}")
"""


@pytest.fixture()
def grid(tmp_path):
    config = tmp_path / "exp.yaml"
    config.write_text("train:\n  iters: 2\n")
    return config, tmp_path / "runs"


def saved_run(argv, method, labels, seed, finished, **changes):
    """A run folder as the entry leaves it: the config.yaml the grid's command resolves (with ``changes``, dotted
    keys), plus final_metrics.json when ``finished``."""
    import yaml

    args = run_experiments.parse_args(argv)
    folder = run_experiments.run_dir(Path(args.out), method, labels, seed)
    config = run_experiments.wanted_config(args, run_experiments.build_command(args, method, labels, seed, folder,
                                                                               False))
    for key, value in changes.items():
        section, name = key.split("__")
        config[section][name] = value
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    if finished:
        (folder / "final_metrics.json").write_text("{}")
    return folder


def test_dry_run_lists_grid_and_skips_finished(grid):
    config, out = grid
    argv = ["--config", str(config), "--methods", "supervised", "hermes", "--labels", "8", "--seeds", "0", "1",
            "--out", str(out), "--iters", "5", "--set", "eval.every=2", "log.every=1", "--set", "train.amp=false"]
    saved_run(argv, "supervised", 8, 0, finished=True)
    saved_run(argv, "hermes", 8, 1, finished=False)  # interrupted
    cmd = [sys.executable, str(SCRIPT), *argv, "--dry-run"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = [l for l in proc.stdout.splitlines() if l.startswith("[")]
    assert len(lines) == 4
    assert "supervised_n8_s0: skip (finished)" in lines[0]
    assert "supervised_n8_s1: would run:" in lines[1] and "seg_train.py" in lines[1]
    assert "--method supervised --labels 8 --seed 1" in lines[1]
    assert "--iters 5 --set eval.every=2 log.every=1 train.amp=false" in lines[1]
    assert "--resume" not in lines[1]
    assert "hermes_n8_s0: would run:" in lines[2]
    assert "hermes_n8_s1: would resume:" in lines[3] and lines[3].endswith("--resume auto")
    assert not (out / "supervised_n8_s1").exists()  # nothing was run


def test_bad_arguments_are_one_line_errors(grid, tmp_path, run_main):
    config, out = grid
    for extra in (["--methods", "mixmatch"], ["--config", str(tmp_path / "missing.yaml")]):
        args = ["--config", str(config), "--labels", "8", "--out", str(out), *extra]
        proc = run_main(run_experiments.main, *args)
        assert proc.returncode == 2 and proc.stderr.startswith("error: ") and len(proc.stderr.splitlines()) == 1


def test_runs_sequentially_and_reports_failures(grid, tmp_path, monkeypatch, capsys):
    config, out = grid
    entry = tmp_path / "fake_train.py"
    entry.write_text(FAKE_ENTRY)
    monkeypatch.setitem(run_experiments.ENTRIES, "seg", entry)
    argv = ["--config", str(config), "--methods", "supervised", "fixmatch", "hermes", "--labels", "8", "--seeds",
            "0", "1", "--out", str(out)]
    saved_run(argv, "supervised", 8, 0, finished=True)
    saved_run(argv, "hermes", 8, 1, finished=False)
    code = run_experiments.main(argv)
    text = capsys.readouterr().out
    assert code == 1  # fixmatch fails, the rest still ran
    assert text.count("FAILED") == 2 and "1 already finished, 3 ran, 2 failed" in text
    for name in ("supervised_n8_s1", "hermes_n8_s0", "hermes_n8_s1"):
        assert (out / name / "final_metrics.json").is_file()
    assert "--resume" in (out / "hermes_n8_s1" / "argv.json").read_text()
    assert "--resume" not in (out / "hermes_n8_s0" / "argv.json").read_text()
    assert not (out / "supervised_n8_s0" / "argv.json").exists()  # finished run skipped


def test_finished_runs_with_another_config_are_not_skipped(grid, tmp_path, monkeypatch, capsys):
    """Defect 4. Mutation checked: with run_state looking only at final_metrics.json, both changed runs are
    'skip (finished)' and the report would show their stale results."""
    config, out = grid
    entry = tmp_path / "fake_train.py"
    entry.write_text(FAKE_ENTRY)
    monkeypatch.setitem(run_experiments.ENTRIES, "seg", entry)
    argv = ["--config", str(config), "--methods", "supervised", "--labels", "8", "--seeds", "0", "1", "2",
            "--out", str(out), "--set", "loss.cls=0.5"]
    saved_run(argv, "supervised", 8, 0, finished=True)                   # same config: skipped
    saved_run(argv, "supervised", 8, 1, finished=True, train__iters=1)   # shorter: extended by the entry
    saved_run(argv, "supervised", 8, 2, finished=True, loss__cls=1.0)    # other --set: not run
    code = run_experiments.main(argv)
    lines = [l for l in capsys.readouterr().out.splitlines() if l.startswith("[")]
    assert code == 1
    assert "supervised_n8_s0: skip (finished)" in lines[0]
    assert "supervised_n8_s1: extend:" in lines[1] and "--resume" not in lines[1]
    assert "supervised_n8_s2: NOT RUN" in lines[3] and "differs in: loss.cls" in lines[3]
    assert (out / "supervised_n8_s1" / "argv.json").is_file() and not (out / "supervised_n8_s2" / "argv.json").exists()


def test_a_changed_run_names_every_differing_key_or_counts_the_rest(grid, tmp_path, monkeypatch, capsys):
    """#21: the message listed 6 keys and hid the rest. Mutation checked: ``diff[:6]`` without the count."""
    config, out = grid
    argv = ["--config", str(config), "--methods", "supervised", "--labels", "8", "--seeds", "0", "--out", str(out)]
    weights = {f"loss__{k}": 0.123 for k in ("seg", "cls", "seg_unsup", "pixel_contrast", "cls_unsup",
                                                "image_contrast", "consistency")}
    saved_run(argv, "supervised", 8, 0, finished=True, contrast__temperature=0.5, contrast__image_bank_size=8,
              contrast__pixel_bank_size=8, **weights)  # 10 differing keys
    assert run_experiments.main(argv + ["--dry-run"]) == 1
    line = next(l for l in capsys.readouterr().out.splitlines() if "NOT RUN" in l)
    assert "loss.pixel_contrast" in line and line.count(", ") == 8 and "and 2 more" in line


SLOW_ENTRY = """
import signal, sys, time
from pathlib import Path
args = sys.argv[1:]
out = Path(args[args.index("--out") + 1])
out.mkdir(parents=True, exist_ok=True)
def save_and_stop(signum, frame):
    (out / "saved").write_text(signal.Signals(signum).name)
    sys.exit(130)
signal.signal(signal.SIGTERM, save_and_stop)
(out / "started").write_text("")
time.sleep(120)
"""


def test_ctrl_c_lets_the_running_training_save_and_stops_the_grid(grid, tmp_path, monkeypatch, capsys):
    """Ctrl-C on the grid: the training gets SIGTERM (its save-and-stop signal) and is waited for; the next runs
    do not start. Mutation checked: ``subprocess.call`` (Python SIGKILLs the child on KeyboardInterrupt, so
    nothing is saved, and the grid dies with a traceback)."""
    import os
    import signal
    import threading
    import time

    config, out = grid
    entry = tmp_path / "slow_train.py"
    entry.write_text(SLOW_ENTRY)
    monkeypatch.setitem(run_experiments.ENTRIES, "seg", entry)

    def interrupt_when_started():
        deadline = time.monotonic() + 60
        while not (out / "supervised_n8_s0" / "started").is_file() and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt_when_started, daemon=True).start()
    code = run_experiments.main(["--config", str(config), "--methods", "supervised", "--labels", "8",
                                 "--seeds", "0", "1", "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 130
    assert (out / "supervised_n8_s0" / "saved").read_text() == "SIGTERM"
    assert "stopped by SIGINT" in text and "run the same command again" in text
    assert not (out / "supervised_n8_s1").exists()


def _draw_split(folder: Path, draw, test="a.png a.png 0\n", val="v.png v.png 1\n") -> Path:
    """A split folder as data_split.py --draw-seed leaves it, as far as --draws reads it."""
    import json

    for part, text in (("test", test), ("val", val)):
        (folder / part).mkdir(parents=True)
        (folder / part / "labeled.txt").write_text(text)
    (folder / "split.json").write_text(json.dumps({"seed": 0, "draw_seed": draw}))
    return folder


def test_draws_run_each_draw_on_its_split_with_its_seed(grid, tmp_path, capsys):
    """Mutation checked: ``{draw}`` not replaced per run (every run gets draw 0's folder) → fails."""
    config, out = grid
    for draw in (0, 1, 2):
        _draw_split(tmp_path / f"busi_d{draw}", draw)
    argv = ["--config", str(config), "--methods", "supervised", "--labels", "8", "--draws", "0", "1", "2",
            "--data", str(tmp_path / "busi_d{draw}"), "--out", str(out), "--dry-run"]
    assert run_experiments.main(argv) == 0
    lines = [l for l in capsys.readouterr().out.splitlines() if l.startswith("[")]
    assert len(lines) == 3
    for draw, line in zip((0, 1, 2), lines):
        assert f"supervised_n8_s{draw}: would run:" in line
        assert f"--seed {draw} " in line and f"--data {tmp_path / f'busi_d{draw}'}" in line


def test_draws_refuse_mismatched_splits(grid, tmp_path, run_main, assert_one_line_error):
    """Mutations checked: the draw_seed check removed, the test/val comparison removed → the matching case runs."""
    config, out = grid
    base = ["--config", str(config), "--labels", "8", "--out", str(out), "--dry-run"]
    _draw_split(tmp_path / "d0", 0)
    _draw_split(tmp_path / "d1", 0)  # made with the wrong --draw-seed
    _draw_split(tmp_path / "e0", 0)
    _draw_split(tmp_path / "e1", 1, test="b.png b.png 0\n")  # another test list
    _draw_split(tmp_path / "f0", 0)
    _draw_split(tmp_path / "f1", 1, val="w.png w.png 1\n")  # another val list
    cases = [(["--draws", "0", "1", "--data", str(tmp_path / "d0")], ("--draws", "{draw}")),
             (["--draws", "0", "1", "--data", str(tmp_path / "d{draw}")], (str(tmp_path / "d1"), "draw_seed 0")),
             (["--draws", "0", "1", "--data", str(tmp_path / "e{draw}")], (str(tmp_path / "e1"), "test or val")),
             (["--draws", "0", "1", "--data", str(tmp_path / "f{draw}")], (str(tmp_path / "f1"), "test or val")),
             (["--draws", "0", "3", "--data", str(tmp_path / "f{draw}")], (str(tmp_path / "f3"), "not found"))]
    for extra, fragments in cases:
        assert_one_line_error(run_main(run_experiments.main, *base, *extra), *fragments)
    both = run_main(run_experiments.main, *base, "--draws", "0", "--seeds", "0", "--data", str(tmp_path / "d0"))
    assert both.returncode == 2 and "not allowed with" in both.stderr
