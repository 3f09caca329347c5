"""make_figures.py label-curve (issue #24 part 2): the figure and its table from constructed simulation folders
(rounds.csv + final_metrics.json with hand-picked values), the val-chosen vs final selection, and refusals."""
import csv
import json

import cv2
import pytest

from helpers import load_script

figures = load_script("make_figures")

# (strategy, seed, labels, run, test Dice at the val-chosen step); accuracy = 1 − Dice; at the final step: Dice / 2.
START0, START1 = "runs/start/supervised_n4_s0", "runs/start/supervised_n4_s1"
SIM_A = [("random", 0, 4, START0, 0.50), ("entropy", 0, 4, START0, 0.50),
         ("random", 1, 4, START1, 0.60), ("entropy", 1, 4, START1, 0.60),
         ("random", 0, 6, "runs/random/supervised_n6_s0", 0.55),
         ("entropy", 0, 6, "runs/entropy/supervised_n6_s0", 0.70),
         ("random", 1, 6, "runs/random/supervised_n6_s1", 0.65),
         ("entropy", 1, 6, "runs/entropy/supervised_n6_s1", 0.80)]
SIM_B = [("random", 0, 4, START0, 0.70), ("random", 0, 6, "runs/random/supervised_n6_s0", 0.75)]  # another draw


IMAGES = [("b1.png", 0), ("b2.png", 0), ("b3.png", 0), ("m1.png", 1), ("m2.png", 1), ("m3.png", 1)]


def _predictions(path, dice):
    """Per-image test predictions: every image's Dice = ``dice``, classes right with p = 0.2 / 0.8."""
    lines = ["image,label,prob_malignant,pred_class,dice,iou"]
    lines += [f"{name},{label},{0.2 + 0.6 * label},{label},{dice},{dice}" for name, label in IMAGES]
    path.write_text("\n".join(lines) + "\n")


