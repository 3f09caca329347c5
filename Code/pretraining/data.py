"""What pre-training reads: the split's train images only, as pairs of augmented views; k-NN monitor parts.

Images: every image listed in ``SPLIT/train/N/labeled/labeled.txt`` and ``SPLIT/train/N/unlabeled/unlabeled.txt``
(labeled and unlabeled, including any extra unlabeled pool a split adds to its budgets' unlabeled lists), for the
budget N of ``data.labels``, or for every budget when it is null (the budgets partition the same train images, so
their union is the train set; names are unique within a split, duplicates are listed once). ``SPLIT/val/`` and
``SPLIT/test/`` are never part of it; only the k-NN monitor reads ``val/``, and only to measure.

Views (:class:`TwoViewDataset`): two independent draws of the project's augmentation (Code/data/transforms.py) on
the same image: one affine map each (zoom, shift, small rotation, horizontal flip; never vertical) followed by the
strong photometric ops (brightness/contrast, gamma, depth gain, speckle, blur). Every draw of sample ``index`` in
epoch ``e`` comes from ``default_rng([seed, e, index])``, so a stream is resumable from its batch count alone.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

from Code.data.image_io import load_gray, normalize_to_tensor
from Code.data.lists import read_labeled_list, read_unlabeled_list
from Code.data.transforms import photometric, resolve_aug, sample_geometry, warp_image
from Code.engine.data import has_val
from Code.errors import UserError


@dataclass(frozen=True)
class PretrainSources:
    """``images``: train image files to pre-train on; ``knn_bank``: a labeled train part whose labels the k-NN
    monitor uses; ``val``: ``SPLIT/val`` when it holds a ``labeled.txt`` (else None: no k-NN monitor)."""
    split: Path
    budgets: Tuple[int, ...]
    images: Tuple[Path, ...]
    knn_bank: Path
    val: Optional[Path]


def _budgets(split: Path) -> List[int]:
    budgets = sorted(int(p.name) for p in (split / "train").glob("*") if p.is_dir() and p.name.isdigit())
    if not budgets:
        raise UserError(f"{split} is not a split folder: no train/<N>/ inside (make one with data_split.py)")
    return budgets


def train_images(split: Path, budgets: List[int]) -> List[Path]:
    """The image files listed in the labeled and unlabeled parts of ``train/<N>/`` for N in ``budgets``,
    each name once, sorted by name."""
    found: Dict[str, Path] = {}
    for n in budgets:
        part = split / "train" / str(n)
        labeled_list = part / "labeled" / "labeled.txt"
        if not labeled_list.is_file():
            raise UserError(f"malformed split {split}: missing {labeled_list}")
        for image, _, _ in read_labeled_list(labeled_list):
            found.setdefault(image, part / "labeled" / "image" / image)
        unlabeled_list = part / "unlabeled" / "unlabeled.txt"
        if unlabeled_list.is_file():
            for image in read_unlabeled_list(unlabeled_list):
                found.setdefault(image, part / "unlabeled" / "image" / image)
    for path in found.values():
        if not path.is_file():
            raise UserError(f"{path.parent.parent}: listed image {path.name} not found in image/")
    return [found[name] for name in sorted(found)]


def resolve_pretrain_sources(config: Dict[str, Any]) -> PretrainSources:
    """Where pre-training reads from (see the module docstring); the built-in phantom is made on first use."""
    data = config["data"]
    if data["split"] is None:
        from Code.DataProcess.default_data import ensure_phantom_split

        split = Path(ensure_phantom_split())
    else:
        split = Path(data["split"])
        if not split.is_dir():
            raise UserError(f"data split folder not found: {split} (make one with Code/DataProcess/data_split.py)")
    available = _budgets(split)
    labels = data["labels"]
    if labels is not None:
        if labels not in available:
            raise UserError(f"label budget {labels} not found in {split / 'train'} (has: "
                            f"{', '.join(map(str, available))})")
        budgets = [int(labels)]
    else:
        budgets = available
    images = train_images(split, budgets)
    return PretrainSources(split=split, budgets=tuple(budgets), images=tuple(images),
                           knn_bank=split / "train" / str(min(budgets)) / "labeled",
                           val=split / "val" if has_val(split) else None)


class TwoViewDataset(Dataset):
    """Two augmented views of each image: ``(view_1 (C, S, S), view_2 (C, S, S), index ())``, views float32 and
    normalised, ``index`` the image's int64 position in ``images`` (its id in the key queue).

    Images are decoded once (uint8 in memory, shared with forked workers). ``aug`` is a
    :data:`Code.data.transforms.DEFAULT_AUG` override (validated by :func:`resolve_aug`).
    """

    def __init__(self, images, size: int, in_channels: int = 1, aug: Optional[Mapping] = None, seed: int = 0):
        self.paths = [Path(p) for p in images]
        if not self.paths:
            raise UserError("no train images to pre-train on (the split's train lists are empty)")
        self.size, self.in_channels, self.seed = int(size), int(in_channels), int(seed)
        self.aug = resolve_aug(aug)
        self.epoch = 0
        self._images = [load_gray(p) for p in self.paths]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.paths)

    def view(self, image: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        """One view: geometry, then the strong photometric ops, then normalisation."""
        matrix = sample_geometry(rng, self.aug, image.shape[:2], self.size)
        return normalize_to_tensor(photometric(warp_image(image, matrix, self.size), rng, self.aug),
                                   self.in_channels)

    def __getitem__(self, index: int):
        rng = np.random.default_rng([self.seed, self.epoch, index])
        image = self._images[index]
        return self.view(image, rng), self.view(image, rng), torch.tensor(index, dtype=torch.int64)
