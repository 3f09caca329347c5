"""inference.uncertainty: normalised entropy, lesion entropy, review thresholds and flags, risk–coverage."""
import math

import pytest
import torch

from Code.inference.uncertainty import (fit_review_thresholds, flag_table, image_uncertainty, lesion_mean,
                                     normalized_entropy, review_flags, risk_coverage, score_at_coverage)


def test_normalized_entropy_values():
    """H(0.25, 0.75) = −(0.25 ln 0.25 + 0.75 ln 0.75) / ln 2 = 0.811278; uniform → 1; certain → 0 (no NaN).
    Mutation checked: dividing by ln K removed (entropy in nats) fails."""
    probs = torch.tensor([[0.25, 0.75], [0.5, 0.5], [1.0, 0.0]])
    assert normalized_entropy(probs, dim=1).tolist() == pytest.approx([0.811278, 1.0, 0.0], abs=1e-6)
    three = torch.full((1, 3), 1 / 3)
    assert float(normalized_entropy(three, dim=1)) == pytest.approx(1.0, abs=1e-6)


def test_image_uncertainty_lesion_mean():
    """Lesion entropy = mean pixel entropy over the predicted lesion; NaN without one.
    Mutation checked: averaging over the whole image instead of the lesion fails."""
    lesion = torch.tensor([[[0.9, 0.5], [0.1, 0.1]], [[0.2, 0.1], [0.0, 0.3]]])  # B×H×W lesion probability
    seg = torch.stack([1 - lesion, lesion], dim=1)
    cls = torch.tensor([[0.5, 0.5], [0.9, 0.1]])
    u = image_uncertainty(seg, cls)
    h09 = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1)) / math.log(2)
    assert u["entropy"].shape == (2, 2, 2)
    assert float(u["lesion_entropy"][0]) == pytest.approx(h09, abs=1e-6)  # only the 0.9 pixel is > 0.5
    assert math.isnan(float(u["lesion_entropy"][1]))
    assert u["class_entropy"].tolist() == pytest.approx([1.0, h09], abs=1e-6)
    assert lesion_mean(torch.ones(1, 2, 2), torch.tensor([[[True, True], [False, False]]])).tolist() == [1.0]


def test_review_thresholds_and_flags():
    """Thresholds are the 0.9-quantile on val (NaN ignored; all NaN → 1); a flag needs a strict excess.
    Mutation checked: ``&`` instead of ``|`` in review_flags fails."""
    t = fit_review_thresholds([0.1 * i for i in range(11)], [math.nan] * 5 + [0.2, 0.4], quantile=0.9)
    assert t["class_entropy"] == pytest.approx(0.9)
    assert t["lesion_entropy"] == pytest.approx(0.38)
    assert fit_review_thresholds([0.5], [math.nan])["lesion_entropy"] == 1.0
    flags = review_flags([0.95, 0.2, 0.9, 0.1], [math.nan, 0.5, 0.1, 0.38], t)
    assert flags.tolist() == [True, True, False, False]
    with pytest.raises(ValueError):
        fit_review_thresholds([0.1], [0.1], quantile=1.0)


def test_flag_table_groups():
    """Mutation checked: the unflagged group selecting the flagged records fails."""
    records = [{"review": True, "dice": 0.2, "label": 1, "pred_class": 0},
               {"review": True, "dice": 0.4, "label": 1, "pred_class": 1},
               {"review": False, "dice": 0.9, "label": 0, "pred_class": 0}]
    rows = {r["group"]: r for r in flag_table(records)}
    assert (rows["flagged"]["n"], rows["flagged"]["dice"], rows["flagged"]["accuracy"]) == (2, pytest.approx(0.3), 0.5)
    assert (rows["unflagged"]["n"], rows["unflagged"]["dice"], rows["unflagged"]["accuracy"]) == (1, 0.9, 1.0)
    assert rows["all"]["n"] == 3 and rows["all"]["accuracy"] == pytest.approx(2 / 3)
    empty = {r["group"]: r for r in flag_table([dict(records[2])])}
    assert empty["flagged"]["n"] == 0 and math.isnan(empty["flagged"]["dice"])


def test_risk_coverage_hand_case():
    """Most certain first: uncertainties 0.1, 0.2, NaN (last), 0.05 → order d, a, b, c; correct = 1, 0, 1, 1.
    Kept 1: d (1.0); 2: d, a (1.0); 3: +b (2/3); 4: +c (3/4).
    Mutation checked: sorting by descending uncertainty (keeping the least certain) fails."""
    curve = risk_coverage([1.0, 0.0, 1.0, 1.0], [0.1, 0.2, math.nan, 0.05])
    assert curve["coverage"].tolist() == [0.25, 0.5, 0.75, 1.0]
    assert curve["score"].tolist() == pytest.approx([1.0, 1.0, 2 / 3, 0.75])
    assert score_at_coverage(curve, 0.5) == 1.0 and score_at_coverage(curve, 1.0) == 0.75
    assert score_at_coverage(curve, 0.7) == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        risk_coverage([], [])
