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
    out = tmp_path / "runs"
    (out / "supervised_n8_s0").mkdir(parents=True)
    (out / "supervised_n8_s0" / "final_metrics.json").write_text("{}")
    (out / "hermes_n8_s1" / "checkpoints").mkdir(parents=True)  # interrupted run
    return config, out


def test_dry_run_lists_grid_and_skips_finished(grid):
    config, out = grid
    cmd = [sys.executable, str(SCRIPT), "--config", str(config), "--methods", "supervised", "hermes",
           "--labels", "8", "--seeds", "0", "1", "--out", str(out), "--iters", "5", "--set", "eval.every=2",
           "log.every=1", "--set", "train.amp=false",
           "--dry-run"]
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
    code = run_experiments.main(["--config", str(config), "--methods", "supervised", "fixmatch", "hermes",
                                 "--labels", "8", "--seeds", "0", "1", "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 1  # fixmatch fails, the rest still ran
    assert text.count("FAILED") == 2 and "1 already finished, 3 ran, 2 failed" in text
    for name in ("supervised_n8_s1", "hermes_n8_s0", "hermes_n8_s1"):
        assert (out / name / "final_metrics.json").is_file()
    assert "--resume" in (out / "hermes_n8_s1" / "argv.json").read_text()
    assert "--resume" not in (out / "hermes_n8_s0" / "argv.json").read_text()
    assert not (out / "supervised_n8_s0" / "argv.json").exists()  # finished run skipped
