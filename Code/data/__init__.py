"""Data pipeline: list files, image decoding/normalisation, augmentation and the split dataset."""
from Code.data.dataset import MODES, SplitDataset
from Code.data.image_io import (NORM_MEAN_GRAY, NORM_MEAN_RGB, NORM_STD_GRAY, NORM_STD_RGB, binarize_mask,
                                denormalize, load_gray, load_mask, normalization, normalize_to_tensor, preprocess)
from Code.data.lists import (CLASS_NAMES, read_labeled_list, read_unlabeled_list, write_labeled_list,
                             write_unlabeled_list)
from Code.data.transforms import DEFAULT_AUG, photometric, resolve_aug, sample_geometry

__all__ = [
    "CLASS_NAMES", "DEFAULT_AUG", "MODES", "NORM_MEAN_GRAY", "NORM_MEAN_RGB", "NORM_STD_GRAY", "NORM_STD_RGB",
    "SplitDataset", "binarize_mask", "denormalize", "load_gray", "load_mask", "normalization",
    "normalize_to_tensor", "photometric", "preprocess", "read_labeled_list", "read_unlabeled_list",
    "resolve_aug", "sample_geometry", "write_labeled_list", "write_unlabeled_list",
]
