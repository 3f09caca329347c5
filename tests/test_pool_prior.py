"""The class-prior estimate of the prior-aware pseudo-labels (Code/methods/thresholds/class_prior.py, pool_prior.py):
EM on a known mixture, the bound, the FIFO window, state round trip, old runs' estimator, and a simulated feedback
loop in which the old estimator collapses and the bounded window does not. Values computed by hand."""
import math

import pytest
import torch

from Code.engine.config import complete_saved_config, load_config
from Code.errors import UserError
from Code.methods.thresholds import PoolPrior, adjust_to_prior, bound_prior, em_prior

pytestmark = pytest.mark.usefixtures("single_thread")
HALF = torch.tensor([0.5, 0.5])


def mixture(n_a=60, n_b=40):
    """Two kinds of image: p(A|benign) = 0.75, p(A|malignant) = 0.25 (B the rest), so under π_s = (½, ½) the
    posteriors are (0.75, 0.25) for A and (0.25, 0.75) for B. 60 A + 40 B is the expected pool of π = (0.7, 0.3):
    P(A) = 0.7·0.75 + 0.3·0.25 = 0.6. At π = (0.7, 0.3) the E step gives w_A(0) = 0.525/0.6 = 0.875 and
    w_B(0) = 0.175/0.4 = 0.4375, whose mean 0.6·0.875 + 0.4·0.4375 = 0.7: the EM fixed point is π."""
    return torch.tensor([[0.75, 0.25]] * n_a + [[0.25, 0.75]] * n_b)


def test_em_recovers_the_prior_of_a_known_mixture():
    """Mutations checked: the E step multiplying by π_s/π; the M step over all rows of a partly valid queue."""
    assert torch.allclose(em_prior(mixture(), HALF, iters=200), torch.tensor([0.7, 0.3]), atol=1e-4)
    padded = torch.cat([mixture(), torch.tensor([[0.0, 1.0]] * 50)])  # rows a queue has not filled yet
    valid = torch.arange(150) < 100
    assert torch.allclose(em_prior(padded, HALF, iters=200, valid=valid), torch.tensor([0.7, 0.3]), atol=1e-4)
    assert torch.equal(em_prior(padded, HALF, valid=torch.zeros(150, dtype=torch.bool)), HALF)  # nothing yet: π_s


def test_bound_clamps_a_collapsed_estimate_to_exactly_the_bound():
    """π_s = (¾, ¼), prior odds ⅓; with k = 2 the odds may fall to ⅙ at most: π = (6/7, 1/7). Mutations checked:
    no clamp; the clamp at ±log k instead of ±log(k)/2; r not centred."""
    source = torch.tensor([0.75, 0.25])
    collapsed = torch.tensor([0.999, 0.001])
    assert torch.allclose(bound_prior(collapsed, source, 2.0), torch.tensor([6 / 7, 1 / 7]), atol=1e-6)
    assert torch.allclose(bound_prior(torch.tensor([0.001, 0.999]), source, 2.0), torch.tensor([0.6, 0.4]), atol=1e-6)
    inside = torch.tensor([0.7, 0.3])  # odds 3/7 = 1.29 × ⅓: within the bound, unchanged
    assert torch.allclose(bound_prior(inside, source, 2.0), inside, atol=1e-6)
    assert torch.equal(bound_prior(collapsed, source, 0.0), collapsed)  # 0: unbounded
    assert torch.allclose(bound_prior(collapsed, source, 1.0), source, atol=1e-6)  # 1: pinned to π_s
    three = bound_prior(torch.tensor([0.98, 0.01, 0.01]), torch.full((3,), 1 / 3), 4.0)
    r = three.log()  # log-ratios to a uniform π_s (up to a constant): any two classes' odds move by at most k = 4
    assert (r.max() - r.min()).item() == pytest.approx(math.log(4), abs=1e-5)
    assert r[1].item() == pytest.approx(r[2].item())
    with pytest.raises(ValueError):
        bound_prior(collapsed, source, 0.5)


def rows(*values):
    """Posteriors (1 − v, v): the malignant column tags each row."""
    return torch.tensor([[1.0 - v, v] for v in values])


def test_window_is_a_fifo_ring_buffer():
    """W = 5, batches of 3, 3, 1: rows 0-2, then 3, 4, 0, then 1. Mutations checked: ptr advanced by 1 per batch
    (ContrastiveSeg's pointer), no wrap (writing past the end), filled not capped at W."""
    prior = PoolPrior(2, window=5, max_shift=0.0)
    prior.update(rows(0.1, 0.2, 0.3), HALF)
    assert prior.queue[:, 1].tolist() == pytest.approx([0.1, 0.2, 0.3, 0.0, 0.0])
    assert (prior.ptr.item(), prior.filled.item()) == (3, 3)
    prior.update(rows(0.4, 0.5, 0.6), HALF)
    assert prior.queue[:, 1].tolist() == pytest.approx([0.6, 0.2, 0.3, 0.4, 0.5])
    assert (prior.ptr.item(), prior.filled.item()) == (1, 5)
    prior.update(rows(0.7), HALF)
    assert prior.queue[:, 1].tolist() == pytest.approx([0.6, 0.7, 0.3, 0.4, 0.5])
    assert (prior.ptr.item(), prior.filled.item(), prior.seen.item()) == (2, 5, 3)
    prior.push(rows(*[i / 10 for i in range(7)]))  # a batch larger than the window: its last W rows
    assert prior.queue[:, 1].tolist() == pytest.approx([0.5, 0.6, 0.2, 0.3, 0.4])


