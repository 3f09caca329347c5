"""``freematch`` (Code/methods/freematch.py, Code/methods/thresholds/self_adaptive.py) by value: the threshold update
of a hand-computed batch, the mask, the fairness term on a tiny batch, the step's total on a stub network, the state
through a checkpoint round trip, and 2 iterations on the phantom.

The stub's malignancy logit is ``s·mean(x)`` (benign 0) and its lesion logit ``s·x`` per pixel (background 0)."""
import math

import pytest
import torch

from Code.engine.cli import main as train_main
from Code.engine.config import load_config
from Code.errors import UserError
from Code.losses import masked_cross_entropy
from Code.methods import build_method
from Code.methods.freematch import fairness_loss
from Code.methods.thresholds import SelfAdaptiveThreshold
from helpers import SMOKE_CONFIG
from stubs import ScaleStub

pytestmark = pytest.mark.usefixtures("single_thread")

PROBS = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])


Stub = ScaleStub


def _config(**freematch):
    return load_config(None, [{"method": "freematch", "train": {"iters": 100}, "freematch": freematch}])


def test_defaults_are_the_papers():
    settings = load_config(None, [{"method": "freematch"}])["freematch"]
    assert settings == {"teacher": "joint", "momentum": 0.999, "unsup_weight": 1.0, "fairness_weight": 0.001}


def test_threshold_update_and_mask_by_value():
    """λ = 0.5, one batch: τ = 0.5·1/2 + 0.5·mean(0.9, 0.8, 0.6); p̃ = 0.5·1/2 + 0.5·(1.7/3, 1.3/3); h = 0.5·1/2 +
    0.5·(2/3, 1/3); τ(c) = p̃(c)/max p̃ · τ. Mutations checked: the EMA frozen (no update), the update after the
    mask, MaxNorm left out, the histogram taken from the probabilities instead of the argmax, >= instead of >."""
    policy = SelfAdaptiveThreshold(2, momentum=0.5)
    assert policy.tau.item() == pytest.approx(0.5) and policy.p_tilde.tolist() == [0.5, 0.5]
    pseudo, keep, stats = policy.select(PROBS)
    tau = 0.25 + 0.5 * 2.3 / 3
    p_tilde = [0.25 + 0.5 * 1.7 / 3, 0.25 + 0.5 * 1.3 / 3]
    assert policy.tau.item() == pytest.approx(tau)
    assert policy.p_tilde.tolist() == pytest.approx(p_tilde)
    assert policy.hist.tolist() == pytest.approx([0.25 + 0.5 * 2 / 3, 0.25 + 0.5 / 3])
    thresholds = [tau, p_tilde[1] / p_tilde[0] * tau]  # 0.6333, 0.5542
    assert stats["threshold_0"].item() == pytest.approx(thresholds[0])
    assert stats["threshold_1"].item() == pytest.approx(thresholds[1])
    assert pseudo.tolist() == [0, 1, 0] and keep.tolist() == [True, True, False]  # 0.6 < 0.6333
    policy.select(PROBS)  # the recursion: τ_2 = 0.5·τ_1 + 0.5·mean max
    assert policy.tau.item() == pytest.approx(0.5 * tau + 0.5 * 2.3 / 3)
    # strictly above: a confidence equal to its threshold is not kept
    edge = SelfAdaptiveThreshold(2, momentum=0.0)
    assert edge.select(torch.tensor([[0.7, 0.3], [0.7, 0.3]]))[1].tolist() == [False, False]


def test_fairness_term_by_value():
    """Strong probabilities (0.7, 0.3), (0.4, 0.6), (0.8, 0.2), (0.1, 0.9), the last not kept: p̄ = (1.9, 1.1)/4,
    h̄ = (2, 1)/4, b = SumNorm(0.95, 1.1); a = SumNorm(0.6/0.7, 0.4/0.3); L_f = Σ a·log b. Mutations checked: the sign
    (cross entropy instead of its negative), p̄ over all images, h̄ not divided out, a without h_t."""
    probs = torch.tensor([[0.7, 0.3], [0.4, 0.6], [0.8, 0.2], [0.1, 0.9]])
    logits = probs.log().requires_grad_(True)
    keep = torch.tensor([True, True, True, False])
    loss = fairness_loss(logits, keep, torch.tensor([0.6, 0.4]), torch.tensor([0.7, 0.3]))
    a = torch.tensor([0.6 / 0.7, 0.4 / 0.3])
    a = a / a.sum()
    b = torch.tensor([0.95, 1.1]) / 2.05
    assert loss.item() == pytest.approx((a * b.log()).sum().item(), rel=1e-5)
    loss.backward()
    assert logits.grad[3].abs().max() == 0 and logits.grad[:3].abs().max() > 0  # only kept strong views
    # one class kept only, or nothing kept: 0 and a finite gradient
    for mask in ([True, False, True, False], [False] * 4):
        logits = probs.log().requires_grad_(True)
        value = fairness_loss(logits, torch.tensor(mask), torch.tensor([0.6, 0.4]), torch.tensor([0.7, 0.3]))
        value.backward()
        assert value.item() == 0.0 and torch.isfinite(logits.grad).all()


def _batch(seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 1, 6, 6, generator=gen)
    weak = torch.randn(4, 1, 6, 6, generator=gen) + torch.tensor([-1.5, 2.0, 0.3, 1.0]).view(4, 1, 1, 1)
    strong = weak + 0.3 * torch.randn(4, 1, 6, 6, generator=gen)
    return (x, (x[:, 0] > 0).long(), torch.tensor([0, 1])), (weak, strong)


