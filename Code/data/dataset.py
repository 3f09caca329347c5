"""One Dataset over a part folder of the split layout, in three modes (docs/design.md, "Data").

- ``"labeled"``  reads ``part_dir/labeled.txt`` (files in ``part_dir/image``, ``part_dir/mask``), weak geometry →
  ``(image (C, S, S) float32, mask (S, S) int64 ∈ {0, 1}, label () int64)``; with ``labeled_strong=True`` also a
  strong view of the image, ``(image, mask, label, strong)``, a photometric draw on the same warped pixels drawn
  after the geometry (so the other three are the same tensors as without it);
- ``"unlabeled"`` reads ``part_dir/unlabeled.txt`` → ``(weak (C, S, S), strong (C, S, S))``: the same warped
  pixels, the strong one photometrically distorted (so pixel (i, j) of both shows the same anatomy); with
  ``truth=True`` and a ``truth.txt`` in the part (diagnostics only) also ``(mask (S, S) warped like weak, label)``
  — only when ``truth.txt`` covers every listed image; a pool with images that have no truth (unlabeled-only CSV
  rows, ``--extra-unlabeled``) carries none, and ``truth_note`` says why (the diagnostics are then off);
  ``strong_views=k`` > 1 gives ``k`` strong views after the weak one, ``(weak, strong_1, …, strong_k[, mask, label])``,
  each an independent photometric draw on the same warped pixels (``n_views`` = 1 + k image tensors); the first
  draws come first from the sample's generator, so ``strong_1`` is the same tensor as with ``k = 1``;
- ``"eval"``     reads ``labeled.txt``, resize only (as :func:`Code.data.image_io.preprocess`) →
  ``(image, mask, label, name)``.

Decoding: with ``cache=True`` (default) every image and mask is decoded once, at construction, and kept in memory
as uint8 (about H·W bytes per image, e.g. 65 MB for 1000 images of 256×256; in eval mode already resized to
S×S); DataLoader workers forked afterwards share those pages, so a sample costs only its warp (eval: only its
normalisation). Pass ``cache=False`` for data sets too large for memory; the outputs are the same either way.

Reproducibility: every random draw of sample ``index`` comes from ``np.random.default_rng([seed, epoch, index])``
(``set_epoch`` before creating the DataLoader iterator), never from a global RNG, so a (seed, epoch, index) gives
the same tensors in any worker and after a resume.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from Code.data.image_io import load_gray, load_mask, normalize_to_tensor, resize_image, resize_mask
from Code.data.lists import read_labeled_list, read_unlabeled_list
from Code.data.transforms import photometric, resolve_aug, sample_geometry, warp_image, warp_mask
from Code.errors import UserError

MODES = ("labeled", "unlabeled", "eval")


class SplitDataset(Dataset):
    """Images (and masks, labels) of one split part; see the module docstring for the modes' outputs."""

    def __init__(self, part_dir, mode: str, size: int = 224, in_channels: int = 1,
                 aug: Optional[Mapping] = None, seed: int = 0, cache: bool = True, truth: bool = False,
                 strong_views: int = 1, labeled_strong: bool = False):
        if mode not in MODES:
            raise UserError(f"dataset mode {mode!r} is not one of {', '.join(MODES)}")
        if in_channels not in (1, 3):
            raise UserError(f"in_channels must be 1 or 3, got {in_channels}")
        if size < 8:
            raise UserError(f"image size {size} is too small")
        if seed < 0:
            raise UserError(f"the data seed must be >= 0, got {seed}")
        if not isinstance(strong_views, int) or strong_views < 1:
            raise UserError(f"strong_views must be a positive integer, got {strong_views!r}")
        self.part_dir = Path(part_dir)
        if not self.part_dir.is_dir():
            raise UserError(f"split part folder not found: {self.part_dir}")
        self.mode, self.size, self.in_channels, self.seed = mode, int(size), int(in_channels), int(seed)
        self.strong_views, self.labeled_strong = strong_views, bool(labeled_strong)
        self.aug = resolve_aug(aug)
        self.epoch = 0
        self.truth_note: Optional[str] = None  # why an unlabeled part asked for its truth carries none
        if mode == "unlabeled":
            self.names = read_unlabeled_list(self.part_dir / "unlabeled.txt")
            self.masks, self.labels = self._truth_of(self.names) if truth else ([], [])
        else:
            entries = read_labeled_list(self.part_dir / "labeled.txt")
            self.names = [image for image, _, _ in entries]
            self.masks = [mask for _, mask, _ in entries]
            self.labels = [label for _, _, label in entries]
        self._check_files()
        self._images = [self._read_image(i) for i in range(len(self.names))] if cache else None
        self._masks = [self._read_mask(i, self._images[i]) for i in range(len(self.masks))] if cache else None
        if cache and mode == "eval":  # no randomness: keep the resized arrays, a sample is then just normalised
            self._images = [resize_image(image, self.size) for image in self._images]
            self._masks = [resize_mask(mask, self.size) for mask in self._masks]

    @property
    def has_truth(self) -> bool:
        """Unlabeled mode: whether the samples carry their truth (for diagnostics)."""
        return self.mode == "unlabeled" and len(self.masks) == len(self.names) > 0

    @property
    def n_views(self) -> int:
        """Unlabeled mode: the number of image tensors leading each sample (the weak view and the strong ones)."""
        return 1 + self.strong_views

    def _truth_of(self, names):
        """(masks, labels) of ``names`` from ``truth.txt``, or ([], []) with ``truth_note`` set when the file is
        missing or lacks some image: diagnostics over part of a pool would describe other images than those
        trained on, so they are all or nothing."""
        path = self.part_dir / "truth.txt"
        if not path.is_file():
            self.truth_note = f"{self.part_dir} has no {path.name} (the truth of its images)"
            return [], []
        entries = {image: (mask, label) for image, mask, label in read_labeled_list(path, allow_empty=True)}
        missing = sum(1 for n in names if n not in entries)
        if missing:
            self.truth_note = (f"{missing} of the {len(names)} unlabeled images in {self.part_dir} have no truth "
                               f"in {path.name} (unlabeled-only images)")
            return [], []
        return [entries[n][0] for n in names], [entries[n][1] for n in names]

    def _check_files(self) -> None:
        for name in self.names:
            if not (self.part_dir / "image" / name).is_file():
                raise UserError(f"{self.part_dir}: listed image {name} not found in image/")
        for name in self.masks:
            if not (self.part_dir / "mask" / name).is_file():
                raise UserError(f"{self.part_dir}: listed mask {name} not found in mask/")

    def _read_image(self, index: int) -> np.ndarray:
        return load_gray(self.part_dir / "image" / self.names[index])

    def _read_mask(self, index: int, image: np.ndarray) -> np.ndarray:
        mask = load_mask(self.part_dir / "mask" / self.masks[index])
        if mask.shape != image.shape:
            raise UserError(f"{self.part_dir}: mask {self.masks[index]} is {mask.shape[1]}x{mask.shape[0]} but "
                            f"its image is {image.shape[1]}x{image.shape[0]}")
        return mask

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation stream of `epoch` (call before iterating a DataLoader for that epoch)."""
        if epoch < 0:
            raise UserError(f"epoch must be >= 0, got {epoch}")
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.names)

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, index])

    def _to_tensor(self, gray: np.ndarray) -> torch.Tensor:
        return normalize_to_tensor(gray, self.in_channels)

    def __getitem__(self, index: int):
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        image = self._images[index] if self._images is not None else self._read_image(index)
        if self.mode == "unlabeled":
            rng = self._rng(index)
            matrix = sample_geometry(rng, self.aug, image.shape[:2], self.size)
            weak = warp_image(image, matrix, self.size)
            views = [self._to_tensor(weak)]
            views += [self._to_tensor(photometric(weak, rng, self.aug)) for _ in range(self.strong_views)]
            if not self.has_truth:
                return tuple(views)
            mask = self._masks[index] if self._masks is not None else self._read_mask(index, image)
            return (*views,
                    torch.from_numpy(warp_mask(mask, matrix, self.size).astype(np.int64)),
                    torch.tensor(self.labels[index], dtype=torch.int64))
        mask = self._masks[index] if self._masks is not None else self._read_mask(index, image)
        label = torch.tensor(self.labels[index], dtype=torch.int64)
        if self.mode == "eval":
            image, mask = resize_image(image, self.size), resize_mask(mask, self.size)
            return self._to_tensor(image), torch.from_numpy(mask.astype(np.int64)), label, self.names[index]
        rng = self._rng(index)
        matrix = sample_geometry(rng, self.aug, image.shape[:2], self.size)
        image, mask = warp_image(image, matrix, self.size), warp_mask(mask, matrix, self.size)
        sample = (self._to_tensor(image), torch.from_numpy(mask.astype(np.int64)), label)
        if self.labeled_strong:
            return (*sample, self._to_tensor(photometric(image, rng, self.aug)))
        return sample