def test_window_estimate_is_em_over_the_filled_rows_bounded():
    """Until the queue is full, EM over the rows there; the result is bounded around the labeled prior."""
    prior = PoolPrior(2, window=8, max_shift=0.0)
    batch = rows(0.9, 0.2, 0.3)
    assert torch.allclose(prior.update(batch, HALF), em_prior(batch, HALF, iters=PoolPrior.EM_ITERS), atol=1e-6)
    bounded = PoolPrior(2, window=8, max_shift=2.0)
    collapsing = rows(0.01, 0.02, 0.01)  # EM → (0.999, 0.001)
    assert torch.allclose(bounded.update(collapsing, HALF), torch.tensor([2 / 3, 1 / 3]), atol=1e-6)


def test_state_round_trip_continues_identically():
    """A resumed PoolPrior (state_dict → fresh module) gives the same next estimate and buffers."""
    g = torch.Generator().manual_seed(0)
    batches = [torch.rand(4, 2, generator=g).softmax(1) for _ in range(5)]
    first = PoolPrior(2, window=6, max_shift=2.0)
    for batch in batches[:3]:
        first.update(batch, HALF)
    second = PoolPrior(2, window=6, max_shift=2.0)
    second.load_state_dict(first.state_dict())
    for batch in batches[3:]:
        assert torch.equal(first.update(batch, HALF), second.update(batch, HALF))
    for key, value in first.state_dict().items():
        assert torch.equal(value, second.state_dict()[key]), key


def old_config(**ssl):
    """A config as saved before prior_window / prior_max_shift existed."""
    saved = load_config("configs/smoke.yaml", [{"ssl": ssl}] if ssl else [])
    del saved["ssl"]["prior_window"], saved["ssl"]["prior_max_shift"]
    return saved


def test_old_runs_keep_the_per_batch_running_average():
    """A prior-aware config saved before prior_window / prior_max_shift completes to window 0, unbounded; its
    PoolPrior has the old buffers only (an old checkpoint loads strictly) and the old update. A run that trained
    without the pool prior gets today's defaults (the keys change nothing there, so a grid sees the same run).
    Mutations checked: ABSENT_MEANT without the two keys; the old values given to every run."""
    for ssl in ({}, {"prior_aware": False, "class_ratio": "batch"}):
        plain = complete_saved_config(old_config(**ssl))["ssl"]
        assert (plain["prior_window"], plain["prior_max_shift"]) == (256, 4.0)
    assert complete_saved_config(dict(old_config(prior_aware=True), method="supervised"))["ssl"]["prior_window"] == 256
    assert complete_saved_config(old_config(class_ratio="pool"))["ssl"]["prior_window"] == 0
    ssl = complete_saved_config(old_config(prior_aware=True))["ssl"]
    assert (ssl["prior_window"], ssl["prior_max_shift"]) == (0, 0.0)
    old = PoolPrior(2, ssl["prior_momentum"], ssl["prior_window"], ssl["prior_max_shift"])
    assert set(old.state_dict()) == {"prior", "seen"}
    batch = rows(0.9, 0.8, 0.1, 0.2)
    old.update(batch, HALF)
    old.update(rows(0.99, 0.98), HALF)
    expected = 0.99 * em_prior(batch, HALF) + 0.01 * em_prior(rows(0.99, 0.98), HALF)
    assert torch.allclose(old.prior, expected)


def test_max_shift_between_0_and_1_is_refused():
    with pytest.raises(UserError, match="ssl.prior_max_shift"):
        load_config("configs/smoke.yaml", [{"ssl": {"prior_max_shift": 0.5}}])
    with pytest.raises(UserError, match="ssl.prior_window"):
        load_config("configs/smoke.yaml", [{"ssl": {"prior_window": -1}}])


def simulate_feedback(prior, steps=300, batch=8):
    """A teacher whose log-odds bias drifts towards the prior-adjusted pseudo-labels it produced (the student
    learns them and becomes the teacher), pulled back weakly by the labeled loss; pool truth 30 % malignant,
    labeled prior ½. Returns the pool prior's malignant share per step."""
    g = torch.Generator().manual_seed(0)
    truth = (torch.rand(400, generator=g) < 0.3).float()
    score = (2 * truth - 1) + 0.8 * torch.randn(400, generator=g)
    bias, trace = torch.zeros(()), []
    logit = lambda p: torch.log(p / (1 - p))  # noqa: E731
    for _ in range(steps):
        p1 = torch.sigmoid(score[torch.randint(0, 400, (batch,), generator=g)] + bias)
        probs = torch.stack([1 - p1, p1], 1)
        pi = prior.update(probs, HALF)
        adjusted = adjust_to_prior(probs, pi, HALF)
        bias = bias + 0.15 * (logit(adjusted[:, 1].mean()) - logit(probs[:, 1].mean())) - 0.02 * bias
        trace.append(float(pi[1]))
    return trace


def test_feedback_loop_collapses_the_old_estimator_but_not_the_bounded_window():
    """The collapse of issue #23 in miniature (training-level runs are too short to reach it): the old per-batch
    running average runs away to ~0 malignant; the bounded window stays within odds × [½, 2] of the labeled prior,
    i.e. π(1) ∈ [⅓, ⅔]. Mutations checked: the bound removed (the window alone collapses too)."""
    old = simulate_feedback(PoolPrior(2, 0.99, window=0, max_shift=0.0))
    new = simulate_feedback(PoolPrior(2, 0.99, window=256, max_shift=2.0))
    assert max(old[-50:]) < 0.05
    assert all(1 / 3 - 1e-6 <= share <= 2 / 3 + 1e-6 for share in new)
    assert min(new[-50:]) > 0.3
