"""Paired bootstrap intervals and McNemar's exact test (Code/reporting/paired_stats.py) on cases with known answers,
and their place in report.py: columns of the paired-gain table, report_intervals.csv, draws/test-curves captions."""
import csv
import json

import numpy as np
import pytest
import yaml
from helpers import load_script
from scipy.stats import binomtest
from sklearn.metrics import roc_auc_score

from Code.reporting.paired_stats import Interval, PairedSet, mcnemar, paired_interval, paired_intervals, rank_auc

report = load_script("report")


def paired(label, dice_m, dice_b, prob_m, prob_b):
    """A PairedSet; predicted class = prob > 0.5; 1-D inputs are one seed."""
    arrs = [np.atleast_2d(np.asarray(a, dtype=float)) for a in (dice_m, dice_b, prob_m, prob_b)]
    return PairedSet(np.asarray(label), *arrs[:2], *arrs[2:], (arrs[2] > .5).astype(int), (arrs[3] > .5).astype(int))


def test_constant_dice_shift_gives_a_point_interval():
    """Method = baseline + 0.05, 0.1, 0.15 Dice on every image of seeds 0, 1, 2: Δ (mean over seeds) and both ends
    of the interval are 0.1, "ahead", bold. Mutations checked: seed 0's Δ alone (0.05); baseline images resampled
    independently of the method's (an interval around 0.1, not a point)."""
    rng = np.random.default_rng(0)
    label = np.array([0] * 12 + [1] * 8)
    base = rng.uniform(0.2, 0.8, (3, 20))
    prob = rng.random((3, 20))
    iv = paired_interval(paired(label, base + np.array([[0.05], [0.1], [0.15]]), base, prob, prob), "dice")
    assert iv.delta == pytest.approx(0.1, abs=1e-9)
    assert iv.low == pytest.approx(0.1, abs=1e-9) and iv.high == pytest.approx(0.1, abs=1e-9)
    assert iv.words == "ahead" and iv.cell() == "**+10.00 [+10.00, +10.00]** ahead"


def test_identical_predictions_are_within_noise():
    rng = np.random.default_rng(1)
    label = np.array([0, 1] * 15)
    dice, prob = rng.random((2, 30)), rng.random((2, 30))
    for metric, iv in paired_intervals(paired(label, dice, dice, prob, prob)).items():
        assert (iv.delta, iv.low, iv.high) == (0.0, 0.0, 0.0), metric
        assert iv.words == "within noise" and "**" not in iv.cell()


def test_a_clear_gain_is_ahead_and_its_reverse_behind():
    """The method right on 45 of 60 images where the baseline is right on 15: accuracy Δ = +0.5 with an interval
    far from 0; swapping the rows gives the mirror image."""
    label = np.array([0] * 30 + [1] * 30)
    good = np.where(label == 1, 0.9, 0.1)
    good[::4] = 1 - good[::4]  # 15 wrong
    bad = 1 - good
    ahead = paired_interval(paired(label, good, good, good, bad), "accuracy")
    behind = paired_interval(paired(label, good, good, bad, good), "accuracy")
    assert ahead.delta == pytest.approx(0.5) and 0 < ahead.low < 0.5 < ahead.high
    assert (behind.delta, behind.low, behind.high) == pytest.approx((-0.5, -ahead.high, -ahead.low))
    assert ahead.words == "ahead" and behind.words == "behind" and behind.cell().startswith("**-50.00")


def test_an_interval_containing_zero_is_never_bold():
    """Mutation checked: bolding every cell (`excludes_zero` always True) fails here."""
    for low, high in ((-0.01, 0.02), (0.0, 0.03), (-0.02, 0.0)):
        cell = Interval(0.005, low, high).cell()
        assert "**" not in cell and cell.endswith("within noise")
    assert Interval(0.01, 0.001, 0.02).cell().startswith("**")
    assert Interval(float("nan"), float("nan"), float("nan")).words == "n/a"


def test_rank_auc_matches_sklearn_with_ties_and_is_nan_with_one_class():
    rng = np.random.default_rng(2)
    label = rng.integers(0, 2, 50)
    prob = np.round(rng.random(50), 1)  # many ties
    assert rank_auc(prob, label) == pytest.approx(roc_auc_score(label, prob))
    assert np.isnan(rank_auc(prob, np.zeros(50, int)))


