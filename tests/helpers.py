"""Helpers shared by test modules (pytest puts this folder on sys.path: ``from helpers import ...``)."""
import importlib
import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def load_script(name):
    """Import ``Code/<name>.py`` in-process (cheaper than a subprocess for the secondary checks)."""
    sys.path.insert(0, str(REPO_ROOT / "Code"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(REPO_ROOT / "Code"))


SMOKE_CONFIG = REPO_ROOT / "configs" / "smoke.yaml"

# The environment of every training subprocess a test starts: offline, one thread, unbuffered output.
SUBPROCESS_ENV = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")

# The metrics.csv column that picks best.pt, per task (ties by val AUC, then the earliest step): the val/ part's
# metric. One place to change should the selection move to another column.
SELECTION_COLUMN = {"seg": "val_dice", "cls": "val_balanced_accuracy"}


def smoke_config(split, labels=4, task="seg", **sections):
    """The resolved ``configs/smoke.yaml`` for in-process runs on ``split``/train/``labels``.

    ``sections`` override config keys: ``method="fixmatch"``, ``train={"iters": 4}``, … (merged into the config
    like ``--set``). ``task`` also applies the entry script's defaults (saliency for seg, IAS for cls)."""
    from Code.engine.cli import ENTRY_DEFAULTS
    from Code.engine.config import load_config

    overrides = [{"data": {"split": str(split), "labels": labels}}]
    if sections:
        overrides.append(sections)
    config = load_config(str(SMOKE_CONFIG), overrides=overrides, defaults=ENTRY_DEFAULTS[task])
    config["task"] = task
    return config


BUSI_ENV = "HERMES_BUSI_ROOT"


def busi_root():
    """``(folder holding Dataset_BUSI_with_GT, explicit)`` for the real-data tests: ``$HERMES_BUSI_ROOT`` when set
    (that folder, or ``Dataset_BUSI_with_GT`` itself), else ``../shared/data/BUSI`` relative to the repository;
    ``explicit`` tells whether the variable was set (then a missing copy is an error, not a skip)."""
    value = os.environ.get(BUSI_ENV)
    if value:
        path = Path(value).expanduser()
        return (path.parent if path.name == "Dataset_BUSI_with_GT" else path), True
    return REPO_ROOT.parent / "shared" / "data" / "BUSI", False


def smoke_model_with_decisions(config, seed=0):
    """A randomly initialised HermesNet of ``config`` whose output biases are shifted so that about half of the
    pixels of a random 64×64 batch are lesion and the class predictions are mixed (an untrained model otherwise
    predicts no lesion at all, which would make mask comparisons trivial, and its pixel probabilities are all near
    0.5, so its segmentation head's weights are scaled up)."""
    import torch
    from Code.engine.builders import build_model

    torch.manual_seed(seed)
    model = build_model(config).eval()
    x = torch.randn(4, config["data"]["in_channels"], 64, 64, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        model.seg_head[0].weight *= 20.0  # confident pixels: few lesion probabilities sit near 0.5
        out = model(x)
        seg_margin = out["seg_logits"][:, 1] - out["seg_logits"][:, 0]
        cls_margin = out["cls_logits"][:, 1] - out["cls_logits"][:, 0]
        model.seg_head[0].bias[1] -= seg_margin.median()
        model.cls_head.bias[1] -= cls_margin.median()
    return model
