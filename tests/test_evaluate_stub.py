"""evaluate.py and predict.py on a stub model whose outputs are known (issue 12, part 5).

The stub marks as lesion every pixel darker than ``LESION_BELOW`` (of 255) and calls an image malignant with
probability ``1 − darkest pixel / 255``. Images are drawn by the tests (a dark disc on a flat background), so the
expected mask, class and probability of every image are known without the code under test; per-image Dice is
recomputed here with numpy from the files. Both scripts run in-process (``main(argv)``) with the checkpoint loader
replaced by the stub.
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from Code.data import denormalize
from helpers import load_script

pytestmark = pytest.mark.usefixtures("single_thread")

SIZE = 64  # the stub's input size (config data.size)
BACKGROUND = 220
LESION_BELOW = 178  # stub: lesion where pixel < 178.5 / 255
STUB_CONFIG = {"data": {"size": SIZE, "in_channels": 1}, "task": "seg"}

evaluate, predict = load_script("evaluate"), load_script("predict")


class StubNet(torch.nn.Module):
    """Known outputs. seg: lesion logit ``40·(0.7 − v)`` with v = the denormalised pixel in [0, 1] (lesion ⇔
    v < 0.7 ⇔ pixel ≤ 178); cls: softmax = ``[1 − p, p]`` with ``p = 1 − min(v)``."""

    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # so that .to(device) / .parameters() work

    def forward(self, x):
        v = denormalize(x)[:, :1]
        lesion = 40.0 * (0.7 - v)
        seg = torch.cat([torch.zeros_like(lesion), lesion], dim=1)
        p = (1.0 - v.amin(dim=(1, 2, 3))).clamp(1e-6, 1 - 1e-6)
        cls = torch.stack([torch.log1p(-p), torch.log(p)], dim=1)
        return {"seg_logits": seg + 0 * self.anchor, "cls_logits": cls}


def expected_prob(lesion_value):
    """p(malignant) of an image whose darkest pixel is ``lesion_value`` (the stub's rule)."""
    return 1.0 - lesion_value / 255.0


@pytest.fixture
def stub_loader(monkeypatch):
    """Both scripts load the stub instead of rebuilding a network from the checkpoint file."""
    def load(path, device="cpu"):
        return StubNet().to(device).eval(), STUB_CONFIG, 11
    monkeypatch.setattr(evaluate, "load_model_from_checkpoint", load)
    monkeypatch.setattr(predict, "load_model_from_checkpoint", load)


def disc(shape, center, radius):
    mask = np.zeros(shape, np.uint8)
    cv2.circle(mask, center, radius, 1, -1)
    return mask


# name: (label, lesion grey level or None, lesion disc (centre, radius), truth disc (centre, radius) or None)
EVAL_IMAGES = {
    "a_benign.png": (0, 150, ((30, 32), 12), ((32, 32), 12)),     # shifted: partial overlap, p = 0.41
    "b_malignant.png": (1, 40, ((32, 30), 14), ((32, 30), 14)),   # exact: Dice 1, p = 0.84
    "c_empty.png": (0, None, None, None),                         # nothing, nothing: Dice 1, p = 0.14
    "d_false_alarm.png": (0, 60, ((20, 20), 6), None),            # lesion predicted, none true: Dice 0, p = 0.76
    "e_missed.png": (1, 190, ((40, 40), 10), ((40, 40), 10)),     # too bright for the stub: Dice 0, p = 0.25
}


@pytest.fixture
def eval_part(tmp_path):
    """A split part ``test/`` of 64×64 images (the stub's input size: the evaluation needs no resizing)."""
    part = tmp_path / "split" / "test"
    (part / "image").mkdir(parents=True)
    (part / "mask").mkdir()
    lines = []
    for name, (label, level, lesion, truth) in EVAL_IMAGES.items():
        image = np.full((SIZE, SIZE), BACKGROUND, np.uint8)
        if lesion is not None:
            image[disc(image.shape, *lesion) > 0] = level
        mask = disc(image.shape, *truth) if truth is not None else np.zeros_like(image)
        cv2.imwrite(str(part / "image" / name), image)
        cv2.imwrite(str(part / "mask" / name), mask * 255)
        lines.append(f"{name} {name} {label}")
    (part / "labeled.txt").write_text("\n".join(lines) + "\n")
    return part


def numpy_dice(pred, truth):
    """Independent per-image Dice: 2|P∩T| / (|P| + |T|), 1 when both are empty."""
    inter, total = np.logical_and(pred, truth).sum(), pred.sum() + truth.sum()
    return 1.0 if total == 0 else 2.0 * inter / total


def test_evaluate_reports_the_stubs_masks_classes_and_probabilities(eval_part, stub_loader, tmp_path):
    """per_image.csv and metrics.json hold what the stub predicts, with Dice recomputed here from the files.

    Mutations checked: ``prob_mal = cls_probs[:, 0]`` in ``prediction._batch_records``; the lesion mask taken as
    ``argmax == 0`` in ``evaluate_model``; Dice computed as ``tp / (tp + fp + fn)``; ``dice`` of an image with
    both masks empty set to 0; records of a batch written in reverse order."""
    checkpoint = tmp_path / "run" / "checkpoints" / "best.pt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"stub")
    out = tmp_path / "eval"
    assert evaluate.main(["--checkpoint", str(checkpoint), "--data", str(eval_part), "--out", str(out),
                          "--device", "cpu", "--batch-size", "2", "--no-overlays"]) == 0
    with (out / "per_image.csv").open(newline="") as handle:
        rows = {r["name"]: r for r in csv.DictReader(handle)}
    assert list(rows) == list(EVAL_IMAGES)
    dices, labels, probs = [], [], []
    for name, (label, level, _, _) in EVAL_IMAGES.items():
        image = cv2.imread(str(eval_part / "image" / name), cv2.IMREAD_GRAYSCALE)
        truth = cv2.imread(str(eval_part / "mask" / name), cv2.IMREAD_GRAYSCALE) > 127
        pred = image <= LESION_BELOW
        dice = numpy_dice(pred, truth)
        prob = expected_prob(level if level is not None else BACKGROUND)
        row = rows[name]
        assert float(row["dice"]) == pytest.approx(dice, abs=1e-9), name
        assert int(row["label"]) == label
        assert float(row["prob_malignant"]) == pytest.approx(prob, abs=1e-5), name
        assert int(row["pred_class"]) == int(prob > 0.5), name
        assert int(row["tp"]) == int((pred & truth).sum()) and int(row["fp"]) == int((pred & ~truth).sum())
        dices.append(dice), labels.append(label), probs.append(prob)
    assert 0.5 < dices[0] < 1.0 and dices[1:] == [1.0, 1.0, 0.0, 0.0]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dice"] == pytest.approx(np.mean(dices), abs=1e-9) and metrics["step"] == 11
    preds = [int(p > 0.5) for p in probs]
    assert metrics["accuracy"] == pytest.approx(np.mean(np.equal(preds, labels)))  # d and e are wrong
    assert metrics["accuracy"] == pytest.approx(0.6)
    # AUC by counting: P(p_malignant > p_benign) over malignant × benign pairs (ties count 1/2)
    pos = [p for p, l in zip(probs, labels) if l == 1]
    neg = [p for p, l in zip(probs, labels) if l == 0]
    auc = np.mean([(a > b) + 0.5 * (a == b) for a in pos for b in neg])
    assert metrics["auc"] == pytest.approx(auc)


# name: (height, width, lesion grey level, disc centre (x, y), radius)
PREDICT_IMAGES = {
    "wide.png": (90, 160, 60, (100, 40), 22),
    "tall.png": (150, 70, 150, (35, 90), 20),
    "large.png": (300, 260, 30, (120, 160), 60),
    "small.png": (48, 40, 120, (20, 24), 12),
}


def test_predict_masks_at_the_original_size_match_the_known_lesion(stub_loader, tmp_path):
    """Masks come back at each image's own size and overlap the drawn lesion (IoU > 0.9); ``pred_class``,
    ``prob_malignant`` and ``lesion_area_px`` are the stub's.

    Mutations checked: the mask written at the model size (no resize back: shape assertion); ``prob_benign`` and
    ``prob_malignant`` swapped in ``predict_files``; the lesion channel taken as ``seg_probs[0:1]`` in
    ``lesion_mask`` (the background comes back: IoU ≈ 0)."""
    images = tmp_path / "images"
    images.mkdir()
    for name, (h, w, level, center, radius) in PREDICT_IMAGES.items():
        image = np.full((h, w), BACKGROUND, np.uint8)
        image[disc((h, w), center, radius) > 0] = level
        cv2.imwrite(str(images / name), image)
    checkpoint = tmp_path / "best.pt"
    checkpoint.write_bytes(b"stub")
    out = tmp_path / "pred"
    assert predict.main(["--checkpoint", str(checkpoint), "--images", str(images), "--out", str(out),
                         "--device", "cpu", "--batch-size", "3", "--no-overlays"]) == 0
    with (out / "predictions.csv").open(newline="") as handle:
        rows = {Path(r["file"]).name: r for r in csv.DictReader(handle)}
    assert set(rows) == set(PREDICT_IMAGES)
    for name, (h, w, level, center, radius) in PREDICT_IMAGES.items():
        row = rows[name]
        mask = cv2.imread(str(out / row["mask"]), cv2.IMREAD_UNCHANGED)
        assert mask.shape == (h, w), name
        pred, truth = mask == 255, disc((h, w), center, radius) > 0
        iou = (pred & truth).sum() / (pred | truth).sum()
        assert iou > 0.9, (name, iou)
        assert int(row["lesion_area_px"]) == int(pred.sum())
        assert math.isclose(float(row["prob_malignant"]), expected_prob(level), abs_tol=1e-5), name
        assert math.isclose(float(row["prob_benign"]), 1 - expected_prob(level), abs_tol=1e-5), name
        assert int(row["pred_class"]) == int(expected_prob(level) > 0.5), name
