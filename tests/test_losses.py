"""Losses: dual threshold, SupCon, pixel contrast, consistency and supervised terms against hand computations."""
import math

import pytest
import torch
import torch.nn.functional as F

from Code.errors import UserError
from Code.losses import (MemoryBank, PixelContrastLoss, SupConLoss, inter_task_consistency, masked_cross_entropy,
                         masked_dice_loss, sample_pixel_anchors, seg_supervised_loss, weighted_supcon)
from Code.methods.thresholds import dual_threshold_mask, sigmoid_rampup


pytestmark = pytest.mark.usefixtures("single_thread")


def _entropy(p):
    return -sum(q * math.log(q) for q in p if q > 0)


# ----------------------------------------------------------------------------------------------- dual threshold
def test_sigmoid_rampup_values():
    assert sigmoid_rampup(0, 100) == pytest.approx(math.exp(-5))
    assert sigmoid_rampup(50, 100) == pytest.approx(math.exp(-1.25))
    assert sigmoid_rampup(100, 100) == 1.0 and sigmoid_rampup(250, 100) == 1.0
    assert sigmoid_rampup(-3, 100) == pytest.approx(math.exp(-5))


def test_dual_threshold_imbalanced_batch_changes_with_step():
    rows = [[0.97, 0.03], [0.8, 0.2], [0.6, 0.4], [0.3, 0.7]]
    probs = torch.tensor(rows, requires_grad=True)
    # pseudo = [0, 0, 0, 1] → r = (0.75, 0.25) → τ0 = 0.95 − 0.45·0.25 = 0.8375, τ1 = 0.95 − 0.45·0.75 = 0.6125
    # confident: 0.97 > τ0, 0.8 ≤ τ0, 0.6 ≤ τ0, 0.7 > τ1
    # entropies 0.1347, 0.5004, 0.6730, 0.6109; η(0) = (0.75 + 0.25 e^−5) ln 2 = 0.5210, η(T) = ln 2 = 0.6931
    eta_start, eta_end = (0.75 + 0.25 * math.exp(-5)) * math.log(2), math.log(2)
    certain_start = [_entropy(r) < eta_start for r in rows]
    assert certain_start == [True, True, False, False]
    assert [_entropy(r) < eta_end for r in rows] == [True, True, True, True]

    pseudo, keep, stats = dual_threshold_mask(probs, step=0, total_steps=100)
    assert pseudo.tolist() == [0, 0, 0, 1]
    assert keep.tolist() == [True, False, False, False]
    assert stats["threshold_0"].item() == pytest.approx(0.8375)
    assert stats["threshold_1"].item() == pytest.approx(0.6125)
    assert stats["class_ratio_0"].item() == pytest.approx(0.75)
    assert stats["entropy_threshold"].item() == pytest.approx(eta_start)
    assert stats["keep_ratio"].item() == pytest.approx(0.25)
    assert stats["keep_ratio_0"].item() == pytest.approx(1 / 3) and stats["keep_ratio_1"].item() == 0.0
    assert all(v.dim() == 0 for v in stats.values())
    assert not keep.requires_grad and not pseudo.requires_grad

    _, keep_end, _ = dual_threshold_mask(probs, step=100, total_steps=100)
    assert keep_end.tolist() == [True, False, False, True]  # the last one became certain
    _, keep_or, _ = dual_threshold_mask(probs, step=0, total_steps=100, combine="or")
    assert keep_or.tolist() == [True, True, False, True]
    _, keep_fixmatch, stats_fm = dual_threshold_mask(probs, step=0, total_steps=100, combine="confidence")
    assert keep_fixmatch.tolist() == [True, False, False, False]
    assert stats_fm["threshold_1"].item() == pytest.approx(0.95)


