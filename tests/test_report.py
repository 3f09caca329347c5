"""report.py on fabricated runs: hand-computed mean ± sample std, best vs final selection, task routing, layout."""
import csv
from pathlib import Path

import pytest
import yaml
from helpers import load_script

ROOT = Path(__file__).resolve().parents[1]
KEYS = ("dice", "dice_global", "iou", "accuracy", "sensitivity", "specificity", "f1", "auc")


report = load_script("report")


def make_run(parent, method, labels, seed, task, rows, select="best", finished=True, train=None, name=None):
    """A run folder; ``rows``: list of (step, {metric: value}) — unspecified metrics are 0.5."""
    run = parent / (name or f"{method}_n{labels}_s{seed}")
    run.mkdir(parents=True)
    config = {"seed": seed, "method": method, "task": task, "data": {"split": None, "labels": labels},
              "eval": {"select": select}, "train": train or {"iters": 200}, "device": "auto"}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    with (run / "metrics.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["step", *KEYS])
        for step, values in rows:
            writer.writerow([step, *(f"{values.get(k, 0.5):.6f}" for k in KEYS)])
    if finished:
        (run / "final_metrics.json").write_text("{}")
    return run


@pytest.fixture()
def runs(tmp_path):
    seg, cls = tmp_path / "seg", tmp_path / "cls"
    d = lambda v: {"dice": v}  # noqa: E731
    make_run(seg, "supervised", 72, 0, "seg", [(100, d(.70)), (200, d(.80)), (300, d(.75))])
    make_run(seg, "supervised", 72, 1, "seg", [(100, d(.60)), (200, d(.65))])
    make_run(seg, "supervised", 72, 2, "seg", [(100, d(.90)), (200, d(.85))])
    make_run(seg, "hermes", 72, 0, "seg", [(100, d(.88))])
    make_run(seg, "hermes", 144, 0, "seg", [(100, d(.91))])
    make_run(seg, "hermes", 144, 1, "seg", [(100, d(.93))])
    make_run(seg, "mean_teacher", 144, 0, "seg", [(100, d(.5))])
    make_run(seg, "fixmatch", 72, 0, "seg", [(100, d(.99))], finished=False)  # unfinished: skipped
    make_run(cls, "supervised", 72, 0, "cls", [(100, {"accuracy": .8, "auc": .7}), (200, {"accuracy": .8, "auc": .9}),
                                              (300, {"accuracy": .7, "auc": .95})])
    make_run(cls, "supervised", 72, 1, "cls", [(100, {"accuracy": .9, "auc": float("nan")}),
                                              (200, {"accuracy": .6, "auc": .8})])
    return tmp_path


def _table(text, title):
    """The body rows of the Markdown table after the caption that starts with ``**title**``."""
    block = text.split(f"**{title}**")[1].split("\n\n")[1]
    return [[c.strip() for c in line.strip("|").split("|")] for line in block.splitlines()]


def test_best_selection_tables(runs, capsys):
    out = runs / "report"
    assert report.main([str(runs / "seg"), str(runs / "cls"), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    dice = _table(text, "Dice (%)")
    assert dice[0] == ["method", "144 labels", "72 labels"]
    # best Dice per run: .80, .65, .90 → mean 78.33, sample std sqrt(((1.667)²+(13.333)²+(11.667)²)/2) = 12.58
    assert dice[2] == ["supervised", "n/a", "78.33 ± 12.58"]
    assert dice[3] == ["hermes", "92.00 ± 1.41 (n=2)", "88.00 (n = 1)"]
    assert dice[4][0] == "mean_teacher"  # unknown methods after the paper's order
    assert "fixmatch" not in text  # unfinished run skipped
    acc = _table(text, "Accuracy (%)")
    # cls runs only; best by (accuracy, AUC with NaN = -inf): .80 (auc .9 beats .7) and .90 → 85 ± 7.07
    assert acc[2] == ["supervised", "85.00 ± 7.07"]
    assert "evaluation per run: best" in text and "from cls runs" in text and "n = 1–3 seed(s)" in text
    assert (out / "report.md").read_text().count("| supervised |") >= 2
    with (out / "report.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    row = next(r for r in rows if r["metric"] == "dice" and r["method"] == "supervised")
    assert float(row["mean"]) == pytest.approx(78.3333, abs=1e-3) and row["n"] == "3" and row["select"] == "best"


def test_final_selection_override_and_plot(runs, capsys, tmp_path):
    plot = tmp_path / "bars.png"
    assert report.main([str(runs), "--select", "final", "--out", str(tmp_path / "r"), "--plot", str(plot)]) == 0
    text = capsys.readouterr().out
    assert _table(text, "Dice (%)")[2] == ["supervised", "n/a", "75.00 ± 10.00"]  # .75, .65, .85
    assert _table(text, "Accuracy (%)")[2] == ["supervised", "65.00 ± 7.07"]    # .70, .60
    assert "evaluation per run: final" in text
    assert plot.is_file() and plot.stat().st_size > 1000
    assert report.main([str(runs / "seg"), "--include-incomplete", "--out", str(tmp_path / "r2")]) == 0
    assert _table(capsys.readouterr().out, "Dice (%)")[3] == ["fixmatch", "n/a", "99.00 (n = 1)"]


def test_config_select_per_run_and_single_run_folder(tmp_path, capsys):
    run = make_run(tmp_path, "hermes", 20, 0, "seg", [(1, {"dice": .9}), (2, {"dice": .7})], select="final")
    assert report.main([str(run)]) == 0  # a run folder itself; the report goes to its parent
    text = capsys.readouterr().out
    assert _table(text, "Dice (%)")[2] == ["hermes", "70.00 (n = 1)"]
    assert (tmp_path / "report.md").is_file()


def test_errors(tmp_path):
    with pytest.raises(report.UserError, match="no runs"):
        report.main([str(tmp_path)])
    with pytest.raises(report.UserError, match="not a run folder"):
        report.main([str(tmp_path / "missing")])


def test_runs_with_different_configs_are_not_pooled_as_seeds(tmp_path, capsys):
    """Defect 11. Mutation checked: without split_config_variants the three runs pool into one row
    '80.00 ± 10.00' (n = 3), although one of them trained twice as long."""
    d = lambda v: {"dice": v}  # noqa: E731
    make_run(tmp_path, "hermes", 72, 0, "seg", [(100, d(.70))])
    make_run(tmp_path, "hermes", 72, 1, "seg", [(100, d(.80))], train={"iters": 200}, name="h_s1")
    make_run(tmp_path, "hermes", 72, 0, "seg", [(100, d(.90))], train={"iters": 400}, name="h_long")
    assert report.main([str(tmp_path), "--out", str(tmp_path / "r")]) == 0
    captured = capsys.readouterr()
    dice = _table(captured.out, "Dice (%)")
    assert dice[2:] == [["hermes (train.iters=200)", "75.00 ± 7.07"], ["hermes (train.iters=400)", "90.00 (n = 1)"]]
    assert "different configs (differ in: train.iters)" in captured.err
