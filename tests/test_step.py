"""The training step asserted by value (issue: tests that would catch a broken method).

A stub network whose outputs are simple functions of its input lets each test choose the weak and strong views'
predictions exactly: lesion logit = ``s·x`` per pixel (background logit 0), malignancy logit = ``s·mean(x)``,
so a weak pixel of value +5 is a confident lesion pseudo-label, −5 a confident background one, 0 not kept.
Every test names the mutation of ``Code/methods/`` (the method modules, or the module it guards) that it was checked against.
"""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from Code.engine.config import load_config
from Code.methods import build_method
from Code.methods.terms import combine_terms, ramp_weights

pytestmark = pytest.mark.usefixtures("single_thread")
H = 8  # stub image side


class StubNet(nn.Module):
    """Outputs chosen by the input: see the module docstring. One parameter ``s`` (=1) keeps a graph."""

    def __init__(self):
        super().__init__()
        self.s = nn.Parameter(torch.ones(()))

    def forward(self, x):
        lesion = self.s * x[:, :1]
        mean = lesion.mean(dim=(1, 2, 3))
        pix = F.normalize(torch.cat([lesion, torch.ones_like(lesion), -lesion], 1), dim=1)
        img = F.normalize(torch.stack([mean, torch.ones_like(mean), mean.sin()], 1), dim=1)
        return {"seg_logits": torch.cat([torch.zeros_like(lesion), lesion], 1),
                "cls_logits": torch.stack([torch.zeros_like(mean), mean], 1),
                "pixel_embed": pix, "image_embed": img,
                "consist_seg": torch.stack([mean, torch.ones_like(mean)], 1) * self.s,
                "consist_cls": torch.stack([torch.ones_like(mean), mean.cos()], 1) * self.s}


def make_config(method="hermes", **sets):
    overrides = [{"method": method, "train": {"iters": 100}, "model": {"pixel_embed_dim": 3, "image_embed_dim": 3},
                  "contrast": {"image_bank_size": 8, "pixel_bank_size": 16, "min_pixels": 1, "max_samples": 32,
                               "max_views": 4},
                  "ssl": {"seg_unsup_loss": "ce", "contrast_warmup": 0.0, "contrast_rampup": 0.0,
                          "unsup_rampup": 0.0, "teacher": "joint"}}]
    for key, value in sets.items():
        section, name = key.split("__")
        overrides.append({section: {name: value}})
    return load_config(None, overrides)


def views(weak_values, strong=None, seed=0):
    """Weak images B×1×H×H from per-image constant blocks, strong = random unless given."""
    weak = torch.stack([torch.as_tensor(v, dtype=torch.float32).expand(1, H, H).clone() for v in weak_values])
    if strong is None:
        strong = torch.randn(weak.shape, generator=torch.Generator().manual_seed(seed))
    return weak, strong


