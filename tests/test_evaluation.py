"""Per-image metrics against hand-computed values, batch-size independence, conventions, best-model choice."""
import math

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from Code.engine.selection import best_score
from Code.inference.metrics import (METRIC_KEYS, RECORD_KEYS, dice_from_counts, iou_from_counts, pixel_counts,
                                    summarize_metrics)
from Code.inference.prediction import evaluate_model


class SignModel(torch.nn.Module):
    """Predicts lesion where channel 0 of the input is > 0; malignant logit = mean of the input."""

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x):
        s = x[:, :1] + 0 * self.dummy
        m = x.mean(dim=(1, 2, 3))
        return {"seg_logits": torch.cat([-s, s], dim=1), "cls_logits": torch.stack([-m, m], dim=1)}


class TinySet(Dataset):
    def __init__(self, preds, masks, labels):
        self.preds, self.masks, self.labels = preds, masks, labels

    def __len__(self):
        return len(self.preds)

    def __getitem__(self, i):
        image = torch.where(self.preds[i] > 0, 1.0, -1.0)[None].float()
        return image, self.masks[i].long(), torch.tensor(self.labels[i]), f"img{i}"


def test_pixel_counts_hand_computed():
    pred = torch.tensor([[[1, 1], [0, 0]], [[0, 0], [0, 0]]])
    target = torch.tensor([[[1, 0], [1, 0]], [[0, 0], [0, 1]]])
    tp, fp, fn, tn = pixel_counts(pred, target)
    assert tp.tolist() == [1, 0] and fp.tolist() == [1, 0] and fn.tolist() == [1, 1] and tn.tolist() == [1, 3]


def test_dice_iou_conventions():
    assert dice_from_counts(1, 1, 1) == pytest.approx(0.5)
    assert iou_from_counts(1, 1, 1) == pytest.approx(1 / 3)
    assert dice_from_counts(0, 0, 0) == 1.0 and iou_from_counts(0, 0, 0) == 1.0  # both empty
    assert dice_from_counts(0, 3, 0) == 0.0 and iou_from_counts(0, 0, 2) == 0.0  # one empty


def _tiny_set():
    g = torch.Generator().manual_seed(0)
    preds = [(torch.rand(8, 8, generator=g) > 0.5).long() for _ in range(5)]
    masks = [(torch.rand(8, 8, generator=g) > 0.6).long() for _ in range(5)]
    preds[3].zero_()
    masks[3].zero_()  # both empty → Dice 1
    masks[4].zero_()  # empty truth, non-empty prediction → Dice 0
    return TinySet(preds, masks, [0, 1, 0, 1, 1])


def test_evaluate_model_records_match_hand_counts():
    data = _tiny_set()
    records = evaluate_model(SignModel(), DataLoader(data, batch_size=2), "cpu")
    assert [r["name"] for r in records] == [f"img{i}" for i in range(5)]
    assert all(tuple(r) == RECORD_KEYS for r in records)
    for i, r in enumerate(records):
        p, m = data.preds[i].bool(), data.masks[i].bool()
        tp, fp, fn = int((p & m).sum()), int((p & ~m).sum()), int((~p & m).sum())
        assert (r["tp"], r["fp"], r["fn"], r["tn"]) == (tp, fp, fn, 64 - tp - fp - fn)
        expected = 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)
        assert r["dice"] == pytest.approx(expected)
        assert r["label"] == data.labels[i]
    assert records[3]["dice"] == 1.0 and records[3]["iou"] == 1.0
    assert records[4]["dice"] == 0.0


def test_batch_size_independence():
    data = _tiny_set()
    runs = [summarize_metrics(evaluate_model(SignModel(), DataLoader(data, batch_size=b), "cpu")) for b in (1, 2, 5)]
    for other in runs[1:]:
        for key in METRIC_KEYS:
            assert other[key] == pytest.approx(runs[0][key], nan_ok=True)


def test_model_mode_restored():
    model = SignModel().train()
    evaluate_model(model, DataLoader(_tiny_set(), batch_size=4), "cpu")
    assert model.training


def _rec(label, pred, prob, tp=0, fp=0, fn=0, dice=1.0, iou=1.0):
    return {"name": "x", "label": label, "pred_class": pred, "prob_malignant": prob, "dice": dice, "iou": iou,
            "tp": tp, "fp": fp, "fn": fn, "tn": 0}


