"""Post-hoc class-prior correction of a trained model's classification (``eval.prior_correction: pool``).

A model trained on the labeled list (class shares π_s) is applied to images drawn with the unlabeled pool's prior
π. With p(c|x) its class probabilities (Saerens, Latinne & Decaestecker, Neural Computation 2002)::

    π  = bound(EM(p(·|x_j), π_s), π_s, k)     over the images x_j of SPLIT/train/N/unlabeled/ (never val or test;
                                              :func:`~Code.methods.thresholds.em_prior`, EM_ITERS iterations;
                                              :func:`~Code.methods.thresholds.bound_prior`, k = ssl.prior_max_shift)
    p'(c|x) = p(c|x)·π(c)/π_s(c) / Σ_c' p(c'|x)·π(c')/π_s(c')      on val and test; pred_class = argmax_c p'(c|x)

For two classes the correction is monotone in p(malignant|x): AUC is unchanged, accuracy, balanced accuracy,
sensitivity, specificity and F1 change. π is estimated once per set of weights (final, val-chosen best), since each
gives other posteriors. Used by the trainer's sealed test (Code/engine/trainer.py) and by Code/engine/rescore.py.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from Code.data.lists import read_labeled_list, read_unlabeled_list
from Code.errors import UserError
from Code.inference.prediction import predict_batch
from Code.methods.thresholds import adjust_to_prior, bound_prior, em_prior

EM_ITERS = 200  # the whole pool at once: iterate until the estimate has settled (a few ms)


def wanted(config: Dict[str, Any]) -> bool:
    """Whether ``eval.prior_correction`` asks for the pool correction (absent in older runs: none)."""
    return config["eval"].get("prior_correction", "none") == "pool"


def labeled_prior(split: Path, labels: int) -> torch.Tensor:
    """π_s: the class shares (2) of the labeled list ``SPLIT/train/N/labeled/labeled.txt``, as the trainer has them."""
    entries = read_labeled_list(Path(split) / "train" / str(labels) / "labeled" / "labeled.txt")
    counts = torch.bincount(torch.tensor([label for _, _, label in entries]), minlength=2).float()
    return counts / counts.sum()


def pool_names(split: Path, labels: int) -> List[str]:
    """The images of ``SPLIT/train/N/unlabeled/unlabeled.txt``; UserError when the pool is missing or empty (checked
    when a run starts, not only after its last step)."""
    listed = Path(split) / "train" / str(labels) / "unlabeled" / "unlabeled.txt"
    if not listed.is_file():
        raise UserError(f"eval.prior_correction pool needs the unlabeled pool, but {listed} is missing")
    names = read_unlabeled_list(listed)
    if not names:
        raise UserError(f"eval.prior_correction pool needs unlabeled images, but {listed} is empty")
    return names


def pool_posteriors(model: torch.nn.Module, split: Path, labels: int, config: Dict[str, Any],
                    device: torch.device, amp: bool = False) -> torch.Tensor:
    """The model's class probabilities (N×2, CPU) of every image of ``SPLIT/train/N/unlabeled/unlabeled.txt``,
    preprocessed as for evaluation (resize, normalise; no augmentation), in batches of ``eval.batch_size``."""
    from Code.data.image_io import load_gray, normalize_to_tensor, resize_image

    part = Path(split) / "train" / str(labels) / "unlabeled"
    names = pool_names(split, labels)
    size, channels, batch = config["data"]["size"], config["data"]["in_channels"], config["eval"]["batch_size"]
    was_training, probs = model.training, []
    model.eval()
    try:
        for start in range(0, len(names), batch):
            images = []
            for name in names[start:start + batch]:
                if not (part / "image" / name).is_file():
                    raise UserError(f"{part / 'unlabeled.txt'} lists {name}, which is not in {part / 'image'}")
                images.append(normalize_to_tensor(resize_image(load_gray(part / "image" / name), size), channels))
            probs.append(predict_batch(model, torch.stack(images).to(device), amp)[1].cpu())
    finally:
        model.train(was_training)
    return torch.cat(probs)


def estimate(probs: torch.Tensor, source: torch.Tensor, max_shift: float) -> torch.Tensor:
    """π (2): EM over the pool's posteriors ``probs`` (N×2) from π_s = ``source``, bounded by ``max_shift``."""
    return bound_prior(em_prior(probs, source, iters=EM_ITERS), source.to(probs), max_shift)


def correct_records(records: Sequence[Dict[str, Any]], prior: torch.Tensor,
                    source: torch.Tensor) -> List[Dict[str, Any]]:
    """Copies of per-image ``records`` with ``prob_malignant`` = p'(1|x) and ``pred_class`` = argmax p'(·|x)."""
    if not records:
        return []
    p1 = torch.tensor([float(r["prob_malignant"]) for r in records], dtype=torch.float64)
    adjusted = adjust_to_prior(torch.stack([1.0 - p1, p1], dim=1), prior.double(), source.double())
    return [dict(r, prob_malignant=float(a[1]), pred_class=int(a.argmax())) for r, a in zip(records, adjusted)]


def correct(test: Sequence[Dict[str, Any]], val: Optional[Sequence[Dict[str, Any]]], pool: torch.Tensor,
            source: torch.Tensor, max_shift: float) -> Tuple[list, Optional[list], Dict[str, Any]]:
    """One set of weights' test and val records corrected to the pool prior estimated from its ``pool``
    posteriors; returns ``(test, val, note)``, ``note`` = ``{"pool_prior": [π(0), π(1)], "pool_images": N}``."""
    prior = estimate(pool, source, max_shift)
    note = {"pool_prior": [round(float(v), 6) for v in prior], "pool_images": int(pool.shape[0])}
    return (correct_records(test, prior, source),
            None if val is None else correct_records(val, prior, source), note)


def sealed_scores(records: Callable[[Any], list], test_loader: Any, val_loader: Any, pool: Callable[[], torch.Tensor],
                  config: Dict[str, Any], source: torch.Tensor, val_always: bool = False
                  ) -> Tuple[list, Optional[list], Optional[Dict[str, Any]]]:
    """One set of weights scored for the sealed test: ``(test records, val records, note)``, corrected to the pool
    prior when :func:`wanted` (``pool()``: the pool's posteriors). Uncorrected, val is scored only with
    ``val_always`` (else None) and the note is None. ``records(loader)``: the per-image records of a loader's part."""
    test, correcting = records(test_loader), wanted(config)
    val = records(val_loader) if val_loader is not None and (correcting or val_always) else None
    note = None
    if correcting:
        test, val, note = correct(test, val, pool(), source, config["ssl"]["prior_max_shift"])
    return test, val, note


def describe(config: Dict[str, Any], source: torch.Tensor, final: Dict[str, Any],
             best: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """The ``prior_correction`` entry of ``final_metrics.json``: mode, π_s, the bound and each weights' π."""
    return {"mode": "pool", "labeled_prior": [round(float(v), 6) for v in source],
            "max_shift": float(config["ssl"]["prior_max_shift"]), "final": final, "best": best,
            "note": "test and val (val_at_final, val_at_best) scored with p'(c|x) ∝ p(c|x)·π(c)/π_s(c); π by EM "
                    "over the model's posteriors of train/N/unlabeled/; the best step is the one chosen on "
                    "uncorrected val during training (metrics.csv)"}
