"""evaluate.py --calibrate / --calibration and predict.py --calibration end to end on the tiny phantom split:
temperature and review thresholds fitted on val/, calibration metrics, review table, risk–coverage, entropy maps."""
import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from Code.inference.calibration import calibration_metrics, calibration_path, rescale_probs
from Code.common.checkpoint import save_checkpoint
from Code.engine.config import load_config
from Code.inference.uncertainty import review_flags
from Code.errors import UserError
from helpers import load_script, smoke_model_with_decisions

pytestmark = pytest.mark.usefixtures("single_thread")
ROOT = Path(__file__).resolve().parents[1]
evaluate, predict = load_script("evaluate"), load_script("predict")


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def split_and_checkpoint(phantom_split, tmp_path_factory):
    """A split with the phantom split's test/ and val/ (without its split.json), a split without val/, and the
    smoke model's checkpoint."""
    root = tmp_path_factory.mktemp("trust")
    shutil.copytree(phantom_split / "test", root / "split" / "test")
    shutil.copytree(phantom_split / "val", root / "split" / "val")
    shutil.copytree(phantom_split / "test", root / "no_val" / "test")
    config = load_config(ROOT / "configs" / "smoke.yaml")
    checkpoint = root / "run" / "checkpoints" / "best.pt"
    save_checkpoint(checkpoint, {"model": smoke_model_with_decisions(config).state_dict(), "config": config,
                                 "step": 6})
    return root, checkpoint


@pytest.fixture(scope="module")
def calibrated(split_and_checkpoint):
    """evaluate.py --calibrate on split/test (fitting on split/val), a plain evaluation for comparison, and the
    calibrated evaluation of split/val itself (the values the thresholds were chosen from)."""
    root, checkpoint = split_and_checkpoint
    test = root / "split" / "test"
    assert evaluate.main(["--checkpoint", str(checkpoint), "--data", str(test), "--device", "cpu", "--calibrate",
                          "--out", str(root / "eval_cal"), "--batch-size", "4"]) == 0
    assert evaluate.main(["--checkpoint", str(checkpoint), "--data", str(test), "--device", "cpu",
                          "--out", str(root / "eval_raw"), "--no-overlays"]) == 0
    assert evaluate.main(["--checkpoint", str(checkpoint), "--data", str(root / "split" / "val"), "--device", "cpu",
                          "--calibration", "--out", str(root / "eval_val"), "--no-overlays"]) == 0
    return root, checkpoint


def test_calibrate_without_val_is_refused(split_and_checkpoint, run_script, assert_one_line_error, tmp_path):
    """No SPLIT/val/labeled.txt, or an empty one: a one-line error naming it, nothing written.
    Mutation checked: dropping the empty-list check of validation_part_to_fit (the error then comes after the output
    folder was made) fails."""
    root, checkpoint = split_and_checkpoint
    result = run_script("Code/evaluate.py", "--checkpoint", checkpoint, "--data", root / "no_val" / "test",
                        "--calibrate", "--device", "cpu", "--out", tmp_path / "never")
    assert_one_line_error(result, "--calibrate needs a validation part", str(root / "no_val" / "val"))
    assert not (tmp_path / "never").exists()
    empty = tmp_path / "empty_val"
    for folder in ("image", "mask"):
        (empty / folder).mkdir(parents=True)
    (empty / "labeled.txt").write_text("")
    with pytest.raises(UserError, match="lists no images"):
        evaluate.main(["--checkpoint", str(checkpoint), "--data", str(root / "split" / "test"), "--calibrate",
                       "--val", str(empty), "--device", "cpu", "--out", str(tmp_path / "never")])
    assert not calibration_path(checkpoint).exists() and not (tmp_path / "never").exists()
    with pytest.raises(UserError, match="only used with --calibrate"):
        evaluate.main(["--checkpoint", str(checkpoint), "--data", str(root / "split" / "test"),
                       "--val", str(root / "split" / "val")])