def test_summarize_metrics_hand_computed():
    records = [
        _rec(1, 1, 0.9, tp=3, fp=1, fn=0, dice=6 / 7, iou=3 / 4),   # TP
        _rec(1, 0, 0.4, tp=0, fp=0, fn=2, dice=0.0, iou=0.0),       # FN
        _rec(0, 0, 0.2, tp=1, fp=0, fn=1, dice=2 / 3, iou=1 / 2),   # TN
        _rec(0, 1, 0.6),                                            # FP, both masks empty
        _rec(0, 0, 0.1),                                            # TN
    ]
    m = summarize_metrics(records)
    assert tuple(m) == METRIC_KEYS
    assert m["dice"] == pytest.approx((6 / 7 + 0 + 2 / 3 + 1 + 1) / 5)
    assert m["dice_global"] == pytest.approx(2 * 4 / (2 * 4 + 1 + 3))
    assert m["iou"] == pytest.approx((3 / 4 + 0 + 1 / 2 + 1 + 1) / 5)
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["sensitivity"] == pytest.approx(1 / 2)
    assert m["specificity"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 * 1 / (2 * 1 + 1 + 1))
    # positives {0.9, 0.4}, negatives {0.2, 0.6, 0.1}: pairs won 3 + 2 = 5 of 6
    assert m["auc"] == pytest.approx(5 / 6)


def test_summarize_one_class_gives_nan():
    m = summarize_metrics([_rec(0, 0, 0.1), _rec(0, 1, 0.7)])
    assert math.isnan(m["auc"]) and math.isnan(m["sensitivity"])
    assert m["specificity"] == pytest.approx(0.5) and m["f1"] == 0.0
    with pytest.raises(ValueError):
        summarize_metrics([])


def test_best_score_tie_rule():
    """One rule for both tasks: primary val metric (seg Dice, cls balanced accuracy), then AUC, then the earliest
    step; NaN lowest. Mutations checked: accuracy as the cls primary (the accuracy-only candidate wins); AUC left out
    of the key (the tie goes to the earlier step instead); ``+step`` instead of ``-step`` (a full tie goes to the
    later step); NaN not mapped to -inf (NaN compares False both ways, the max depends on the order)."""
    def pick(candidates, task):  # candidates: [(step, metrics)], compared in a shuffled order
        return max(reversed(candidates), key=lambda c: best_score(c[1], task, c[0]))[0]

    m = lambda **kw: dict({"dice": 0.5, "accuracy": 0.5, "balanced_accuracy": 0.5, "auc": 0.5}, **kw)  # noqa: E731
    assert pick([(1, m(dice=0.7)), (2, m(dice=0.8, auc=0.1))], "seg") == 2          # primary first
    assert pick([(1, m(dice=0.8, auc=0.6)), (2, m(dice=0.8, auc=0.9))], "seg") == 2  # a tie in Dice: AUC decides
    assert pick([(4, m(balanced_accuracy=0.7, auc=0.6)), (2, m(balanced_accuracy=0.7, auc=0.8)),
                 (6, m(balanced_accuracy=0.6, accuracy=0.99, auc=0.99))], "cls") == 2
    assert pick([(3, m()), (6, m()), (9, m())], "cls") == 3 == pick([(3, m()), (6, m())], "seg")  # full tie
    assert pick([(1, m(auc=float("nan"))), (2, m(auc=0.0))], "seg") == 2              # NaN counts lowest
    assert pick([(1, m(dice=float("nan"))), (2, m(dice=0.0))], "seg") == 2
    assert best_score(m(dice=0.8, auc=float("nan")), "seg", 5) == (0.8, -math.inf, -5)
    with pytest.raises(ValueError):
        best_score({}, "det", 0)


def test_report_selection_uses_the_same_tie_rule():
    """``reporting.runs.select_row`` (report.py on runs with test curves) picks as the trainer does. Mutations
    checked: the step's sign flipped in its key (a full tie goes to the later row); accuracy instead of balanced
    accuracy as the cls primary."""
    from Code.reporting.runs import select_row

    def row(step, **val):
        values = dict({"dice": 0.5, "accuracy": 0.5, "balanced_accuracy": 0.5, "auc": 0.5}, **val)
        return dict({"step": float(step)}, **{f"val_{k}": v for k, v in values.items()})

    assert select_row([row(3), row(6), row(9)], "best", "seg")[0]["step"] == 3
    assert select_row([row(3), row(6, auc=0.7), row(9, auc=0.7)], "best", "seg")[0]["step"] == 6
    tied = [row(3, balanced_accuracy=0.6, accuracy=0.9), row(6, balanced_accuracy=0.7, accuracy=0.6)]
    assert select_row(tied, "best", "cls")[0]["step"] == 6