def test_dual_threshold_balanced_pixels():
    # two images of 1×2 pixels: pseudo = [[0, 0], [1, 1]] → r = (0.5, 0.5) → τ = 0.725 for both classes
    p0 = torch.tensor([[[0.9, 0.7]], [[0.2, 0.26]]])  # probability of class 0, B×H×W
    probs = torch.stack([p0, 1 - p0], dim=1)  # B×2×1×2
    pseudo, keep, stats = dual_threshold_mask(probs, step=1000, total_steps=1000)
    assert pseudo.tolist() == [[[0, 0]], [[1, 1]]]
    assert stats["threshold_0"].item() == pytest.approx(0.725) == stats["threshold_1"].item()
    # confident: 0.9 ✓, 0.7 ✗, 0.8 ✓, 0.74 ✓; all entropies < ln 2 at the end of the ramp
    assert keep.tolist() == [[[True, False]], [[True, True]]]
    assert keep.shape == pseudo.shape == (2, 1, 2)


def test_dual_threshold_rejects_bad_settings():
    probs = torch.full((2, 2), 0.5)
    with pytest.raises(UserError, match="combine"):
        dual_threshold_mask(probs, 0, 10, combine="xor")
    with pytest.raises(UserError, match="tau_lo"):
        dual_threshold_mask(probs, 0, 10, tau_hi=0.4, tau_lo=0.5)


# ------------------------------------------------------------------------------------------------------ SupCon
def _unit(deg):
    return [math.cos(math.radians(deg)), math.sin(math.radians(deg))]


def _direct_supcon(anchors, labels, weights, keys, key_labels, t):
    """Khosla et al. eq. 2 written out with Python floats; keys[:len(anchors)] are the anchors themselves."""
    total = weight_sum = 0.0
    for i, (a, y, w) in enumerate(zip(anchors, labels, weights)):
        others = [j for j in range(len(keys)) if j != i]
        dot = [sum(x * z for x, z in zip(a, k)) / t for k in keys]
        log_denominator = math.log(sum(math.exp(dot[j]) for j in others))
        positives = [j for j in others if key_labels[j] == y]
        if w <= 0 or not positives:
            continue
        total += w * -sum(dot[j] - log_denominator for j in positives) / len(positives)
        weight_sum += w
    return total / weight_sum


def test_supcon_matches_direct_formula_with_weights_and_bank():
    t = 0.5
    views = [[_unit(0), _unit(30)], [_unit(90), _unit(200)]]  # N=2 samples × V=2 views
    features = torch.tensor(views, dtype=torch.float64)
    labels = torch.tensor([0, 1])
    anchors = [views[0][0], views[1][0], views[0][1], views[1][1]]  # view-major order
    anchor_labels = [0, 1, 0, 1]
    loss = SupConLoss(temperature=t, base_temperature=t)
    expected = _direct_supcon(anchors, anchor_labels, [1, 1, 1, 1], anchors, anchor_labels, t)
    assert loss(features, labels).item() == pytest.approx(expected, rel=1e-5)

    # sample 1 weighted 0: only the anchors of sample 0 count (its views stay contrast samples)
    expected_w = _direct_supcon(anchors, anchor_labels, [1, 0, 1, 0], anchors, anchor_labels, t)
    assert loss(features, labels, weights=torch.tensor([1.0, 0.0])).item() == pytest.approx(expected_w, rel=1e-5)

    bank = [_unit(100), _unit(10)]
    bank_labels = [1, 0]
    expected_b = _direct_supcon(anchors, anchor_labels, [1, 1, 1, 1], anchors + bank, anchor_labels + bank_labels, t)
    got = loss(features, labels, bank_features=torch.tensor(bank), bank_labels=torch.tensor(bank_labels))
    assert got.item() == pytest.approx(expected_b, rel=1e-5)
    # empty bank slots (label −1) change nothing
    got_padded = loss(features, labels, bank_features=torch.tensor(bank + [_unit(45)]),
                      bank_labels=torch.tensor(bank_labels + [-1]))
    assert got_padded.item() == pytest.approx(expected_b, rel=1e-5)


