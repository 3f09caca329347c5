"""Figures of calibration and uncertainty: entropy panels, the reliability diagram, risk–coverage curves.

Shared by ``evaluate.py`` and ``predict.py``. Panels are returned as BGR uint8 arrays (written by the caller);
plots are saved as PNG with matplotlib (Agg backend).
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Sequence, Tuple

import cv2
import numpy as np

MIN_PANEL_WIDTH = 448


def entropy_panel(gray: np.ndarray, entropy: np.ndarray, caption: str = "") -> np.ndarray:
    """The image (left) beside its per-pixel entropy map (right, inferno colour map: black = 0, certain;
    yellow-white = 1, uniform), with a caption bar on top. ``gray`` H×W uint8, ``entropy`` H×W in [0, 1].
    Enlarged by an integer factor (nearest) when 2W < 448 px, like the overlays."""
    heat = cv2.applyColorMap(np.clip(entropy * 255.0 + 0.5, 0, 255).astype(np.uint8), cv2.COLORMAP_INFERNO)
    panel = np.concatenate([cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR), heat], axis=1)
    factor = -(-MIN_PANEL_WIDTH // panel.shape[1])
    if factor > 1:
        panel = cv2.resize(panel, None, fx=factor, fy=factor, interpolation=cv2.INTER_NEAREST)
    scale = max(0.35, min(1.0, panel.shape[1] / 1200))
    bar = np.zeros((int(40 * scale) + 8, panel.shape[1], 3), np.uint8)
    cv2.putText(bar, caption, (4, int(16 * scale) + 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1,
                cv2.LINE_AA)
    cv2.putText(bar, "predictive entropy: dark = certain, bright = uncertain", (4, int(36 * scale) + 4),
                cv2.FONT_HERSHEY_SIMPLEX, scale, (80, 180, 255), 1, cv2.LINE_AA)
    return np.concatenate([bar, panel], axis=0)


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_reliability(curves: Dict[str, Dict[str, np.ndarray]], scores: Dict[str, Dict[str, float]],
                     path: Path) -> None:
    """Reliability diagram: for each named curve (``reliability_curve`` output) the share of malignant images
    against the mean predicted P(malignant) per bin, the diagonal of perfect calibration, ECE and Brier in the
    legend, and below it the histogram of bin counts."""
    plt = _pyplot()
    fig, (ax, hist) = plt.subplots(2, 1, figsize=(4.4, 5.2), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfect calibration")
    for (name, curve), marker in zip(curves.items(), "os^"):
        s = scores[name]
        ax.plot(curve["confidence"], curve["frequency"], marker=marker, markersize=4,
                label=f"{name}: ECE {100 * s['ece']:.1f}%, Brier {s['brier']:.3f}")
    first = next(iter(curves.values()))
    hist.hist(first["confidence"], bins=first["edges"], weights=first["count"], color="tab:blue", alpha=0.6)
    ax.set(ylabel="observed share malignant", title=f"Reliability ({first['edges'].size - 1} bins)",
           xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="upper left", fontsize=7)
    hist.set(xlabel="predicted P(malignant)", ylabel="images")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_risk_coverage(curves: Dict[str, Tuple[np.ndarray, np.ndarray]], path: Path,
                       title: str = "Risk–coverage") -> None:
    """Score against coverage for each named ``(coverage, score)`` curve (coverage falls as the least certain
    images are set aside)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.4, 3.6))
    for name, (coverage, score) in curves.items():
        ax.plot(coverage, 100 * np.asarray(score), label=name)
    ax.set(xlabel="coverage (share of images kept, most certain first)", ylabel="score on kept images (%)",
           title=title, xlim=(0, 1.01))
    ax.invert_xaxis()
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def markdown_table(rows: Sequence[Dict[str, object]], columns: Sequence[str]) -> str:
    """A small Markdown table; floats in [0, 1] shown as percentages with two decimals."""
    def cell(value: object) -> str:
        if isinstance(value, float):
            return "n/a" if value != value else f"{100 * value:.2f}"
        return str(value)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"