def test_step_total_is_supervised_plus_unsup_plus_fairness():
    """The student labels its own weak view (joint); L = seg.w·seg_sup + cls.w·(cls_sup + w_u·L_u + w_f·L_f).
    Mutations checked: the fairness term left out of the total, w_u not applied, the weak view's labels taken from
    the strong view."""
    config = _config(momentum=0.0, unsup_weight=2.0, fairness_weight=0.5)
    student = Stub()
    method = build_method(config, torch.device("cpu"), student)
    labeled, (weak, strong) = _batch()
    total, logs, vis = method.step(student, labeled, (weak, strong), 5)
    weak_logits, strong_logits = student(weak)["cls_logits"], student(strong)["cls_logits"]
    probs = weak_logits.softmax(1)  # momentum 0: τ = mean max, p̃ = mean probs
    conf, pseudo = probs.max(1)
    mean_p = probs.mean(0)
    keep = conf > (mean_p / mean_p.max() * conf.mean())[pseudo]
    assert vis["cls_keep"].tolist() == keep.tolist() and keep.any() and pseudo.unique().numel() == 2
    unsup = masked_cross_entropy(strong_logits, pseudo, keep)
    hist = torch.bincount(pseudo, minlength=2).float() / 4
    fair = fairness_loss(strong_logits, keep, mean_p, hist)
    assert logs["cls_unsup"].item() == pytest.approx(unsup.item(), rel=1e-5)
    assert logs["cls_fairness"].item() == pytest.approx(fair.item(), rel=1e-5)
    assert fair.item() != 0.0
    supervised = 0.5 * logs["seg_sup"].item() + 1.1 * logs["cls_sup"].item()
    assert total.item() == pytest.approx(supervised + 1.1 * (2.0 * unsup.item() + 0.5 * fair.item()), rel=1e-5)
    assert "seg_unsup" not in logs and not vis["keep"].any()  # segmentation: the supervised term only


def test_state_survives_a_checkpoint_round_trip(tmp_path):
    """τ_t, p̃_t and h_t go through torch.save/load and the next step's thresholds match. Mutations checked: a buffer
    left out of the state (a plain attribute), load_state_dict ignoring the state."""
    config = _config()
    student = Stub()
    method = build_method(config, torch.device("cpu"), student)
    labeled, unlabeled = _batch()
    for step in range(3):
        method.step(student, labeled, unlabeled, step)
    torch.save({"method": method.state_dict()}, tmp_path / "latest.pt")
    state = torch.load(tmp_path / "latest.pt", weights_only=False)["method"]
    assert set(state["thresholds"]) == {"tau", "p_tilde", "hist"}
    resumed = build_method(config, torch.device("cpu"), Stub())
    resumed.load_state_dict(state)
    for name in ("tau", "p_tilde", "hist"):
        assert torch.equal(getattr(resumed.thresholds, name), getattr(method.thresholds, name))
    assert not torch.equal(resumed.thresholds.tau, torch.tensor(0.5))
    _, logs_a, _ = method.step(student, labeled, unlabeled, 3)
    _, logs_b, _ = resumed.step(student, labeled, unlabeled, 3)
    assert logs_a["cls_tau"].item() == logs_b["cls_tau"].item()
    assert logs_a["cls_threshold_1"].item() == logs_b["cls_threshold_1"].item()
    with pytest.raises(UserError, match="FreeMatch thresholds"):
        resumed.load_state_dict({"teacher": {}})


def test_bad_teacher_setting_is_named():
    with pytest.raises(UserError, match="freematch.teacher"):
        _config(teacher="student")


@pytest.mark.slow
def test_freematch_trains_two_iterations_on_the_phantom(phantom_split, tmp_path):
    """``--method freematch`` end to end (classification entry): 2 iterations, the thresholds saved and moved."""
    out = tmp_path / "run"
    argv = ["--config", str(SMOKE_CONFIG), "--data", str(phantom_split), "--labels", "4", "--out", str(out),
            "--device", "cpu", "--method", "freematch", "--set", "train.iters=2"]
    assert train_main(argv, task="cls") == 0
    latest = torch.load(out / "checkpoints" / "latest.pt", weights_only=False)
    assert latest["step"] == 2 and latest["config"]["method"] == "freematch"
    assert set(latest["method"]) == {"thresholds"}
    assert not math.isclose(latest["method"]["thresholds"]["tau"].item(), 0.5)


def test_ema_teacher_option_labels_the_weak_view_and_is_saved():
    """``freematch.teacher: ema``: the EMA copy labels the weak view and is part of the state. Mutation checked:
    the teacher not used by the step (the student's own labels)."""
    config = _config(teacher="ema", momentum=0.0)
    student = Stub()
    method = build_method(config, torch.device("cpu"), student)
    with torch.no_grad():
        method.teacher.model.s.fill_(-1.0)  # the teacher's malignancy logit is the student's negated
    labeled, (weak, strong) = _batch()
    _, _, vis = method.step(student, labeled, (weak, strong), 0)
    assert torch.allclose(vis["cls_probs"], (-student(weak)["cls_logits"]).softmax(1).detach())
    assert set(method.state_dict()) == {"thresholds", "teacher"}
    with pytest.raises(UserError, match="EMA teacher"):
        method.load_state_dict({"thresholds": method.state_dict()["thresholds"]})
