"""Data pipeline: list files, image decoding/normalisation, augmentation and the split dataset."""
from Code.data.image_io import (NORM_MEAN_GRAY, NORM_MEAN_RGB, NORM_STD_GRAY, NORM_STD_RGB, binarize_mask,
                                denormalize, load_gray, load_mask, normalization, preprocess)
from Code.data.lists import (CLASS_NAMES, read_labeled_list, read_unlabeled_list, write_labeled_list,
                             write_unlabeled_list)

__all__ = [
    "CLASS_NAMES", "NORM_MEAN_GRAY", "NORM_MEAN_RGB", "NORM_STD_GRAY", "NORM_STD_RGB", "binarize_mask",
    "denormalize", "load_gray", "load_mask", "normalization", "preprocess", "read_labeled_list",
    "read_unlabeled_list", "write_labeled_list", "write_unlabeled_list",
]
