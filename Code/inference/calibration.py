"""Calibration of the malignancy probability: ECE, Brier score, reliability curve, temperature scaling.

- **ECE** (expected calibration error, 15 equal-width bins on [0, 1], torchmetrics' ``binary_calibration_error``
  with the L1 norm) of p = P(malignant):

      ECE = Σ_b (n_b / n) · | mean_{i∈b} y_i − mean_{i∈b} p_i |

  where bin b = ⌊15·p⌋ (p = 1 goes to the last bin) and y ∈ {0, 1} is the label (1 = malignant).
- **Brier score** (scikit-learn's ``brier_score_loss``): mean_i (p_i − y_i)².
- **Temperature scaling** (Guo et al., ICML 2017): one scalar T > 0 divides the class logits z (B×K),
  p = softmax(z / T). T minimises the negative log-likelihood on the validation images; it is optimised as
  log T with L-BFGS, so T stays positive. Argmax (hence accuracy and the predicted class) and AUC are unchanged.

Nothing here reads files except :func:`load_calibration` / :func:`save_calibration` (the small JSON document
stored next to a checkpoint) and :func:`checkpoint_sha256`. A calibration holds the SHA-256 of the checkpoint
*file* it was fitted on (``checkpoint_sha256``); applying it to any other file — a ``best.pt`` that moved when the
run was extended, or the same weights saved again — is refused with the hint to refit (``evaluate.py
--calibrate``). The file, not its weights, is hashed: no checkpoint has to be loaded for the check, and a file
copied elsewhere keeps its calibration. Files without the hash (written before it existed) are refused the same
way: a warning would let the silently wrong temperature through, and refitting is one command.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from Code.common.file_mode import user_file_mode
from Code.errors import UserError

N_BINS = 15
T_RANGE = (0.01, 100.0)  # a perfectly separated (T → 0) or uninformative (T → ∞) val set stays finite
CALIBRATION_SUFFIX = ".calibration.json"


def calibration_metrics(prob_malignant: Sequence[float], labels: Sequence[int], n_bins: int = N_BINS
                        ) -> Dict[str, float]:
    """``{"ece": …, "brier": …}`` of P(malignant) against the labels (see the module docstring); NaN if empty."""
    probs = torch.as_tensor(np.asarray(prob_malignant, dtype=np.float64)).clamp(0.0, 1.0)
    target = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    if probs.numel() == 0:
        return {"ece": math.nan, "brier": math.nan}
    from sklearn.metrics import brier_score_loss
    from torchmetrics.functional.classification import binary_calibration_error

    ece = binary_calibration_error(probs, target, n_bins=n_bins, norm="l1")
    return {"ece": float(ece), "brier": float(brier_score_loss(target.numpy(), probs.numpy()))}


def reliability_curve(prob_malignant: Sequence[float], labels: Sequence[int], n_bins: int = N_BINS
                      ) -> Dict[str, np.ndarray]:
    """Per non-empty equal-width bin: ``confidence`` (mean p), ``frequency`` (share malignant), ``count`` and the
    bin ``edges`` (n_bins + 1), for the reliability diagram (scikit-learn's ``calibration_curve``, whose binning
    the counts follow: a p on an inner edge goes to the lower bin)."""
    from sklearn.calibration import calibration_curve

    probs = np.clip(np.asarray(prob_malignant, dtype=np.float64), 0.0, 1.0)
    labels = np.asarray(labels, dtype=np.int64)
    frequency, confidence = calibration_curve(labels, probs, n_bins=n_bins, strategy="uniform")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    counts = np.bincount(np.clip(np.searchsorted(edges[1:-1], probs), 0, n_bins - 1),
                         minlength=n_bins)
    return {"confidence": confidence, "frequency": frequency, "count": counts[counts > 0], "edges": edges}


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, max_iter: int = 200) -> float:
    """The T > 0 minimising mean cross-entropy(softmax(logits / T), labels); ``logits`` N×K, ``labels`` N (long).

    L-BFGS on log T from T = 1 (strong-Wolfe line search), then clipped to ``T_RANGE``: the NLL is convex in
    1/T (a convex function of logits that are linear in 1/T), so the clipped value is the best T in that range.
    Any per-row constant added to the logits (e.g. using log-probabilities instead) does not change the result.
    """
    logits = torch.as_tensor(logits, dtype=torch.float64).detach()
    labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
    if logits.dim() != 2 or logits.shape[0] != labels.shape[0] or logits.shape[0] == 0:
        raise ValueError(f"fit_temperature needs N×K logits and N labels, got {tuple(logits.shape)} and "
                         f"{tuple(labels.shape)}")
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    temperature = float(log_t.detach().exp())
    return T_RANGE[1] if math.isnan(temperature) else min(max(temperature, T_RANGE[0]), T_RANGE[1])


def nll(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of softmax(logits / T)."""
    logits = torch.as_tensor(logits, dtype=torch.float64)
    return float(F.cross_entropy(logits / temperature, torch.as_tensor(labels, dtype=torch.long).reshape(-1)))