def test_resampling_within_each_class_keeps_auc_defined():
    """3 malignant images of 20: an unstratified resample lacks them with probability (17/20)^20 ≈ 4 %, and its NaN
    would void the AUC interval. Mutation checked: one stratum of all images gives a NaN interval."""
    rng = np.random.default_rng(3)
    label = np.array([0] * 17 + [1] * 3)
    iv = paired_interval(paired(label, rng.random(20), rng.random(20), rng.random(20), rng.random(20)), "auc")
    assert np.isfinite([iv.low, iv.high]).all() and iv.low <= iv.delta <= iv.high


def test_mcnemar_exact_p():
    """The method right on 35 images where the baseline is wrong, wrong on 5 where it is right: 30 more of 40."""
    label = np.zeros(100, int)
    pred_m, pred_b = np.zeros(100, int), np.zeros(100, int)
    pred_b[:35] = 1      # b: method right, baseline wrong
    pred_m[35:40] = 1    # c: the reverse
    pred_m[90:], pred_b[90:] = 1, 1  # both wrong: not counted
    b, c, p = mcnemar(label, pred_m, pred_b)
    assert (b, c) == (35, 5) and p == binomtest(35, 40, 0.5).pvalue and p < 1e-5
    assert mcnemar(label, pred_m, pred_m) == (0, 0, 1.0)


# --- report.py ---------------------------------------------------------------------------------------------------

def make_run(root, method, seed, dice, split=None, images=None, predictions=True, curves=False):
    """A finished seg run with one evaluation row and per-image CSVs: ``dice`` = (val-chosen, final) per-image Dice
    lists; images benign except every third; predicted class right except on image 0."""
    run = root / f"{method}_s{seed}"
    run.mkdir(parents=True)
    config = {"seed": seed, "method": method, "task": "seg", "data": {"split": split, "labels": 8},
              "eval": {"select": "best", "test_curves": curves}}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    cols = ["dice", "accuracy", "auc"]
    (run / "metrics.csv").write_text("step," + ",".join(cols + [f"val_{c}" for c in cols]) + "\n1" + ",0.5" * 6 + "\n")
    doc = {"test_curves": curves}
    if predictions:
        doc["predictions"] = {"best": "test_predictions_best.csv", "final": "test_predictions_final.csv"}
        for which, values in zip(("best", "final"), dice):
            with (run / f"test_predictions_{which}.csv").open("w", newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow(["image", "label", "prob_malignant", "pred_class", "dice", "iou"])
                for i, v in enumerate(values):
                    name = (images or [f"img{k}.png" for k in range(len(values))])[i]
                    label = int(i % 3 == 0)
                    pred = 1 - label if i == 0 else label
                    writer.writerow([name, label, 0.3 + 0.4 * pred, pred, v, v])
    (run / "final_metrics.json").write_text(json.dumps(doc))
    return run


def _row(text, title, method, at):
    block = text.split(f"**{title}**")[1].split("\n\n")[1]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in block.splitlines()]
    return rows[0], next(r for r in rows if r[0] == method and r[4] == at)