def test_supcon_gradient_matches_numerical_gradient():
    gen = torch.Generator().manual_seed(0)
    anchors = F.normalize(torch.randn(7, 4, dtype=torch.float64, generator=gen), dim=1).requires_grad_()
    bank = F.normalize(torch.randn(3, 4, dtype=torch.float64, generator=gen), dim=1)
    labels, bank_labels = torch.tensor([0, 1, 0, 2, 1, -1, 0]), torch.tensor([1, -1, 2])
    weights = torch.rand(7, dtype=torch.float64, generator=gen)
    for extra in ({}, {"bank_features": bank, "bank_labels": bank_labels}):
        assert torch.autograd.gradcheck(
            lambda a: weighted_supcon(a, labels, weights, temperature=0.5, base_temperature=0.5, num_classes=3,
                                      **extra), (anchors,))


def test_supcon_runs_in_float32_under_autocast():
    features = F.normalize(torch.randn(6, 2, 16), dim=2).bfloat16()
    labels = torch.tensor([0, 1, 0, 1, 1, 0])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = SupConLoss()(features, labels)
    assert mixed.dtype == torch.float32
    assert mixed.item() == pytest.approx(SupConLoss()(features.float(), labels).item(), rel=1e-6)


def test_supcon_returns_connected_zero_when_no_anchor_qualifies():
    features = F.normalize(torch.randn(3, 1, 4), dim=2).requires_grad_()
    loss = SupConLoss()(features, torch.tensor([0, 1, 2]))  # one view, all labels distinct: no positives
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.isfinite(features.grad).all()


