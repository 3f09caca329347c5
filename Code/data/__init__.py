"""Data pipeline: list files, image decoding/normalisation, augmentation and the split dataset.

The public names below are imported lazily (PEP 562), so that ``Code.data.lists`` or ``Code.data.image_io`` can be
used, e.g. by the split tools, without importing torch.
"""
from importlib import import_module

_EXPORTS = {
    "Code.data.dataset": ("MODES", "SplitDataset"),
    "Code.data.image_io": ("NORM_MEAN_GRAY", "NORM_MEAN_RGB", "NORM_STD_GRAY", "NORM_STD_RGB", "UNIT_LEVELS",
                           "binarize_mask", "denormalize", "load_gray", "load_mask", "normalization",
                           "normalize_to_tensor", "preprocess", "resize_image", "resize_mask", "to_gray"),
    "Code.data.lists": ("CLASS_NAMES", "read_labeled_list", "read_unlabeled_list", "write_labeled_list",
                        "write_unlabeled_list"),
    "Code.data.transforms": ("DEFAULT_AUG", "photometric", "resolve_aug", "sample_geometry"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'Code.data' has no attribute {name!r}")
    value = getattr(import_module(_MODULE_OF[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