def test_report_adds_intervals_mcnemar_and_csv(tmp_path, capsys):
    """Hermes = supervised + 0.1 Dice at the val-chosen step and equal at the final step, classes identical.
    Mutation checked: the final-step row reading the `best` CSVs reports +10.00 there too."""
    base = [0.5, 0.6, 0.7, 0.4, 0.8, 0.55]
    for seed in (0, 1):
        make_run(tmp_path, "supervised", seed, (base, base))
        make_run(tmp_path, "hermes", seed, ([v + 0.1 for v in base], base))
    assert report.main([str(tmp_path), "--out", str(tmp_path / "r")]) == 0
    text = capsys.readouterr().out
    header, val = _row(text, "Paired gain over supervised-only", "hermes", "val-chosen step")
    _, final = _row(text, "Paired gain over supervised-only", "hermes", "final step")
    assert header[9:] == ["dice Δ [95 % CI]", "accuracy Δ [95 % CI]", "balanced_accuracy Δ [95 % CI]",
                          "auc Δ [95 % CI]", "McNemar p per seed (b/c)"]
    assert val[9:] == ["**+10.00 [+10.00, +10.00]** ahead", *["+0.00 [+0.00, +0.00] within noise"] * 3,
                       "s0 1 (0/0); s1 1 (0/0)"]
    assert final[9] == "+0.00 [+0.00, +0.00] within noise"
    assert "percentile interval, 2000 resamples, seed 0" in text and "over seeds (one labeled draw)" in text
    with (tmp_path / "r" / "report_intervals.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    dice = next(r for r in rows if r["test_at"] == "val" and r["metric"] == "dice")
    assert (dice["method"], dice["baseline"], dice["seeds"], dice["n_images"]) == ("hermes", "supervised", "0 1", "6")
    assert float(dice["ci_low"]) == pytest.approx(10.0) and dice["words"] == "ahead"
    assert next(r for r in rows if r["metric"] == "accuracy")["mcnemar_p"] == "s0:1;s1:1"


def test_report_without_predictions_and_mismatched_images(tmp_path, capsys):
    """Older runs (no per-image CSVs) say so and never fail; runs of one seed that scored different test images
    are refused in one line naming both files, as are a CSV without its columns and fewer than 2000 resamples."""
    old = tmp_path / "old"
    for method in ("supervised", "hermes"):
        make_run(old, method, 0, None, predictions=False)
    assert report.main([str(old)]) == 0
    _, val = _row(capsys.readouterr().out, "Paired gain over supervised-only", "hermes", "val-chosen step")
    assert val[9:] == ["no per-image predictions", "–", "–", "–", "–"]
    bad = tmp_path / "bad"
    make_run(bad, "supervised", 0, ([.5, .6, .7], [.5, .6, .7]))
    make_run(bad, "hermes", 0, ([.5, .6, .7], [.5, .6, .7]), images=["img0.png", "img1.png", "other.png"])
    with pytest.raises(report.UserError, match=r"hermes_s0/test_predictions_best.csv and .*supervised_s0/"
                                               r"test_predictions_best.csv score different test images"):
        report.main([str(bad)])
    csv_file = bad / "hermes_s0" / "test_predictions_best.csv"
    csv_file.write_text(csv_file.read_text().replace(",dice,", ",lesion_dice,", 1))
    with pytest.raises(report.UserError, match=f"{csv_file}: missing columns dice "):
        report.main([str(bad)])
    with pytest.raises(report.UserError, match="--resamples 500: at least 2000"):
        report.main([str(old), "--resamples", "500"])


def test_captions_say_draws_and_test_curves(tmp_path, capsys):
    """Seeds trained on distinct labeled draws (``draw_seed`` in each split.json) make a table over draws; runs
    made with test curves are counted. Mutations checked: reading no split.json keeps "over seeds (one labeled draw)";
    without the {draw} template each draw is its own column and row (n = 1)."""
    for seed in (0, 1):
        split = tmp_path / f"busi_d{seed}"  # run_experiments.py --draws 0 1 --data .../busi_d{draw}
        split.mkdir()
        (split / "split.json").write_text(json.dumps({"draw_seed": seed}))
        make_run(tmp_path / "runs", "supervised", seed, ([.5, .6], [.5, .6]), split=str(split))
        make_run(tmp_path / "runs", "hermes", seed, ([.5, .6], [.5, .6]), split=str(split), curves=True)
    assert report.main([str(tmp_path / "runs")]) == 0
    text = capsys.readouterr().out
    assert "**Dice (%)** — test, mean ± sample std (ddof=1) over labeled draws (draw s trained with seed s); " in text
    assert "n = 2 draw(s) per cell" in text and "mean ± sample std over draws (draws ahead / draws)" in text
    assert "| hermes | 50.00 ± 0.00 |" in text  # one row and column, n = 2: both draws
    header, val = _row(text, "Paired gain over supervised-only", "hermes", "val-chosen step")
    assert header[-1] == "McNemar p per draw (b/c)" and val[-1] == "d0 1 (0/0); d1 1 (0/0)"
    assert text.count("2 of 4 runs were made with test curves (`eval.test_curves: true`)") >= 2