def rescale_probs(probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """softmax(log(probs) / T) for B×K probabilities: what the probabilities become when their logits are divided
    by T (exact: log-softmax differs from the logits by a per-row constant). T < 1 sharpens, T > 1 softens."""
    log_p = torch.as_tensor(probs, dtype=torch.float64).clamp_min(1e-300).log()
    return (log_p / temperature).softmax(dim=-1)


class TemperatureScaled(torch.nn.Module):
    """A HermesNet whose ``cls_logits`` are divided by ``temperature``; every other output is unchanged."""

    def __init__(self, model: torch.nn.Module, temperature: float):
        super().__init__()
        if not (temperature > 0 and math.isfinite(temperature)):
            raise UserError(f"the temperature must be a positive number, got {temperature!r}")
        self.model, self.temperature = model, float(temperature)

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        out = dict(self.model(x))
        out["cls_logits"] = out["cls_logits"] / self.temperature
        return out


def apply_temperature(model: torch.nn.Module, calibration: Optional[Dict[str, Any]]) -> torch.nn.Module:
    """``model`` wrapped in :class:`TemperatureScaled` (eval mode) when a calibration document is given."""
    return model if calibration is None else TemperatureScaled(model, calibration["temperature"]).eval()


# ------------------------------------------------------------------------------------------ the stored document
def calibration_path(checkpoint: Union[str, Path]) -> Path:
    """``RUN/checkpoints/best.pt`` → ``RUN/checkpoints/best.calibration.json``."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.stem + CALIBRATION_SUFFIX)


def save_calibration(path: Union[str, Path], document: Dict[str, Any]) -> None:
    """Write the JSON document atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps(document, indent=2) + "\n")
        os.chmod(tmp, user_file_mode())  # mkstemp creates 0600; give the file the user's usual mode
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_calibration(path: Union[str, Path]) -> Dict[str, Any]:
    """Read a calibration document; a one-line UserError if it is missing or malformed.

    Returns a dict with at least ``temperature`` (positive float) and ``review_thresholds`` (``{"class_entropy":
    t, "lesion_entropy": t}`` or None).
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"calibration file not found: {path} (fit one with evaluate.py --calibrate)")
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read calibration file {path}: {exc}") from None
    temperature = document.get("temperature") if isinstance(document, dict) else None
    if not isinstance(temperature, (int, float)) or not temperature > 0:
        raise UserError(f"{path} holds no positive 'temperature' (not a calibration file of evaluate.py)")
    review = document.get("review_thresholds")
    if review is not None and (not isinstance(review, dict) or set(review) != {"class_entropy", "lesion_entropy"}):
        raise UserError(f"{path}: 'review_thresholds' must map class_entropy and lesion_entropy to numbers")
    return document


def checkpoint_sha256(path: Union[str, Path]) -> str:
    """Hex SHA-256 of the checkpoint file's bytes (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_fitted_on(document: Dict[str, Any], source: Union[str, Path], checkpoint: Union[str, Path]) -> None:
    """A one-line UserError unless the calibration ``document`` (read from ``source``) was fitted on the file
    ``checkpoint`` (same ``checkpoint_sha256``)."""
    refit = f"refit it with: evaluate.py --checkpoint {checkpoint} --data SPLIT/test --calibrate --force"
    fitted = document.get("checkpoint_sha256")
    if fitted is None:
        raise UserError(f"{source} does not record the checkpoint it was fitted on (a calibration file older than "
                        f"that check), so it may belong to another checkpoint than {checkpoint}: {refit}")
    actual = checkpoint_sha256(checkpoint)
    if fitted != actual:
        raise UserError(f"{source} was fitted on another checkpoint (sha256 {fitted[:12]}…; {checkpoint} is "
                        f"{actual[:12]}…, e.g. a best.pt that moved when the run went on): {refit}")


def resolve_temperature(value: Optional[str], checkpoint: Optional[Union[str, Path]] = None
                        ) -> Optional[Dict[str, Any]]:
    """``--temperature``/``--calibration`` argument → calibration document (or None when ``value`` is None).

    ``auto``: the file next to ``checkpoint``; a positive number: that temperature without review thresholds;
    anything else: a calibration JSON file. A file must have been fitted on ``checkpoint`` (when given; see
    :func:`check_fitted_on`).
    """
    if value is None:
        return None
    if value == "auto":
        if checkpoint is None:
            raise UserError("'auto' calibration needs a checkpoint (name the calibration file instead)")
        value = str(calibration_path(checkpoint))
    else:
        try:
            temperature = float(value)
        except ValueError:
            temperature = None
        if temperature is not None:
            if not (temperature > 0 and math.isfinite(temperature)):
                raise UserError(f"the temperature must be a positive number or a calibration file, got {value!r}")
            return {"temperature": temperature, "review_thresholds": None}
    document = load_calibration(value)
    if checkpoint is not None:
        check_fitted_on(document, value, checkpoint)
    return document
