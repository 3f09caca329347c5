"""Teachers, pool priors and pseudo-label diagnostics (the real-data issue), asserted by value.

The batch-dependence test is the CI guard of docs/design.md, "Teachers": a tiny network
learns a class that is a global brightness shift (the extreme case of what BatchNorm over one batch removes), then
labels an imbalanced unlabeled pool (25 % malignant) whose batches are as a sampler may draw them: two of three
all-benign. The reference's train-mode teacher calls most of an all-benign batch malignant; an eval-mode or EMA
teacher does not.
"""
import math

import pytest
import torch
import torch.nn.functional as F

from Code.engine.builders import build_model
from Code.engine.config import load_config
from Code.engine.diagnostics import PseudoLabelMonitor, pseudo_label_counts, ratios
from Code.methods.terms import forward_views
from Code.engine.teacher import EMATeacher
from Code.methods.thresholds import PoolPrior, adjust_to_prior, em_prior

pytestmark = pytest.mark.usefixtures("single_thread")
ROOT_SMOKE = "configs/smoke.yaml"


def _images(labels, gen, size=32):
    base = torch.where(torch.as_tensor(labels)[:, None, None, None].bool(), 0.6, -0.6)
    return base + 0.3 * torch.randn(len(labels), 1, size, size, generator=gen)


