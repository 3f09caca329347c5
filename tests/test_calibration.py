"""inference.calibration: ECE / Brier against a hand-computed case, temperature scaling, the stored document."""
import hashlib
import json
import math

import pytest
import torch

from Code.inference.calibration import (TemperatureScaled, calibration_metrics, calibration_path, checkpoint_sha256,
                                     fit_temperature, load_calibration, nll, reliability_curve, rescale_probs,
                                     resolve_temperature, save_calibration)
from Code.errors import UserError

pytestmark = pytest.mark.usefixtures("single_thread")

# Eight images, none on a bin edge; 15 bins of width 1/15: bins 1, 3, 4, 5, 7, 7, 13, 14; 10 bins: 1, 2, 3, 3, 4, 5, 8, 9.
PROBS = [0.12, 0.25, 0.31, 0.36, 0.47, 0.52, 0.88, 0.95]
LABELS = [0, 1, 1, 0, 0, 0, 1, 1]


def test_ece_and_brier_hand_computed():
    """ECE = Σ_b n_b/n·|acc_b − conf_b| = (0.12 + 0.75 + 0.69 + 0.36 + 2·0.495 + 0.12 + 0.05) / 8 = 0.385 with 15
    bins; with 10 bins 0.31 and 0.36 share a bin (2·|0.5 − 0.335|) and 0.47, 0.52 do not:
    (0.12 + 0.75 + 0.33 + 0.47 + 0.52 + 0.12 + 0.05) / 8 = 0.295; Brier = Σ (p − y)² / 8 = 1.6908 / 8.
    Mutations checked: ``n_bins=10`` inside calibration_metrics, and the Brier score replaced by mean |p − y|
    — each fails this test."""
    scores = calibration_metrics(PROBS, LABELS)
    assert scores["ece"] == pytest.approx(0.385, abs=1e-6)
    assert scores["brier"] == pytest.approx(0.21135, abs=1e-6)
    assert calibration_metrics(PROBS, LABELS, n_bins=10)["ece"] == pytest.approx(0.295, abs=1e-6)
    perfect = calibration_metrics([0.0, 1.0, 1.0], [0, 1, 1])
    assert perfect == {"ece": pytest.approx(0.0), "brier": pytest.approx(0.0)}
    assert all(math.isnan(v) for v in calibration_metrics([], []).values())


def test_reliability_curve_bins():
    """Per non-empty bin: mean p, share malignant, count (the bin of 0.47 and 0.52 holds two benign images).
    Mutation checked: dropping the ``counts > 0`` filter fails."""
    curve = reliability_curve(PROBS, LABELS)
    assert curve["count"].tolist() == [1, 1, 1, 1, 2, 1, 1]
    assert curve["confidence"].tolist() == pytest.approx([0.12, 0.25, 0.31, 0.36, 0.495, 0.88, 0.95])
    assert curve["frequency"].tolist() == pytest.approx([0, 1, 1, 0, 0, 1, 1])
    assert curve["edges"].size == 16


def test_fit_temperature_recovers_overconfidence():
    """Logits three times too large for their labels: the fitted T is ≈ 3 and lowers the NLL.
    Mutation checked: multiplying the logits by T instead of dividing in fit_temperature gives T ≈ 1/3."""
    gen = torch.Generator().manual_seed(0)
    margin = torch.randn(20000, generator=gen) * 2.0
    labels = (torch.rand(20000, generator=gen) < torch.sigmoid(margin)).long()
    logits = torch.stack([torch.zeros_like(margin), 3.0 * margin], dim=1) + torch.randn(20000, 1, generator=gen)
    temperature = fit_temperature(logits, labels)
    assert temperature == pytest.approx(3.0, rel=0.05)
    assert nll(logits, labels, temperature) < nll(logits, labels) - 0.05
    with pytest.raises(ValueError):
        fit_temperature(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long))


def test_rescale_probs_equals_dividing_the_logits():
    """softmax(log softmax(z) / T) == softmax(z / T), and T then 1/T gives back the probabilities.
    Mutation checked: rescale_probs without the log (probs / T) fails."""
    z = torch.tensor([[2.0, -1.0], [0.3, 0.2], [-4.0, 5.0]], dtype=torch.float64)
    for t in (0.5, 2.0):
        assert torch.allclose(rescale_probs(z.softmax(1), t), (z / t).softmax(1), atol=1e-12)
    assert torch.allclose(rescale_probs(rescale_probs(z.softmax(1), 2.0), 0.5), z.softmax(1), atol=1e-12)


def test_temperature_scaled_divides_only_class_logits():
    """Mutation checked: TemperatureScaled multiplying the class logits by T fails."""
    class Fake(torch.nn.Module):
        def forward(self, x):
            return {"seg_logits": x * 1.0, "cls_logits": torch.tensor([[3.0, -1.5]])}
    out = TemperatureScaled(Fake(), 2.0)(torch.ones(1, 2, 4, 4))
    assert out["cls_logits"].tolist() == [[1.5, -0.75]]
    assert torch.equal(out["seg_logits"], torch.ones(1, 2, 4, 4))
    with pytest.raises(UserError, match="positive"):
        TemperatureScaled(Fake(), 0.0)


def test_calibration_document_round_trip_and_errors(tmp_path):
    """Mutation checked: calibration_path giving ``best.json`` instead of ``best.calibration.json`` fails."""
    checkpoint = tmp_path / "best.pt"
    checkpoint.write_bytes(b"weights")
    path = calibration_path(checkpoint)
    assert path.name == "best.calibration.json"
    document = {"temperature": 1.7, "review_thresholds": {"class_entropy": 0.9, "lesion_entropy": 0.4},
                "checkpoint_sha256": checkpoint_sha256(checkpoint)}
    assert document["checkpoint_sha256"] == hashlib.sha256(b"weights").hexdigest()
    save_calibration(path, document)
    assert load_calibration(path) == document
    assert resolve_temperature("auto", checkpoint) == document
    assert resolve_temperature(str(path)) == document
    assert resolve_temperature("2.5") == {"temperature": 2.5, "review_thresholds": None}
    assert resolve_temperature(None) is None
    with pytest.raises(UserError, match="positive number"):
        resolve_temperature("-1")
    with pytest.raises(UserError, match="calibration file not found"):
        resolve_temperature("auto", tmp_path / "other.pt")
    (tmp_path / "other.pt").write_bytes(b"other weights")
    with pytest.raises(UserError, match="fitted on another checkpoint"):
        resolve_temperature(str(path), tmp_path / "other.pt")
    (tmp_path / "bad.json").write_text(json.dumps({"temperature": "hot"}))
    with pytest.raises(UserError, match="positive 'temperature'"):
        load_calibration(tmp_path / "bad.json")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(UserError, match="cannot read calibration file"):
        load_calibration(tmp_path / "broken.json")
    assert not list(tmp_path.glob(".*.tmp"))


def test_fit_temperature_stays_in_range_for_degenerate_val_sets():
    """Labels independent of the logits push T → ∞ (clipped to 100); perfectly separated labels push T down
    until the NLL is flat (L-BFGS stops well inside the range). Mutation checked: removing the clipping fails."""
    logits = torch.tensor([[2.0, -2.0], [-3.0, 3.0], [1.0, -1.0], [-2.0, 2.0]])
    assert fit_temperature(logits, torch.tensor([0, 0, 1, 1])) == 100.0
    assert 0.01 <= fit_temperature(logits, torch.tensor([0, 1, 0, 1])) < 0.5
