"""k-NN monitor of a pre-training run: benign/malignant accuracy of a k-nearest-neighbour vote on encoder features.

Features: the global average pool of the encoder's deepest stage, in eval mode, L2-normalised (B×C5). The bank is
a labeled train part (its images and labels; the labels are used only here, never by the objective); the queries
are the split's ``val/`` images. Prediction: majority vote of the k most cosine-similar bank images
(scikit-learn's ``KNeighborsClassifier``). Reported: accuracy and balanced accuracy (mean recall of the two
classes; val keeps the data set's class prior, e.g. BUSI ≈ 3 benign : 1 malignant, where always answering
"benign" already scores 75 % accuracy but 50 % balanced accuracy).
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, balanced_accuracy_score
from sklearn.neighbors import KNeighborsClassifier
from torch.utils.data import DataLoader

from Code.data import SplitDataset

KNN_KEYS = ("knn_accuracy", "knn_balanced_accuracy")


@torch.no_grad()
def encode_part(branch, loader: DataLoader, device: torch.device) -> Tuple[np.ndarray, np.ndarray]:
    """(features N×C5 unit rows, labels N) of every image of ``loader`` (SplitDataset in eval mode)."""
    feats, labels = [], []
    for image, _, label, _ in loader:
        feats.append(F.normalize(branch.features(image.to(device)).float(), dim=1).cpu())
        labels.append(label)
    return torch.cat(feats).numpy(), torch.cat(labels).numpy()


def knn_scores(bank: np.ndarray, bank_labels: np.ndarray, query: np.ndarray, query_labels: np.ndarray,
               k: int) -> Dict[str, float]:
    """Accuracy and balanced accuracy of a k-NN (cosine, majority vote) on ``query`` with the labeled ``bank``."""
    knn = KNeighborsClassifier(n_neighbors=min(k, len(bank)), metric="cosine").fit(bank, bank_labels)
    predicted = knn.predict(query)
    return {"knn_accuracy": float(accuracy_score(query_labels, predicted)),
            "knn_balanced_accuracy": float(balanced_accuracy_score(query_labels, predicted))}


class KnnMonitor:
    """``monitor(branch, device)`` → :func:`knn_scores` of ``bank_dir`` (labeled train part) against ``val_dir``."""

    def __init__(self, bank_dir: Path, val_dir: Path, size: int, in_channels: int, k: int, batch_size: int = 32):
        self.k = k
        self.loaders = [DataLoader(SplitDataset(part, "eval", size=size, in_channels=in_channels),
                                   batch_size=batch_size, shuffle=False, generator=torch.Generator())
                        for part in (bank_dir, val_dir)]  # own generator: the global RNG stream stays untouched

    def __call__(self, branch, device: torch.device) -> Dict[str, float]:
        was_training = branch.training
        branch.eval()
        try:
            (bank, bank_labels), (query, query_labels) = (encode_part(branch, loader, device)
                                                          for loader in self.loaders)
        finally:
            branch.train(was_training)
        return knn_scores(bank, bank_labels, query, query_labels, self.k)
