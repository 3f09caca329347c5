"""val_compare.py on fabricated runs: hand-computed val means, paired Δ per seed, the best row and the best
baseline, and never a test number."""
import json

import pytest
import yaml
from helpers import load_script

val_compare = load_script("val_compare")
TEST_SENTINEL = 0.123456  # every test metric of every run: must never appear in the output


def make_run(parent, method, seed, val, task="seg", finished=True, settings=None, with_val=True):
    """A finished run folder whose ``final_metrics.json`` holds ``val`` (metric: value) as ``val_at_best``; every
    unspecified val metric is 0.5 and every test metric is TEST_SENTINEL."""
    run = parent / f"{method}_s{seed}{'_' + '_'.join(settings) if settings else ''}"
    run.mkdir(parents=True)
    config = {"seed": seed, "method": method, "task": task, "data": {"split": None, "labels": 8}}
    for key, value in (settings or {}).items():
        section, leaf = key.split(".")
        config.setdefault(section, {})[leaf] = value
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    (run / "metrics.csv").write_text("step,val_dice\n1,0.5\n")
    keys = ("dice", "dice_global", "iou", "accuracy", "balanced_accuracy", "sensitivity", "specificity", "f1", "auc")
    test = {k: TEST_SENTINEL for k in keys}
    record = {"step": 2, "test_at_final": dict(test, step=2), "test_at_best_val": dict(test, step=1),
              "val_at_final": dict(test), "best_val_step": 1}
    if with_val:
        record["val_at_best"] = {k: val.get(k, 0.5) for k in keys}
    if finished:
        (run / "final_metrics.json").write_text(json.dumps(record))
    return run


def _rows(text, header_start):
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def test_means_pairs_and_best_rows_by_hand(tmp_path, capsys):
    """supervised val Dice .50/.60/.70 (mean 60.00); fixmatch .56/.58/.69 (mean 61.00, Δ +6/−2/−1 → +1.00, 1/3);
    hermes .62/.66/.68 (mean 65.33, Δ +12/+6/−2 → +5.33, 2/3). Best row: hermes; best baseline: fixmatch. Mutations
    checked: reading test_at_best_val (the sentinel shows up), Δ reversed (signs flip), best by the first metric
    of the table instead of the task's primary."""
    for seed, (s, f, h) in enumerate([(.50, .56, .62), (.60, .58, .66), (.70, .69, .68)]):
        make_run(tmp_path, "supervised", seed, {"dice": s, "accuracy": .9})
        make_run(tmp_path, "fixmatch", seed, {"dice": f, "accuracy": .1})
        make_run(tmp_path, "hermes", seed, {"dice": h, "accuracy": .2})
    make_run(tmp_path, "hermes", 3, {"dice": .99}, finished=False)
    assert val_compare.main([str(tmp_path), "--baseline", "supervised", "--metrics", "accuracy", "dice"]) == 0
    out, err = capsys.readouterr()
    assert "12.35" not in out and "0.123" not in out
    table = _rows(out, "| row | n |")
    assert table == [["supervised", "3", "90.00", "60.00", "0: 50.00, 1: 60.00, 2: 70.00"],
                     ["fixmatch", "3", "10.00", "61.00", "0: 56.00, 1: 58.00, 2: 69.00"],
                     ["hermes", "3", "20.00", "65.33", "0: 62.00, 1: 66.00, 2: 68.00"]]
    assert "- best row on val: **hermes**" in out
    assert "- best row on val other than hermes (the best baseline): **fixmatch**" in out
    deltas = _rows(out, "| row | Δ accuracy")
    assert deltas[0][0] == "fixmatch" and deltas[0][2] == "+1.00 (1/3; +6.00, -2.00, -1.00)"
    assert deltas[1][0] == "hermes" and deltas[1][2] == "+5.33 (2/3; +12.00, +6.00, -2.00)"
    assert "skipping unfinished run" in err and "hermes_s3" in err


def test_cls_rows_choose_by_balanced_accuracy_then_auc(tmp_path, capsys):
    """Two cls rows tied in mean val balanced accuracy: the one with the higher AUC is best, whatever the accuracy
    and Dice. Mutation checked: choosing cls rows by Dice.
    Settings that differ split one method into two rows, named by the setting."""
    for seed in (0, 1):
        make_run(tmp_path, "fixmatch", seed, {"balanced_accuracy": .7, "auc": .8, "accuracy": .9, "dice": .9},
                 task="cls")
        make_run(tmp_path, "fixmatch", seed, {"balanced_accuracy": .7, "auc": .85, "accuracy": .5}, task="cls",
                 settings={"ssl.prior_aware": True})
    assert val_compare.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "## cls" in out and "Choice by mean val balanced_accuracy, ties by auc" in out
    assert "- best row on val: **fixmatch (ssl.prior_aware=True" in out


