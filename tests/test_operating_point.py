"""Sensitivity at a specificity chosen on val: the threshold rule by hand (Code/inference/operating_point.py), the
paired sensitivity/specificity differences (Code/reporting/paired_stats.py) and report.py's section on fabricated
runs (Code/reporting/operating_point.py)."""
import csv
import json
import math

import numpy as np
import pytest
import yaml
from helpers import load_script

from Code.inference.operating_point import rates_at, threshold_for_specificity
from Code.reporting.paired_stats import PairedSet, paired_interval

report = load_script("report")


def test_threshold_for_specificity_by_hand():
    """Benign p = 0.1 … 1.0 (10): s* = 0.9 → k = 9 → t = 0.9; 0.85 → k = ⌈8.5⌉ = 9 → 0.9; 0.8 → 0.8. Ties at
    b₍k₎ raise the specificity: benign (0.3, 0.3, 0.3, 0.9), s* = 0.5 → t = 0.3, specificity 3/4. Malignant
    probabilities never move t. Mutations checked: ⌊⌋ instead of ⌈⌉; the malignant images counted; p ≥ t."""
    benign = [i / 10 for i in range(1, 11)]
    labels = [0] * 10 + [1, 1]
    assert threshold_for_specificity(benign + [0.05, 0.95], labels, 0.9) == pytest.approx(0.9)
    assert threshold_for_specificity(benign + [0.05, 0.95], labels, 0.85) == pytest.approx(0.9)
    assert threshold_for_specificity(benign + [0.05, 0.95], labels, 0.8) == pytest.approx(0.8)
    t = threshold_for_specificity([0.3, 0.3, 0.3, 0.9, 0.99], [0, 0, 0, 0, 1], 0.5)
    assert t == pytest.approx(0.3)
    assert rates_at([0.3, 0.3, 0.3, 0.9, 0.99, 0.3], [0, 0, 0, 0, 1, 1], t) == {"sensitivity": 0.5,
                                                                                 "specificity": 0.75}
    assert math.isnan(threshold_for_specificity([0.4], [1], 0.9))
    with pytest.raises(ValueError):
        threshold_for_specificity([0.4], [0], 0.0)


def test_paired_sensitivity_and_specificity_differences():
    """Two malignant and two benign images, one seed: the method calls (1, 1, 0, 1), the baseline (1, 0, 0, 0):
    Δ sensitivity = 1 − 1/2 = +0.5, Δ specificity = 1/2 − 1 = −0.5 (on all images, the interval's Δ)."""
    label = np.array([1, 1, 0, 0])
    zeros = np.zeros((1, 4))
    data = PairedSet(label=label, dice_m=zeros, dice_b=zeros, prob_m=zeros, prob_b=zeros,
                     pred_m=np.array([[1, 1, 0, 1]]), pred_b=np.array([[1, 0, 0, 0]]))
    assert paired_interval(data, "sensitivity").delta == pytest.approx(0.5)
    assert paired_interval(data, "specificity").delta == pytest.approx(-0.5)


def _run(parent, method, seed, val, test):
    """A finished cls run whose val and test per-image CSVs hold ``val`` / ``test``: lists of (label, p)."""
    run = parent / f"{method}_n8_s{seed}"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"seed": seed, "method": method, "task": "cls",
                                                     "data": {"split": None, "labels": 8}}))
    (run / "metrics.csv").write_text("step,val_dice,val_accuracy\n1,0.5,0.5\n")
    metrics = {k: 0.5 for k in ("dice", "dice_global", "iou", "accuracy", "balanced_accuracy", "sensitivity",
                                "specificity", "f1", "auc")}
    (run / "final_metrics.json").write_text(json.dumps({
        "step": 1, "test_at_final": dict(metrics, step=1), "test_at_best_val": dict(metrics, step=1),
        "best_val_step": 1, "val_at_best": metrics, "test_curves": False,
        "predictions": {"final": "test_predictions_best.csv", "best": "test_predictions_best.csv"}}))
    for name, rows in (("val_predictions_best.csv", val), ("test_predictions_best.csv", test)):
        with (run / name).open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["image", "label", "prob_malignant", "pred_class", "dice", "iou"])
            for i, (y, p) in enumerate(rows):
                writer.writerow([f"img{i}.png", y, f"{p:.6f}", int(p > 0.5), "0.5", "0.5"])
    return run


def _table(text, header):
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    out = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        out.append([c.strip() for c in line.strip("|").split("|")])
    return out


def test_report_section_by_hand(tmp_path, capsys):
    """Val benign p = 0.1 … 1.0 → t = 0.9 at s* = 0.9 for supervised; hermes' val benign p = 0.05 … 0.5 → t =
    0.45. Test: 4 malignant (0.95, 0.8, 0.6, 0.3), 4 benign (0.1, 0.5, 0.85, 0.95). supervised at 0.9: sensitivity
    1/4, specificity 3/4; hermes at 0.45: 3/4 and 1/4 → Δ +50 / −50 points. Mutations checked: t chosen on the
    test CSV (val and test swapped; the test CSV read as val)."""
    test = [(1, .95), (1, .8), (1, .6), (1, .3), (0, .1), (0, .5), (0, .85), (0, .95)]
    _run(tmp_path, "supervised", 0, [(0, i / 10) for i in range(1, 11)] + [(1, .99)], test)
    _run(tmp_path, "hermes", 0, [(0, i / 20) for i in range(1, 11)] + [(1, .99)], test)
    assert report.main([str(tmp_path), "--out", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    rows = _table(out, "| method | task | data | labels | n | sensitivity @ val t")
    assert rows == [["supervised", "cls", "phantom", "8", "1", "25.00 (n = 1)", "75.00 (n = 1)", "0.900–0.900"],
                    ["hermes", "cls", "phantom", "8", "1", "75.00 (n = 1)", "25.00 (n = 1)", "0.450–0.450"]]
    paired = _table(out, "| method | task | data | labels | Δ sensitivity")
    assert paired[0][0] == "hermes" and paired[0][4].startswith("+50.00 [") and paired[0][5].startswith("-50.00 [")
    assert report.main([str(tmp_path), "--out", str(tmp_path / "r2"), "--target-specificity", "0.5"]) == 0
    rows = _table(capsys.readouterr().out, "| method | task | data | labels | n | sensitivity @ val t")
    assert rows[0][7] == "0.500–0.500"
    with pytest.raises(report.UserError, match="--target-specificity 1.5"):
        report.main([str(tmp_path), "--out", str(tmp_path / "r3"), "--target-specificity", "1.5"])