def test_calibration_metrics_and_temperature(calibrated):
    """metrics.json's ECE/Brier are those of per_image.csv's calibrated probabilities, its uncalibrated ECE/Brier
    those of the plain evaluation, and each calibrated probability is the plain one with its logits divided by
    the stored T. Mutations checked: trust_report recovering the uncalibrated probabilities with T instead of
    1/T, and evaluate.py not applying the temperature — each fails."""
    root, checkpoint = calibrated
    document = json.loads(calibration_path(checkpoint).read_text())
    temperature = document["temperature"]
    assert temperature > 0 and document["n_val"] == len(_rows(root / "eval_val" / "per_image.csv"))
    assert set(document["review_thresholds"]) == {"class_entropy", "lesion_entropy"}
    assert document["val_nll_after"] <= document["val_nll_before"] + 1e-9  # T minimises the val NLL
    assert document["val"] == str((root / "split" / "val").resolve())

    metrics = json.loads((root / "eval_cal" / "metrics.json").read_text())
    raw_metrics = json.loads((root / "eval_raw" / "metrics.json").read_text())
    cal_rows, raw_rows = _rows(root / "eval_cal" / "per_image.csv"), _rows(root / "eval_raw" / "per_image.csv")
    labels = [int(r["label"]) for r in cal_rows]
    expected = calibration_metrics([float(r["prob_malignant"]) for r in cal_rows], labels)
    assert metrics["ece"] == pytest.approx(expected["ece"], abs=1e-9)
    assert metrics["brier"] == pytest.approx(expected["brier"], abs=1e-9)
    assert metrics["temperature"] == temperature
    assert metrics["ece_uncalibrated"] == pytest.approx(raw_metrics["ece"], abs=1e-5)
    assert metrics["brier_uncalibrated"] == pytest.approx(raw_metrics["brier"], abs=1e-5)
    assert "temperature" not in raw_metrics
    p_raw = torch.tensor([float(r["prob_malignant"]) for r in raw_rows], dtype=torch.float64)
    p_expected = rescale_probs(torch.stack([1 - p_raw, p_raw], dim=1), temperature)[:, 1]
    p_cal = torch.tensor([float(r["prob_malignant"]) for r in cal_rows], dtype=torch.float64)
    assert float((p_cal - p_expected).abs().max()) < 1e-5
    assert abs(temperature - 1.0) > 1e-3  # the check above would be vacuous at T = 1
    assert [r["pred_class"] for r in cal_rows] == [r["pred_class"] for r in raw_rows]


def test_review_flags_table_and_curves(calibrated):
    """per_image.csv's review flags follow the stored thresholds; review.md counts flagged + unflagged = all;
    risk_coverage.csv ends at the full-set accuracy; one entropy panel per image. Mutation checked: fitting the
    class-entropy threshold on the uncalibrated probabilities (fit_calibration) fails."""
    root, checkpoint = calibrated
    thresholds = json.loads(calibration_path(checkpoint).read_text())["review_thresholds"]
    out = root / "eval_cal"
    rows = _rows(out / "per_image.csv")
    class_entropy = [float(r["class_entropy"]) for r in rows]
    lesion_entropy = [float(r["lesion_entropy"]) for r in rows]
    expected = review_flags(class_entropy, lesion_entropy, thresholds)
    # the thresholds are the 0.9-quantiles of the calibrated class and lesion entropies of the val images
    val_rows = _rows(root / "eval_val" / "per_image.csv")
    assert thresholds["class_entropy"] == pytest.approx(
        np.quantile([float(r["class_entropy"]) for r in val_rows], 0.9), abs=1e-6)
    assert thresholds["lesion_entropy"] == pytest.approx(
        np.nanquantile([float(r["lesion_entropy"]) for r in val_rows], 0.9), abs=1e-6)
    assert 0 < expected.sum() < len(rows)
    assert [int(r["review"]) for r in rows] == expected.astype(int).tolist()
    for r, h in zip(rows, class_entropy):  # binary entropy of the calibrated P(malignant), in bits
        p = float(r["prob_malignant"])
        assert h == pytest.approx(-(p * math.log2(p) + (1 - p) * math.log2(1 - p)), abs=1e-5)
    metrics = json.loads((out / "metrics.json").read_text())
    groups = {g["group"]: g for g in metrics["review"]["groups"]}
    assert groups["flagged"]["n"] == int(expected.sum()) and groups["flagged"]["n"] + groups["unflagged"]["n"] == len(rows)
    assert groups["all"]["accuracy"] == pytest.approx(metrics["accuracy"])
    assert "| flagged |" in (out / "review.md").read_text()
    curve = _rows(out / "risk_coverage.csv")
    assert len(curve) == len(rows) and float(curve[-1]["coverage"]) == 1.0
    assert float(curve[-1]["accuracy (by class entropy)"]) == pytest.approx(metrics["accuracy"])
    assert metrics["risk_coverage"]["1.0"]["dice"] == pytest.approx(metrics["dice"])
    assert len(list((out / "entropy").glob("*.png"))) == len(rows)
    for figure in ("reliability.png", "risk_coverage.png"):
        assert (out / figure).stat().st_size > 1000
    raw = json.loads((root / "eval_raw" / "metrics.json").read_text())
    assert "review" not in raw and not (root / "eval_raw" / "review.md").exists()
    assert {r["review"] for r in _rows(root / "eval_raw" / "per_image.csv")} == {""}


