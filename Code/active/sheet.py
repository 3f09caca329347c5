"""The contact sheet of ``suggest.py``: the chosen images, best first, each shown three times — the image, its
predicted lesion (green outline on the image) and its per-pixel predictive entropy (inferno: black certain, yellow
uncertain) — with rank, file name and score above. Matplotlib (Agg), at the model's input size."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence, Tuple

import numpy as np

ITEMS_PER_ROW = 4  # images per row of the sheet; each takes three panels


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def contact_sheet(path: Path, maps: Sequence[Tuple[np.ndarray, np.ndarray, np.ndarray]],
                  titles: Sequence[str]) -> None:
    """Write the sheet to ``path`` (PNG): ``maps`` per image ``(gray S×S uint8, mask S×S {0,1}, entropy S×S)``."""
    plt = _pyplot()
    n = len(maps)
    cols = min(n, ITEMS_PER_ROW)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, 3 * cols, figsize=(3 * cols * 1.6, rows * 1.9), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i, ((gray, mask, entropy), title) in enumerate(zip(maps, titles)):
        row, col = divmod(i, cols)
        image_ax, mask_ax, entropy_ax = axes[row, 3 * col:3 * col + 3]
        image_ax.imshow(gray, cmap="gray", vmin=0, vmax=255)
        image_ax.set_title(title, fontsize=6, loc="left")
        mask_ax.imshow(gray, cmap="gray", vmin=0, vmax=255)
        if mask.any():
            mask_ax.contour(mask, levels=[0.5], colors="lime", linewidths=0.8)
        mask_ax.set_title("predicted lesion", fontsize=6)
        entropy_ax.imshow(entropy, cmap="inferno", vmin=0.0, vmax=1.0)
        entropy_ax.set_title("entropy", fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
