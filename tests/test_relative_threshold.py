"""``ssl.class_ratio: relative``: the class-adaptive threshold's r measured against the labeled class shares
(Code/methods/thresholds/dual_threshold.py, labeled_share.py), by hand, and inside Hermes' step on a stub network."""

import pytest
import torch

from Code.errors import UserError
from Code.methods import build_method
from Code.methods.thresholds import LabeledShare, dual_threshold_mask, relative_ratio
from test_step import StubNet, labeled_batch, make_config, views


def test_relative_ratio_by_hand():
    """r = (0.93, 0.07), π = (0.9, 0.1): q = (1.0333, 0.7), r̃ = (1, 0.7/1.0333 = 0.67742)."""
    got = relative_ratio(torch.tensor([0.93, 0.07]), torch.tensor([0.9, 0.1]))
    assert got.tolist() == pytest.approx([1.0, 0.7 / (0.93 / 0.9)], rel=1e-6)
    assert relative_ratio(torch.tensor([0.5, 0.5]), torch.tensor([0.5, 0.5])).tolist() == [1.0, 1.0]


def test_dual_threshold_relative_to_the_labeled_shares_by_hand():
    """Four pixels with p(lesion) = 0.9, 0.6, 0.2, 0.1: ŷ = 1, 1, 0, 0, r = (0.5, 0.5). With π = (0.8, 0.2):
    q = (0.625, 2.5), r̃ = (0.25, 1), τ = (0.95 − 0.45·0.75, 0.95) = (0.6125, 0.95): the two lesion pixels fail,
    the two background pixels (0.8, 0.9) pass. The paper's batch ratio: τ = 0.725 for both, the 0.9 lesion pixel
    passes. At t = T, η = ln 2 lets every pixel through the entropy test. Mutations checked: relative_to ignored;
    q not normalised by its max; π inverted (r·π)."""
    p1 = torch.tensor([0.9, 0.6, 0.2, 0.1]).view(1, 1, 1, 4)
    probs = torch.cat([1 - p1, p1], 1)
    _, keep, stats = dual_threshold_mask(probs, 10, 10, relative_to=torch.tensor([0.8, 0.2]))
    assert keep.view(-1).tolist() == [False, False, True, True]
    assert stats["threshold_0"].item() == pytest.approx(0.6125) and stats["threshold_1"].item() == pytest.approx(0.95)
    assert stats["class_ratio_0"].item() == pytest.approx(0.25)
    _, keep, stats = dual_threshold_mask(probs, 10, 10)
    assert keep.view(-1).tolist() == [True, False, True, True]
    assert stats["threshold_1"].item() == pytest.approx(0.725)


def test_labeled_share_counts_exactly_and_starts_uniform():
    """π uniform before any batch; counts per class; float64 counts stay exact past 2²⁴ (float32 would not).
    Mutation checked: float32 counts."""
    share = LabeledShare(2)
    assert share.share().tolist() == [0.5, 0.5]
    share.update(torch.tensor([[[0, 1], [1, 1]]]))
    share.update(torch.tensor([1, 0, 0, 0]))
    assert share.counts.tolist() == [4.0, 4.0] and share.share().tolist() == [0.5, 0.5]
    share.counts[0] = 2.0 ** 24
    share.update(torch.tensor([0]))
    assert share.counts[0].item() == 2.0 ** 24 + 1


def test_hermes_step_uses_the_labeled_mask_share_and_checkpoints_it():
    """One Hermes step with ``ssl.class_ratio=relative``: π of the pixels = the labeled masks' shares, the logged
    class ratio of the pixels = r̃ from this step's pseudo-labels and π, the threshold follows from it, and the cls
    side is measured against the labeled list's prior. The counts are saved and restored; a checkpoint without them
    is refused. Mutations checked: the mask not counted (π stays uniform); the seg side given the cls prior."""
    config = make_config(ssl__class_ratio="relative", ssl__tau_lo=0.5, ssl__tau_hi=0.95)
    prior = torch.tensor([0.7, 0.3])
    method = build_method(config, torch.device("cpu"), StubNet(), prior)
    labeled = labeled_batch()
    weak, strong = views([2.0, -0.3])
    _, logs, vis = method.step(StubNet(), labeled, (weak, strong), 50)
    mask = labeled[1]
    pi = torch.bincount(mask.reshape(-1), minlength=2).double() / mask.numel()
    assert method.seg_share.counts.tolist() == torch.bincount(mask.reshape(-1), minlength=2).double().tolist()
    assert logs["seg_labeled_share_1"].item() == pytest.approx(pi[1].item())
    pseudo = vis["pseudo"].reshape(-1)
    r = torch.bincount(pseudo, minlength=2).double() / pseudo.numel()
    expected = (r / pi) / (r / pi).max()
    assert logs["seg_class_ratio_1"].item() == pytest.approx(expected[1].item(), rel=1e-5)
    assert logs["seg_threshold_1"].item() == pytest.approx(0.95 - 0.45 * (1 - expected[1].item()), rel=1e-5)
    cls_pseudo = vis["cls_pseudo"]
    rc = torch.bincount(cls_pseudo, minlength=2).double() / cls_pseudo.numel()
    qc = rc / prior.double()
    assert logs["cls_class_ratio_0"].item() == pytest.approx((qc / qc.max())[0].item(), rel=1e-5)
    state = method.state_dict()
    again = build_method(config, torch.device("cpu"), StubNet(), prior)
    again.load_state_dict(state)
    assert torch.equal(again.seg_share.counts, method.seg_share.counts)
    with pytest.raises(UserError, match="no labeled pixel shares"):
        again.load_state_dict({k: v for k, v in state.items() if k != "seg_share"})
    paper = build_method(make_config(), torch.device("cpu"), StubNet(), prior)
    assert paper.seg_share is None and "seg_share" not in paper.state_dict()


def test_config_accepts_relative_and_names_the_choices():
    assert make_config(ssl__class_ratio="relative")["ssl"]["class_ratio"] == "relative"
    with pytest.raises(UserError, match="'ssl.class_ratio' must be one of batch, pool, relative"):
        make_config(ssl__class_ratio="labeled")