def test_bad_inputs_are_one_line_errors(tmp_path):
    make_run(tmp_path / "a", "supervised", 0, {"dice": .5})
    with pytest.raises(val_compare.UserError, match="--baseline 'hermes' is not a row"):
        val_compare.main([str(tmp_path / "a"), "--baseline", "hermes"])
    with pytest.raises(val_compare.UserError, match="--metrics recall: not a metric"):
        val_compare.main([str(tmp_path / "a"), "--metrics", "recall"])
    make_run(tmp_path / "b", "supervised", 0, {}, with_val=False)
    with pytest.raises(val_compare.UserError, match="no val_at_best"):
        val_compare.main([str(tmp_path / "b")])
    make_run(tmp_path / "c", "supervised", 0, {}, finished=False)
    with pytest.raises(val_compare.UserError, match="no finished runs"):
        val_compare.main([str(tmp_path / "c")])


def test_out_follows_the_output_rule(tmp_path, capsys):
    """--out is written once, replaced only with --force and only when val_compare.py wrote it; never a run file."""
    run = make_run(tmp_path / "runs", "supervised", 0, {"dice": .5})
    with pytest.raises(val_compare.UserError, match="an input of this command"):
        val_compare.main([str(tmp_path / "runs"), "--out", str(run / "notes.md")])
    out = tmp_path / "val.md"
    assert val_compare.main([str(tmp_path / "runs"), "--out", str(out)]) == 0
    assert out.read_text().startswith("# Val comparison (1 runs)")
    with pytest.raises(val_compare.UserError, match="exists \\(add --force"):
        val_compare.main([str(tmp_path / "runs"), "--out", str(out)])
    assert val_compare.main([str(tmp_path / "runs"), "--out", str(out), "--force"]) == 0
    mine = tmp_path / "mine.md"
    mine.write_text("my notes\n")
    with pytest.raises(val_compare.UserError, match="not a val comparison"):
        val_compare.main([str(tmp_path / "runs"), "--out", str(mine), "--force"])
    assert mine.read_text() == "my notes\n"


def test_streams_decision_rule_by_hand(tmp_path, capsys):
    """results/hermes_streams/decide.py applies PROTOCOL.md's rule: A (ΔDice +2/+2/−1 → +1.00, 2/3, ΔAUC −1)
    passes; B (ΔDice +3/−1/−1 → +0.33) fails on the mean although one draw gains most; C (ΔDice +3/+3/+3, ΔAUC
    −3) fails on AUC although it gains most Dice. A second call never replaces the decision. Mutation checked: ≥ 2 draws higher dropped (a +4.5/−0.5/−0.5 candidate would pass)."""
    import importlib.util
    from pathlib import Path
    spec = importlib.util.spec_from_file_location(
        "decide", Path(__file__).resolve().parents[1] / "results" / "hermes_streams" / "decide.py")
    decide = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(decide)
    for seed, (ref, a, b) in enumerate([(.50, .52, .53), (.60, .62, .59), (.70, .69, .69)]):
        make_run(tmp_path / "ref", "hermes", seed, {"dice": ref, "auc": .80})
        make_run(tmp_path / "runs" / "copy_paste", "hermes", seed, {"dice": a, "auc": .79},
                 settings={"hermes.copy_paste": 1.0})
        make_run(tmp_path / "runs" / "feature_perturbation", "hermes", seed, {"dice": b, "auc": .80},
                 settings={"hermes.feature_perturbation": 0.5})
        make_run(tmp_path / "runs" / "relative_threshold", "hermes", seed, {"dice": ref + .03, "auc": .77},
                 settings={"ssl.class_ratio": "relative"})
    out = tmp_path / "DECISION.md"
    args = [str(tmp_path / "runs"), str(tmp_path / "ref"), "--out", str(out)]
    assert decide.main(args) == 0
    text = out.read_text()
    assert "| A: `hermes.copy_paste=1.0` | +2.00, +2.00, -1.00 | +1.00 | 2/3 | -1.00 | 61.00 / 60.00 | yes |" in text
    assert "| B: `hermes.feature_perturbation=0.5` | +3.00, -1.00, -1.00 | +0.33 | 1/3 | +0.00 |" in text
    assert "| C: `ssl.class_ratio=relative` | +3.00, +3.00, +3.00 | +3.00 | 3/3 | -3.00 | 63.00 / 60.00 | no |" in text
    assert "**Adopted:** A: `hermes.copy_paste=1.0`" in text
    with pytest.raises(decide.UserError, match="the decision is made once"):
        decide.main(args)
    assert decide.judge({0: {"dice": .545, "auc": .8}, 1: {"dice": .595, "auc": .8}, 2: {"dice": .695, "auc": .8}},
                        {0: {"dice": .50, "auc": .8}, 1: {"dice": .60, "auc": .8}, 2: {"dice": .70, "auc": .8}})[0] is False