# ---------------------------------------------------------------------------------------------- pixel contrast
def _blob_batch(batch=2, size=32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    embed = F.normalize(torch.randn(batch, 8, size // 4, size // 4, generator=gen), dim=1)
    labels = torch.zeros(batch, size, size, dtype=torch.long)
    labels[:, 8:20, 8:24] = 1
    labels[:, :, :4] = -1
    predict = labels.clamp_min(0)
    predict[:, 4:12, :] = 1  # some hard pixels of both classes
    return embed, labels, predict


def test_sampling_counts_half_hard_half_easy_with_fill():
    labels = torch.zeros(1, 4, 5, dtype=torch.long)  # 20 pixels of class 0 in one image, class 1 absent
    predict = torch.zeros_like(labels)
    predict[0, 0, :2] = 1  # 2 hard pixels, 18 easy
    index, anchor_labels = sample_pixel_anchors(labels, predict, num_classes=2, max_samples=8, max_views=8,
                                                min_pixels=1)
    hard = (predict.reshape(-1) != labels.reshape(-1))[index]
    assert index.numel() == 8 and int(hard.sum()) == 2  # hard is short: 2 hard + 6 easy
    assert anchor_labels.tolist() == [0] * 8 and len(set(index.tolist())) == 8
    # min_pixels above the class size drops the pair
    index, _ = sample_pixel_anchors(labels, predict, 2, 8, 8, min_pixels=21)
    assert index.numel() == 0


def test_pixel_contrast_ignores_ignored_pixels():
    embed, labels, predict = _blob_batch()
    loss = PixelContrastLoss(temperature=0.1, max_samples=64, max_views=16, min_pixels=2)
    reference = loss(embed, labels, predict, generator=torch.Generator().manual_seed(1))
    perturbed = embed.clone()
    perturbed[:, :, :, :1] = F.normalize(torch.randn_like(perturbed[:, :, :, :1]), dim=1)  # only ignored columns
    again = loss(perturbed, labels, predict, generator=torch.Generator().manual_seed(1))
    assert again.item() == pytest.approx(reference.item(), abs=1e-6)
    assert reference.item() > 0


def test_pixel_contrast_all_ignored_is_zero_with_gradient_path():
    embed, labels, predict = _blob_batch()
    embed.requires_grad_()
    loss = PixelContrastLoss(min_pixels=2)(embed, torch.full_like(labels, -1), predict)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert embed.grad is not None and torch.isfinite(embed.grad).all()


def test_pixel_contrast_equals_supcon_of_sampled_anchors_and_bank_forms_agree():
    embed, labels, predict = _blob_batch()
    criterion = PixelContrastLoss(temperature=0.1, max_samples=64, max_views=16, min_pixels=2)
    loss = criterion(embed, labels, predict, generator=torch.Generator().manual_seed(3))
    feats, anchor_labels = criterion.last_anchors
    # 4 (image, class) pairs → n_view = min(64 // 4, 16) = 16; the lesion has only 3×4 pixels at 1/4 scale
    assert anchor_labels.tolist() == ([0] * 16 + [1] * 12) * 2 and not feats.requires_grad
    direct = SupConLoss(0.1, 0.1)(feats.unsqueeze(1), anchor_labels)
    assert loss.item() == pytest.approx(direct.item(), rel=1e-5)

    bank = MemoryBank(2, 20, 8)
    bank.enqueue(feats, anchor_labels)
    with_bank = criterion(embed, labels, predict, bank=bank, generator=torch.Generator().manual_seed(3))
    with_tuple = criterion(embed, labels, predict, bank=bank.features(),
                           generator=torch.Generator().manual_seed(3))
    assert with_bank.item() == pytest.approx(with_tuple.item(), rel=1e-5)
    assert with_bank.item() != pytest.approx(loss.item())

    # the trainer enqueues the new anchors before it calls backward: that must not break the saved bank
    embed.requires_grad_()
    loss = criterion(embed, labels, predict, bank=bank)
    bank.enqueue(*criterion.last_anchors)
    loss.backward()
    assert torch.isfinite(embed.grad).all()


# ------------------------------------------------------------------------------------- consistency, supervised
def test_inter_task_consistency():
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    assert inter_task_consistency(a, a).item() == pytest.approx(0.0, abs=1e-6)
    assert inter_task_consistency(a, -a).item() == pytest.approx(2.0)
    assert inter_task_consistency(a, torch.tensor([[0.0, 1.0], [3.0, 3.0]])).item() == pytest.approx(
        (1.0 + (1 - math.sqrt(0.5))) / 2)


def test_seg_supervised_loss_by_hand():
    logits = torch.tensor([[[[2.0, 0.0]], [[0.0, 1.0]]]])  # B=1, 2 classes, 1×2 pixels
    mask = torch.tensor([[[0, 1]]])
    p1 = [1 / (1 + math.exp(2)), 1 / (1 + math.exp(-1))]  # lesion probabilities
    ce = (-math.log(1 - p1[0]) - math.log(p1[1])) / 2
    dice = 2 * p1[1] / (sum(p1) + 1)
    assert seg_supervised_loss(logits, mask).item() == pytest.approx(0.5 * (ce + 1 - dice), rel=1e-5)


def test_masked_dice_counts_only_kept_pixels():
    logits = torch.randn(2, 2, 4, 4)
    pseudo = torch.randint(0, 2, (2, 4, 4))
    pseudo[0, 0, 0] = 1
    keep = torch.rand(2, 4, 4) > 0.4
    keep[0, 0, 0] = True
    changed = logits.clone()
    changed[:, :, ~keep[0]] = 5.0  # only where not kept (same mask for both images)
    keep[1] = keep[0]
    assert masked_dice_loss(logits, pseudo, keep).item() == pytest.approx(
        masked_dice_loss(changed, pseudo, keep).item(), rel=1e-6)
    p1 = logits.softmax(1)[:, 1][keep]
    t = pseudo[keep].float()
    expected = 1 - 2 * (p1 * t).sum() / (p1.sum() + t.sum())
    assert masked_dice_loss(logits, pseudo, keep).item() == pytest.approx(expected.item(), rel=1e-5)


def test_masked_cross_entropy_is_mean_over_all_samples():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    pseudo = torch.tensor([0, 0, 1])
    keep = torch.tensor([True, False, True])
    ce = [math.log(1 + math.exp(-2)), math.log(1 + math.exp(1)), math.log(2)]
    assert masked_cross_entropy(logits, pseudo, keep).item() == pytest.approx((ce[0] + ce[2]) / 3, rel=1e-6)