def test_stored_calibration_is_reused_and_not_overwritten(calibrated, tmp_path):
    """Mutation checked: refitting over an existing calibration file without --force fails."""
    root, checkpoint = calibrated
    test = root / "split" / "test"
    before = calibration_path(checkpoint).read_text()
    with pytest.raises(UserError, match="--force"):
        evaluate.main(["--checkpoint", str(checkpoint), "--data", str(test), "--calibrate", "--device", "cpu",
                       "--out", str(tmp_path / "again")])
    assert calibration_path(checkpoint).read_text() == before and not (tmp_path / "again").exists()
    assert evaluate.main(["--checkpoint", str(checkpoint), "--data", str(test), "--calibration", "--device", "cpu",
                          "--out", str(tmp_path / "reuse"), "--no-overlays"]) == 0
    reused = json.loads((tmp_path / "reuse" / "metrics.json").read_text())
    first = json.loads((root / "eval_cal" / "metrics.json").read_text())
    assert reused["ece"] == pytest.approx(first["ece"], abs=1e-9) and reused["review"] == first["review"]


def test_predict_with_calibration(calibrated, tmp_path):
    """predict.py --calibration: calibrated probabilities and a 0/1 review column; without it the column is
    empty and the probabilities are the model's own. Mutation checked: predict.py ignoring the loaded calibration
    fails."""
    root, checkpoint = calibrated
    images = root / "split" / "test" / "image"
    document = json.loads(calibration_path(checkpoint).read_text())
    assert predict.main(["--checkpoint", str(checkpoint), "--images", str(images), "--calibration", "--device",
                         "cpu", "--out", str(tmp_path / "cal"), "--no-overlays"]) == 0
    assert predict.main(["--checkpoint", str(checkpoint), "--images", str(images), "--device", "cpu",
                         "--out", str(tmp_path / "raw"), "--no-overlays"]) == 0
    cal, raw = _rows(tmp_path / "cal" / "predictions.csv"), _rows(tmp_path / "raw" / "predictions.csv")
    assert {r["review"] for r in raw} == {""} and {r["review"] for r in cal} <= {"0", "1"}
    flags = review_flags([float(r["class_entropy"]) for r in cal], [float(r["lesion_entropy"]) for r in cal],
                         document["review_thresholds"])
    assert [int(r["review"]) for r in cal] == flags.astype(int).tolist()
    p_raw = torch.tensor([[float(r["prob_benign"]), float(r["prob_malignant"])] for r in raw], dtype=torch.float64)
    expected = rescale_probs(p_raw, document["temperature"])[:, 1].numpy()
    assert np.abs(np.array([float(r["prob_malignant"]) for r in cal]) - expected).max() < 1e-5


def test_calibrate_uses_the_split_val_part(phantom_split, split_and_checkpoint, tmp_path):
    """With data_split.py's own val/ (the fixture split has one), --calibrate finds SPLIT/val beside --data and
    the number of images it fitted on is that of SPLIT/val/labeled.txt. Mutation checked: looking for val/ inside
    --data instead of beside it fails."""
    _, source = split_and_checkpoint
    checkpoint = tmp_path / "checkpoints" / "best.pt"
    checkpoint.parent.mkdir()
    shutil.copy(source, checkpoint)
    assert evaluate.main(["--checkpoint", str(checkpoint), "--data", str(phantom_split / "test"), "--calibrate",
                          "--device", "cpu", "--no-overlays"]) == 0
    document = json.loads(calibration_path(checkpoint).read_text())
    val_lines = (phantom_split / "val" / "labeled.txt").read_text().split("\n")
    assert document["val"] == str((phantom_split / "val").resolve())
    assert document["n_val"] == len([line for line in val_lines if line.strip()]) > 0
    assert (tmp_path / "eval_test" / "metrics.json").is_file()  # default out: <run folder>/eval_<part>