def _sim(folder, rows, best=True):
    folder.mkdir()
    with (folder / "rounds.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["strategy", "seed", "round", "labels", "method", "run", "train_seconds", "suggest_seconds"])
        for strategy, seed, labels, run, dice in rows:
            writer.writerow([strategy, seed, (labels - 4) // 2, labels, "supervised", run, 1.0, ""])
            (folder / run).mkdir(parents=True, exist_ok=True)
            chosen = {"dice": dice, "accuracy": 1 - dice, "step": 4}
            final = {"dice": dice / 2, "accuracy": 1 - dice / 2, "step": 6}
            _predictions(folder / run / "test_predictions_best.csv", dice)
            (folder / run / "final_metrics.json").write_text(json.dumps(
                {"test_at_best_val": chosen if best else None, "test_at_final": final,
                 "predictions": {"best": "test_predictions_best.csv", "final": None}}))
    return folder


def _table(path):
    with path.open(newline="") as handle:
        return {(r["metric"], r["strategy"], int(r["labels"])): r for r in csv.DictReader(handle)}


def test_curve_and_table_by_hand(run_main, tmp_path):
    a, b = _sim(tmp_path / "a", SIM_A), _sim(tmp_path / "b", SIM_B)
    out = tmp_path / "fig" / "curve.png"
    result = run_main(figures.main, "label-curve", a, b, "--out", out)
    assert result.returncode == 0, result.stderr
    assert cv2.imread(str(out)).shape[1] > 800
    table = _table(out.with_suffix(".csv"))
    assert len(table) == 2 * 2 * 2
    row = table[("dice", "random", 4)]  # 50, 60 (sim a, seeds 0 and 1), 70 (sim b): mean 60, std 10
    assert (float(row["mean"]), float(row["std"]), float(row["min"]), float(row["max"]), row["n"]) == \
        (60.0, 10.0, 50.0, 70.0, "3")
    row = table[("dice", "entropy", 6)]  # 70, 80: mean 75, std sqrt(50)
    assert float(row["mean"]) == 75.0 and float(row["std"]) == pytest.approx(7.0711, abs=1e-4) and row["n"] == "2"
    assert float(table[("accuracy", "random", 6)]["mean"]) == pytest.approx(100 - (55 + 65 + 75) / 3, abs=1e-4)
    one = run_main(figures.main, "label-curve", b, "--out", tmp_path / "one.png", "--select", "final",
                   "--metric", "dice")
    assert one.returncode == 0, one.stderr
    row = _table(tmp_path / "one.csv")[("dice", "random", 6)]  # final step: 75 / 2; one draw: no std
    assert (float(row["mean"]), row["std"], row["n"]) == (37.5, "", "1")


def test_refusals(run_main, tmp_path, assert_one_line_error):
    """Mutation checked: without the table's prepare_output_file an existing table is overwritten silently."""
    a = _sim(tmp_path / "a", SIM_A)
    assert_one_line_error(run_main(figures.main, "label-curve", tmp_path, "--out", tmp_path / "x.png"),
                          "no rounds.csv in", "simulate_labeling.py")
    no_val = _sim(tmp_path / "no_val", SIM_B, best=False)
    assert_one_line_error(run_main(figures.main, "label-curve", no_val, "--out", tmp_path / "x.png"),
                          "no test_at_best_val", "--select final")
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "x.csv").exists()
    (tmp_path / "t.csv").write_text("my,own,table\n")
    assert_one_line_error(run_main(figures.main, "label-curve", a, "--out", tmp_path / "t.png", "--force"),
                          "t.csv exists and is not a label-curve table")
    assert (tmp_path / "t.csv").read_text() == "my,own,table\n"
    assert run_main(figures.main, "label-curve", a, "--out", tmp_path / "c.png").returncode == 0
    assert_one_line_error(run_main(figures.main, "label-curve", a, "--out", tmp_path / "c.png"), "add --force")
    assert run_main(figures.main, "label-curve", a, "--out", tmp_path / "c.png", "--force").returncode == 0
    assert_one_line_error(run_main(figures.main, "label-curve", a, "--out", a / "rounds.csv"), "an input")


def test_compare_pairs_draws_of_both_sides(run_main, tmp_path, assert_one_line_error):
    """entropy@6 − random@6 for supervised: per draw 70 − 55 and 80 − 65 on every image, so Δ Dice = 15 with the
    degenerate interval [15, 15] ("ahead"); Δ accuracy and AUC = 0 ("within noise"); sim b has random only (the
    draw counts as left out). Mutation checked: pairing the runs by labels alone (ignoring the strategy) gives 0."""
    a, b = _sim(tmp_path / "a", SIM_A), _sim(tmp_path / "b", SIM_B)
    out = tmp_path / "c.png"
    result = run_main(figures.main, "label-curve", a, b, "--out", out, "--compare", "entropy@6", "random@6",
                      "--compare-method", "supervised")
    assert result.returncode == 0, result.stderr
    with (tmp_path / "c_compare.csv").open(newline="") as handle:
        rows = {r["metric"]: r for r in csv.DictReader(handle)}
    dice = rows["dice"]
    assert (float(dice["delta"]), float(dice["low"]), float(dice["high"]), dice["words"]) == (15.0, 15.0, 15.0, "ahead")
    assert (dice["draws"], dice["n_images"], dice["at"]) == ("2 of 3", "6", "best")
    assert float(rows["accuracy"]["delta"]) == 0.0 and rows["auc"]["words"] == "within noise"
    assert "supervised dice: entropy@6 - random@6 = +15.00 [+15.00, +15.00] ahead" in result.stdout
    assert_one_line_error(run_main(figures.main, "label-curve", a, "--out", tmp_path / "d.png", "--compare",
                                   "entropy@6", "random@8", "--compare-method", "supervised"), "no draw has finished")
    assert_one_line_error(run_main(figures.main, "label-curve", a, "--out", tmp_path / "d.png", "--compare",
                                   "entropy", "random@6"), "write STRATEGY@LABELS")
    assert_one_line_error(run_main(figures.main, "label-curve", a, "--out", tmp_path / "d.png", "--select", "final",
                                   "--compare", "entropy@6", "random@6", "--compare-method", "supervised"),
                          "no per-image test predictions (final)")
    assert not (tmp_path / "d.png").exists() and not (tmp_path / "d.csv").exists()