def labeled_batch(b=2):
    x = torch.randn(b, 1, H, H, generator=torch.Generator().manual_seed(5))
    mask = (x[:, 0] > 0).long()
    return x, mask, torch.tensor([0, 1] * (b // 2))


def step_terms(config, weak, strong, step=50, model=None, ctx=None, labeled=None):
    ctx = ctx or build_method(config, torch.device("cpu"))
    model = model or StubNet()
    total, logs, vis = ctx.step(model, labeled or labeled_batch(), (weak, strong), step)
    return total, logs, vis, ctx


# ------------------------------------------------------------------------------------------- combine_terms / ramps
def test_combine_terms_weights_and_ramps_by_hand():
    """Mutations checked: drop ρ_u from seg_unsup; swap the pixel/image contrast weights; ramp consistency on
    unsup_rampup; start contrast before its warm-up."""
    config = make_config(loss__seg=0.5, loss__cls=1.1, loss__seg_unsup=0.3, loss__pixel_contrast=0.8,
                         loss__cls_unsup=0.7, loss__image_contrast=0.2, loss__consistency=2.0,
                         ssl__unsup_rampup=0.5, ssl__contrast_warmup=0.2, ssl__contrast_rampup=0.2,
                         ssl__consistency_rampup=1.0)
    terms = {k: torch.tensor(v) for k, v in dict(seg_sup=1.0, seg_unsup=2.0, pixel_contrast=3.0, consistency=4.0,
                                                 cls_sup=5.0, cls_unsup=6.0, image_contrast=7.0).items()}
    ru, rc, ri = math.exp(-5 * 0.4 ** 2), math.exp(-5 * 0.5 ** 2), math.exp(-5 * 0.7 ** 2)  # t = 30 of 100
    expected = (0.5 * (1 + ru * 0.3 * 2 + rc * 0.8 * 3) + 2.0 * ri * 4
                + 1.1 * (5 + ru * 0.7 * 6 + rc * 0.2 * 7))
    assert ramp_weights(config, 30) == pytest.approx({"unsup": ru, "contrast": rc, "consistency": ri})
    assert combine_terms(terms, config, 30).item() == pytest.approx(expected, rel=1e-6)
    before = 0.5 * (1 + math.exp(-5 * 0.8 ** 2) * 0.3 * 2) + 2.0 * math.exp(-5 * 0.9 ** 2) * 4 \
        + 1.1 * (5 + math.exp(-5 * 0.8 ** 2) * 0.7 * 6)  # t = 10 < warm-up 20: no contrast
    assert combine_terms(terms, config, 10).item() == pytest.approx(before, rel=1e-6)
    assert combine_terms({"seg_sup": torch.tensor(1.0)}, config, 30).item() == pytest.approx(0.5)


def test_schedules_scale_with_iters():
    """Mutation checked: read contrast_warmup as iterations instead of a fraction of train.iters."""
    short, long = make_config(ssl__contrast_warmup=0.25), make_config(ssl__contrast_warmup=0.25, train__iters=400)
    assert ramp_weights(short, 24)["contrast"] == 0.0 and ramp_weights(short, 25)["contrast"] == 1.0
    assert ramp_weights(long, 99)["contrast"] == 0.0 and ramp_weights(long, 100)["contrast"] == 1.0


# ------------------------------------------------------------------------------------------- pseudo-labels
def expected_seg_unsup(weak, strong):
    """Independent FixMatch CE: mean over all pixels of keep·CE(strong, ŷ_weak); keep ⇔ |weak| ≥ 5 here."""
    pseudo = (weak[:, 0] > 0).long()
    keep = weak[:, 0].abs() >= 5
    logits = torch.cat([torch.zeros_like(strong), strong], 1)
    return (F.cross_entropy(logits, pseudo, reduction="none") * keep).mean()


@pytest.mark.parametrize("teacher", ["joint", "eval", "train"])
def test_weak_pseudo_labels_drive_the_strong_loss(teacher):
    """Mutations checked: strong loss against the strong argmax; keep mask ignored (all pixels count); pseudo
    labels taken from the labeled batch; the joint teacher slicing the strong outputs as weak."""
    config = make_config(ssl__teacher=teacher)
    weak = torch.zeros(2, 1, H, H)
    weak[0, :, :4] = 5.0     # confident lesion
    weak[0, :, 4:6] = -5.0   # confident background
    weak[1, :, :, :3] = 5.0  # the rest: 0 → p = 0.5, not kept
    _, strong = views([0, 0])
    _, logs, vis, _ = step_terms(config, weak, strong)
    assert logs["seg_unsup"].item() == pytest.approx(expected_seg_unsup(weak, strong).item(), rel=1e-5)
    assert torch.equal(vis["keep"], weak[:, 0].abs() >= 5)
    flipped = -weak  # the weak prediction flips, so must the loss's target
    _, logs2, _, _ = step_terms(config, flipped, strong)
    assert logs2["seg_unsup"].item() == pytest.approx(expected_seg_unsup(flipped, strong).item(), rel=1e-5)
    assert logs2["seg_unsup"].item() != pytest.approx(logs["seg_unsup"].item())
    changed = strong.clone()
    changed[1, :, :, 3:] += 10.0  # strong pixels whose weak twin is not kept: no effect
    _, logs3, _, _ = step_terms(config, weak, changed)
    assert logs3["seg_unsup"].item() == pytest.approx(logs["seg_unsup"].item(), rel=1e-6)


def test_image_pseudo_labels_drive_cls_unsup():
    """Mutations checked: cls_unsup against the strong view's own argmax; unkept images counted."""
    config = make_config()
    weak, strong = views([6.0, 0.0, -6.0, 0.0])
    _, logs, vis, _ = step_terms(config, weak, strong)
    keep = torch.tensor([True, False, True, False])
    pseudo = torch.tensor([1, 0, 0, 0])
    assert torch.equal(vis["cls_keep"], keep) and torch.equal(vis["cls_pseudo"][keep], pseudo[keep])
    mean = strong.mean(dim=(1, 2, 3))
    logits = torch.stack([torch.zeros_like(mean), mean], 1)
    expected = (F.cross_entropy(logits, pseudo, reduction="none") * keep).mean()
    assert logs["cls_unsup"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_pixel_contrast_labels_are_mask_then_kept_pseudo():
    """Mutation checked: the integer-mask indexing bug of the reference (``t[int_mask] = -1``); labeled part
    given pseudo-labels instead of its mask."""
    config = make_config(components__image_contrast=False, components__memory_bank=False)
    weak = torch.zeros(2, 1, H, H)
    weak[0, :, :3] = 5.0
    weak[1, :, 5:] = -5.0
    _, strong = views([0, 0])
    ctx = build_method(config, torch.device("cpu"))
    seen = {}

    def record(embed, labels, predict, bank=None):
        seen["labels"] = labels.clone()
        return embed.sum() * 0.0

    ctx.pixel_loss = record
    x, mask, label = labeled_batch()
    step_terms(config, weak, strong, ctx=ctx, labeled=(x, mask, label))
    expected_strong = torch.full((2, H, H), -1, dtype=torch.long)
    expected_strong[0, :3] = 1
    expected_strong[1, 5:] = 0
    assert torch.equal(seen["labels"], torch.cat([mask, expected_strong]))


def test_image_bank_gets_labeled_and_kept_weak_only_after_warmup():
    """Mutations checked: enqueue unkept weak images; enqueue before the warm-up; enqueue strong embeddings."""
    config = make_config(ssl__contrast_warmup=0.5, components__pixel_contrast=False)
    weak, strong = views([6.0, 0.0, -6.0, 0.0])
    ctx = build_method(config, torch.device("cpu"))
    step_terms(config, weak, strong, step=10, ctx=ctx)
    assert ctx.banks["image"].filled.tolist() == [0, 0]
    x, mask, label = labeled_batch()
    _, _, _, _ = step_terms(config, weak, strong, step=60, ctx=ctx, labeled=(x, mask, label))
    feats, labels = ctx.banks["image"].features()
    model = StubNet()
    expected = torch.cat([model(x)["image_embed"], model(weak)["image_embed"][[0, 2]]]).detach()
    expected_labels = torch.cat([label, torch.tensor([1, 0])])
    order = torch.argsort(expected_labels, stable=True)
    assert torch.equal(labels, expected_labels[order])
    assert torch.allclose(feats, expected[order])


def test_image_contrast_ignores_rejected_images():
    """Mutation checked: image contrast labels = raw pseudo-labels (rejected images still anchors/positives)."""
    config = make_config(components__pixel_contrast=False, components__memory_bank=False)
    ctx = build_method(config, torch.device("cpu"))
    seen = {}
    original = ctx.supcon

    def record(feats, labels, **kw):
        seen["labels"] = labels.clone()
        return original(feats, labels, **kw)

    ctx.supcon = record
    weak, strong = views([6.0, 0.0, -6.0, 0.0])
    step_terms(config, weak, strong, ctx=ctx)
    assert seen["labels"].tolist() == [1, -1, 0, -1]


# ------------------------------------------------------------------------------------------- methods and switches
CASES = [
    ("supervised", {}, {"seg_sup", "cls_sup"}),
    ("fixmatch", {}, {"seg_sup", "cls_sup", "seg_unsup", "cls_unsup"}),
    ("hermes", {}, {"seg_sup", "cls_sup", "seg_unsup", "cls_unsup", "pixel_contrast", "image_contrast",
                    "consistency"}),
    ("hermes", {"components__pixel_contrast": False},
     {"seg_sup", "cls_sup", "seg_unsup", "cls_unsup", "image_contrast", "consistency"}),
    ("hermes", {"components__image_contrast": False},
     {"seg_sup", "cls_sup", "seg_unsup", "cls_unsup", "pixel_contrast", "consistency"}),
    ("hermes", {"components__consistency": False},
     {"seg_sup", "cls_sup", "seg_unsup", "cls_unsup", "pixel_contrast", "image_contrast"}),
]


@pytest.mark.parametrize("method, sets, terms", CASES)
def test_each_method_computes_exactly_its_terms(method, sets, terms):
    """Mutations checked: fixmatch computing contrast; an ablation switch not read."""
    config = make_config(method, **sets)
    weak, strong = views([6.0, -6.0])
    total, logs, _, _ = step_terms(config, weak, strong)
    assert {k for k in logs if k.endswith(("_sup", "_unsup", "_contrast")) or k == "consistency"} == terms
    assert total.item() == pytest.approx(combine_terms(logs, config, 50).item(), rel=1e-6)


def switches(method="hermes", **sets):
    return build_method(make_config(method, **sets), torch.device("cpu"))


def test_switch_table():
    """Mutation checked: fixmatch inheriting the Hermes threshold; memory bank on without contrast."""
    sw = switches("fixmatch", fixmatch__teacher="ema")
    assert sw.uses_unlabeled and sw.combine == "confidence" and sw.teacher_mode == "ema"
    assert not hasattr(sw, "banks") and not hasattr(sw, "image_contrast")
    assert not switches("supervised").uses_unlabeled
    assert switches(ssl__threshold="single").combine == "confidence"
    sw = switches(components__image_contrast=False, components__pixel_contrast=False)
    assert not sw.memory_bank and len(sw.banks) == 0
    assert switches(ssl__combine="or").combine == "or"


def test_consistency_modes():
    """Mutation checked: stopgrad mode letting gradient reach the classification side."""
    from Code.methods.hermes import consistency_term

    a = torch.tensor([[1.0, 0.0]], requires_grad=True)
    b = torch.tensor([[1.0, 1.0]], requires_grad=True)
    loss = consistency_term({"consist_seg": a, "consist_cls": b}, "stopgrad")
    assert loss.item() == pytest.approx(1 - 1 / math.sqrt(2))
    loss.backward()
    assert b.grad is None and a.grad is not None
    consistency_term({"consist_seg": a, "consist_cls": b}, "cosine").backward()
    assert b.grad is not None


# ------------------------------------------------------------------------------------------- the real network
REAL_CASES = [
    ("supervised", {}), ("fixmatch", {}), ("hermes", {}),
    ("hermes", {"model__shared_encoder": False}),
    ("hermes", {"ssl__seg_unsup_loss": "dice"}), ("hermes", {"ssl__seg_unsup_loss": "ce_dice"}),
    ("hermes", {"ssl__teacher": "joint"}), ("hermes", {"ssl__teacher": "eval"}), ("hermes", {"ssl__teacher": "train"}),
    ("hermes", {"ssl__prior_aware": True, "ssl__class_ratio": "pool"}),
    ("hermes", {"components__consistency_mode": "cosine", "ssl__combine": "or"}),
]


@pytest.mark.parametrize("method, sets", REAL_CASES)
def test_one_real_step_of_each_method(method, sets):
    """One step of the tiny HermesNet (smoke config) for every method and variant: finite loss, gradients reach
    the encoder and the classifier. Mutation checked: the EMA teacher path handed no teacher module
    (the method built without the student)."""
    from Code.engine.builders import build_model

    overrides = [{"method": method}]
    for key, value in sets.items():
        section, name = key.split("__")
        overrides.append({section: {name: value}})
    config = load_config("configs/smoke.yaml", overrides)
    torch.manual_seed(0)
    model = build_model(config)
    method = build_method(config, torch.device("cpu"), model)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 1, 64, 64, generator=gen)
    mask = (torch.rand(2, 64, 64, generator=gen) > 0.7).long()
    weak = torch.randn(2, 1, 64, 64, generator=gen)
    total, logs, _ = method.step(model, (x, mask, torch.tensor([0, 1])), (weak, weak + 0.1), 3)
    total.backward()
    assert torch.isfinite(total)
    grads = [p.grad for p in model.encoder.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    assert any(p.grad is not None for p in model.cls_head.parameters())
    if method == "hermes" and sets.get("ssl__prior_aware"):
        assert "cls_pool_prior_1" in logs
