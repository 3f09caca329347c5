"""Helpers shared by test modules (pytest puts this folder on sys.path: ``from helpers import ...``)."""
import importlib
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
