"""Figures shared by evaluate.py, reporting/trust.py and predict.py: the image/overlay panel, confusion matrix and
ROC plots, and PNG writing with safe file names."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional

import cv2
import numpy as np

from Code.data import CLASS_NAMES
from Code.errors import UserError

TRUTH_BGR, PRED_BGR, BOTH_BGR = (0, 0, 255), (0, 200, 0), (0, 255, 255)  # red, green, yellow
MIN_PANEL_WIDTH = 448


def overlay_panel(gray: np.ndarray, pred: np.ndarray, truth: Optional[np.ndarray] = None,
                  caption: str = "") -> np.ndarray:
    """The paper's figure style: the image (left) beside the overlay (right), with a caption bar on top.

    ``gray``: H×W uint8; ``pred`` and ``truth``: H×W {0, 1}. Ground truth only = red, prediction only = green,
    both = yellow (filled at 45 % and outlined). Returns a BGR uint8 image (H + bar)×2W, enlarged by an integer
    factor (nearest) when 2W < 448 px so that the caption stays readable.
    """
    factor = -(-MIN_PANEL_WIDTH // (2 * gray.shape[1]))  # enlarge small images so that the caption fits
    if factor > 1:
        up = lambda a: cv2.resize(a.astype(np.uint8), None, fx=factor, fy=factor,  # noqa: E731
                                  interpolation=cv2.INTER_NEAREST)
        gray, pred, truth = up(gray), up(pred), None if truth is None else up(truth)
    base = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    legend = [("truth", TRUTH_BGR), ("prediction", PRED_BGR), ("overlap", BOTH_BGR)] if truth is not None \
        else [("prediction", PRED_BGR)]
    pred = pred.astype(bool)
    truth = np.zeros_like(pred) if truth is None else truth.astype(bool)
    colour = np.zeros_like(base)
    colour[truth & ~pred], colour[pred & ~truth], colour[pred & truth] = TRUTH_BGR, PRED_BGR, BOTH_BGR
    region = truth | pred
    over = base.copy()
    over[region] = (0.55 * base[region] + 0.45 * colour[region]).astype(np.uint8)
    for mask, bgr in ((truth, TRUTH_BGR), (pred, PRED_BGR)):
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(over, contours, -1, bgr, 1)
    panel = np.concatenate([base, over], axis=1)
    scale = max(0.35, min(1.0, panel.shape[1] / 1200))
    bar = np.zeros((int(40 * scale) + 8, panel.shape[1], 3), np.uint8)
    cv2.putText(bar, caption, (4, int(16 * scale) + 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1,
                cv2.LINE_AA)
    x = 4
    for text, bgr in legend:
        cv2.putText(bar, text, (x, int(36 * scale) + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, bgr, 1, cv2.LINE_AA)
        x += cv2.getTextSize(text + "  ", cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0]
    return np.concatenate([bar, panel], axis=0)


def write_png(path: Path, image: np.ndarray) -> None:
    """Write a PNG (imencode + tofile, so that any file name works)."""
    ok, data = cv2.imencode(".png", image)
    if not ok:
        raise UserError(f"cannot encode {path}")
    data.tofile(str(path))


def safe_stem(name: str) -> str:
    """A file stem for an image name (folders and odd characters replaced)."""
    stem = Path(name).stem or "image"
    return "".join(c if c.isalnum() or c in "-_.()" else "_" for c in stem)


def plot_confusion_and_roc(records: List[Dict[str, Any]], out: Path) -> None:
    """``confusion_matrix.png`` (counts and row percentages) and ``roc.png`` (malignant = positive)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import confusion_matrix, roc_auc_score, roc_curve

    labels = np.array([r["label"] for r in records])
    preds = np.array([r["pred_class"] for r in records])
    probs = np.array([r["prob_malignant"] for r in records])
    cm = confusion_matrix(labels, preds, labels=[0, 1])
    fig, ax = plt.subplots(figsize=(4, 3.6))
    ax.imshow(cm, cmap="Blues")
    for (i, j), count in np.ndenumerate(cm):
        share = 100.0 * count / max(1, cm[i].sum())
        ax.text(j, i, f"{count}\n{share:.1f}%", ha="center", va="center",
                color="white" if count > cm.max() / 2 else "black")
    ax.set_xticks([0, 1], CLASS_NAMES)
    ax.set_yticks([0, 1], CLASS_NAMES)
    ax.set(xlabel="predicted", ylabel="true", title=f"Confusion matrix (n={len(records)})")
    fig.tight_layout()
    fig.savefig(out / "confusion_matrix.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(4, 4))
    if len(np.unique(labels)) == 2:
        fpr, tpr, _ = roc_curve(labels, probs)
        ax.plot(fpr, tpr, label=f"AUC = {roc_auc_score(labels, probs):.3f}")
        ax.legend(loc="lower right")
    else:
        ax.text(0.5, 0.5, "ROC undefined:\nonly one class present", ha="center", va="center")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
    ax.set(xlabel="false positive rate (1 − specificity)", ylabel="true positive rate (sensitivity)",
           title="ROC, malignant vs benign", xlim=(0, 1), ylim=(0, 1.01))
    fig.tight_layout()
    fig.savefig(out / "roc.png", dpi=120)
    plt.close(fig)