@pytest.fixture(scope="module")
def brightness_model():
    """A tiny HermesNet trained (30 Adam steps, ~5 s) to call bright images malignant."""
    torch.manual_seed(0)
    model = build_model(load_config(ROOT_SMOKE, [{"data": {"size": 32}}]))
    gen = torch.Generator().manual_seed(1)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    labels = torch.tensor([0, 1] * 4)
    for _ in range(30):
        loss = F.cross_entropy(model(_images(labels, gen))["cls_logits"], labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.train()
    return model


@pytest.mark.parametrize("teacher, unbiased", [("train", False), ("eval", True), ("ema", True), ("joint", False)])
def test_teacher_share_on_an_imbalanced_pool(brightness_model, teacher, unbiased):
    """The teacher's malignant share on a 25 %-malignant pool is within 10 points of the truth for ``eval`` and
    ``ema`` and not for the reference's ``train`` — nor for ``joint`` when unlabeled views fill 2/3 of the batch.
    Mutation checked: the ``eval`` branch of forward_views left in train mode (the eval case then fails)."""
    gen = torch.Generator().manual_seed(2)
    pool = torch.tensor([0] * 16 + [0, 0, 1, 1, 1, 1, 1, 1])
    x_pool = _images(pool, gen)
    ema = EMATeacher(brightness_model, decay=0.0) if teacher == "ema" else None
    preds = []
    for b in range(3):
        weak = x_pool[8 * b: 8 * (b + 1)]
        _, out_w, _ = forward_views(brightness_model, _images(torch.tensor([0, 1] * 4), gen), weak, weak, teacher, ema)
        preds.append(out_w["cls_logits"].argmax(1))
    share = torch.cat(preds).float().mean().item()
    assert brightness_model.training  # the student's mode is restored
    assert (abs(share - 0.25) <= 0.10) == unbiased, share


def test_ema_update_by_hand():
    """θ_t ← d(t)θ_t + (1 − d(t))θ_s with d(t) = min(d, (1+t)/(10+t)); integer buffers copied.
    Mutations checked: swapped weights (d on the student); no decay ramp."""
    student = torch.nn.Sequential(torch.nn.Linear(2, 1), torch.nn.BatchNorm1d(1))
    ema = EMATeacher(student, decay=0.99)
    before = ema.model[0].weight.clone()
    with torch.no_grad():
        student[0].weight.add_(1.0)
        student[1].num_batches_tracked.fill_(7)
    ema.update(student, step=0)  # d(0) = min(0.99, 1/10) = 0.1
    assert torch.allclose(ema.model[0].weight, 0.1 * before + 0.9 * student[0].weight)
    assert ema.model[1].num_batches_tracked.item() == 7
    assert ema.decay_at(1000) == 0.99 and ema.decay_at(0) == pytest.approx(0.1)
    ema.train()
    assert not ema.model.training and not any(p.requires_grad for p in ema.model.parameters())


def test_em_prior_and_adjustment_by_hand():
    """Mutations checked: adjustment multiplying by π_s/π; the M step not renormalised."""
    one_hot = torch.tensor([[1.0, 0.0]] * 3 + [[0.0, 1.0]])
    assert torch.allclose(em_prior(one_hot, torch.tensor([0.5, 0.5])), torch.tensor([0.75, 0.25]), atol=1e-6)
    flat = torch.full((5, 2), 0.5)
    assert torch.allclose(em_prior(flat, torch.tensor([0.5, 0.5])), torch.tensor([0.5, 0.5]))
    adjusted = adjust_to_prior(torch.tensor([[0.8, 0.2], [0.5, 0.5]]), torch.tensor([0.75, 0.25]),
                               torch.tensor([0.5, 0.5]))
    assert torch.allclose(adjusted, torch.tensor([[12 / 13, 1 / 13], [0.75, 0.25]]))


def test_pool_prior_running_average():
    """First batch initialises, later ones blend with the momentum. Mutation checked: blending from uniform."""
    prior = PoolPrior(2, momentum=0.5)
    source = torch.tensor([0.5, 0.5])
    prior.update(torch.tensor([[1.0, 0.0]] * 3 + [[0.0, 1.0]]), source)
    assert torch.allclose(prior.prior, torch.tensor([0.75, 0.25]), atol=1e-6)
    prior.update(torch.tensor([[0.0, 1.0]] * 4), source)  # EM estimate (1e-3 floor) ≈ (0.001, 0.999)
    assert prior.prior[1].item() == pytest.approx(0.5 * 0.25 + 0.5 * 0.999 / 1.0, abs=1e-3)
    assert prior.seen.item() == 2


def test_diagnostic_counts_by_hand():
    """Mutations checked: precision over all kept pixels instead of kept lesion pixels; kept share per class
    divided by all images."""
    vis = {"pseudo": torch.tensor([[[1, 1], [0, 0]]]), "keep": torch.tensor([[[True, True], [True, False]]]),
           "cls_pseudo": torch.tensor([1, 0, 0, 1]), "cls_keep": torch.tensor([True, True, False, False])}
    truth = torch.tensor([[[1, 0], [0, 1]]])
    counts = pseudo_label_counts(vis, truth, torch.tensor([1, 1, 0, 1]))
    r = ratios({k: v.item() for k, v in counts.items()})
    assert r["seg_keep"] == 0.75 and r["seg_kept_precision"] == 0.5
    assert r["seg_kept_dice"] == pytest.approx(2 * 1 / (2 + 1)) and r["seg_kept_accuracy"] == pytest.approx(2 / 3)
    assert r["cls_keep"] == 0.5 and r["cls_pred_share_1"] == 0.5 and r["cls_true_share_1"] == 0.75
    assert r["cls_kept_share_1"] == 0.5 and r["cls_kept_accuracy_1"] == 1.0 and r["cls_kept_accuracy_0"] == 0.0
    assert r["cls_accuracy"] == 0.75
    monitor = PseudoLabelMonitor(None)
    monitor.add(vis, truth, torch.tensor([1, 1, 0, 1]))
    monitor.add(vis, truth, torch.tensor([0, 0, 0, 0]))
    flushed = monitor.flush(10)
    assert flushed["cls_true_share_1"] == pytest.approx(3 / 8) and math.isnan(ratios(
        {k: 0.0 for k in counts})["seg_keep"])


def _fit(split, run_dir, shuffle_truth=None, diagnostics=True):
    from Code.engine.trainer import Trainer

    config = load_config(ROOT_SMOKE, [{"data": {"split": str(split), "labels": 4},
                                       "train": {"iters": 3}, "eval": {"every": 3},
                                       "log": {"pseudo_diagnostics": diagnostics}}])
    trainer = Trainer(config, run_dir, torch.device("cpu"))
    dataset = trainer.unlabeled_stream.dataset
    if shuffle_truth is not None:
        perm = torch.randperm(len(dataset.labels), generator=torch.Generator().manual_seed(shuffle_truth)).tolist()
        dataset.labels = [1 - dataset.labels[i] for i in perm]
        dataset._masks = [1 - dataset._masks[i] for i in perm]
    trainer.fit()
    return trainer


def test_unlabeled_truth_never_reaches_the_losses(phantom_split, tmp_path):
    """Same weights and metrics with the unlabeled truth as is, shuffled and inverted, or not loaded at all; the
    diagnostics themselves do see the change. Mutation checked: the method step fed the 4-item unlabeled batch with
    the truth mask as the strong view."""
    runs = [_fit(phantom_split, tmp_path / "a"), _fit(phantom_split, tmp_path / "b", shuffle_truth=0),
            _fit(phantom_split, tmp_path / "c", diagnostics=False)]
    reference = runs[0].model.state_dict()
    for other in runs[1:]:
        for key, value in other.model.state_dict().items():
            assert torch.equal(value, reference[key]), key
    assert (tmp_path / "a" / "metrics.csv").read_text() == (tmp_path / "c" / "metrics.csv").read_text()
    assert not (tmp_path / "c" / "pseudo_labels.csv").exists()
    rows_a = (tmp_path / "a" / "pseudo_labels.csv").read_text().splitlines()
    rows_b = (tmp_path / "b" / "pseudo_labels.csv").read_text().splitlines()
    assert rows_a[0].startswith("step,seg_keep") and len(rows_a) == 4 and rows_a[1:] != rows_b[1:]
