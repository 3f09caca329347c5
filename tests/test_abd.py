"""``abd`` (Code/methods/abd.py, abd_patches.py) by value on stub networks, two iterations on the phantom, and an
exact resume.

The stub's lesion logit is ``s·x`` per pixel (background 0) and its malignancy logit ``s·mean(x)``; it records every
batch it sees. Student f₁: s = 1; peer f₂: s = −2; teacher: s = −0.5 (its pseudo-label of u is [u < 0]).

Mutations checked (each fails a test below): network 2 mixing the weak views (or network 1 the strong ones); the
teacher's label of the strong view replaced by that of the weak view; a CPS term left out of the total or
supervised by its own network's label; cps_weight ignored; ABD-R's least confident patch taken by argmax, its
given patch by argmin; the KL branch taking the top-k patch farthest from the other view's least confident one, or
the KL's arguments swapped; the second displacement reading X¹ instead of the displaced A¹; the displaced sample
fed to network 1 only; cls_sup_2 left out of the total; the peer not copied from f₁ during pre-training (or still
copied after); the peer left out of ``state_dict``; a checkpoint without it accepted; the DDP guard removed; the
trainer not adding the peer to its optimisers; the peer's weights not restored on resume; the labeled strong view
drawing from the sample's generator before the geometry (the weak labeled sample then changes).
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from Code.data import SplitDataset
from Code.engine.cli import main as train_main
from Code.engine.config import load_config
from Code.errors import UserError
from Code.methods import abd as abd_module
from Code.methods import abd_patches as patches
from Code.methods import bcp as bcp_module
from Code.methods import build_method
from helpers import SMOKE_CONFIG
from stubs import ScaleStub as Stub

pytestmark = pytest.mark.usefixtures("single_thread")




def _method(monkeypatch, iters=100, pretrain=0.0, **abd):
    monkeypatch.setattr(abd_module, "build_peer", lambda config, device: Stub(-2.0))
    config = load_config(None, [{"method": "abd", "train": {"iters": iters},
                                 "bcp": {"pretrain_iters": pretrain}, "abd": {"grid": 2, "top_k": 2, **abd}}])
    student = Stub(1.0)
    method = build_method(config, torch.device("cpu"), student)
    with torch.no_grad():
        method.teacher.model.s.fill_(-0.5)
    return method, student


def test_patch_statistics_and_displacement_by_value():
    """Mutations checked: the confidence from the mean probability instead of the max class; patches read
    row-major in the wrong order (k = c·g + r); the displaced patch taken from ``a`` instead of ``b``."""
    probs = torch.zeros(1, 2, 4, 4)
    probs[0, 1] = torch.tensor([[0.9, 0.7, 0.5, 0.5], [0.9, 0.7, 0.5, 0.5], [0.2, 0.2, 0.6, 0.6],
                                [0.2, 0.2, 0.6, 0.6]])
    probs[0, 0] = 1 - probs[0, 1]
    conf = patches.patch_confidence(probs, 2)
    assert conf[0].tolist() == pytest.approx([0.8, 0.5, 0.8, 0.6])
    means = patches.patch_means(probs, 2)
    assert means.shape == (1, 4, 2) and means[0, :, 1].tolist() == pytest.approx([0.8, 0.5, 0.2, 0.6])
    a, b = torch.arange(16.0).reshape(1, 1, 4, 4), -torch.arange(16.0).reshape(1, 1, 4, 4)
    out = patches.displace(a, b, torch.tensor([1]), torch.tensor([2]), 2)  # patch (0, 1) ← patch (1, 0) of b
    assert out[0, 0].tolist() == [[0, 1, -8, -9], [4, 5, -12, -13], [8, 9, 10, 11], [12, 13, 14, 15]]


def test_reliable_choice_by_value():
    """Image 0 picks by argmax, image 1 by KL among its top-2 (hand-made confidences and mean logits)."""
    c1 = torch.tensor([[0.9, 0.2, 0.8, 0.5], [0.9, 0.8, 0.2, 0.5]])
    c2 = torch.tensor([[0.4, 0.95, 0.1, 0.7], [0.3, 0.6, 0.9, 0.85]])
    z1, z2 = torch.zeros(2, 4, 2), torch.zeros(2, 4, 2)
    z1[1, :, 1] = torch.tensor([4.0, -3.0, -2.2, 1.0])  # f₁: top-2 patches 0 and 1, least confident b = 2
    z2[1, :, 1] = torch.tensor([-2.5, 0.0, -4.6, -0.85])  # f₂: top-2 patches 2 and 3, least confident d = 0
    # c: softmax of z = −2.2 (lesion 0.10) is closer to −0.85 (0.30) than to −4.6 (0.01) in KL(p_b ‖ p_j), though
    # not in the reversed KL(p_j ‖ p_b); a: z = −2.5 is closer to −3 (patch 1) than to 4 (patch 0)
    choice = patches.reliable_choice(c1, c2, z1, z2, 2, torch.tensor([False, True]))
    assert choice["b"].tolist() == [1, 2] and choice["d"].tolist() == [2, 0]
    assert choice["a"].tolist() == [0, 1] and choice["c"].tolist() == [1, 3]


def test_second_displacement_reads_the_displaced_first_view():
    """a = b: A² takes patch a of A¹, which already holds X²'s patch c (the authors' in-place order)."""
    x1, x2 = torch.full((1, 1, 4, 4), 1.0), torch.arange(16.0).reshape(1, 1, 4, 4) + 10
    choice = {k: torch.tensor([v]) for k, v in dict(a=0, b=0, c=3, d=1).items()}
    out = patches.reliable_displacement(x1, x2, choice, 2)
    assert out[0, 0].tolist() == [[20, 21, 1, 1], [24, 25, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1]]
    assert out[1, 0, :2, 2:].tolist() == [[20, 21], [24, 25]] and out[1, 0, :2, :2].tolist() == [[10, 11], [14, 15]]


def _dice(z, y):
    """1 − soft Dice of the lesion class (smp's, over the whole batch) for the stub's logits (0, z)."""
    p, y = torch.sigmoid(z), y.float()
    return 1 - 2 * (p * y).sum() / (p.sum() + y.sum())


def _region(z, y, r):
    r, y = r.float(), y.float()
    ce = torch.where(y > 0, F.softplus(-z), F.softplus(z))
    p = torch.sigmoid(z)
    return 0.5 * ((ce * r).sum() / r.sum() + 1 - 2 * (p * y * r).sum() / ((p * r).sum() + (y * r).sum()))


def _authors_loop(x1, x2, z1, z2, top_k, use_kl):
    """ABD_R_BCP written as the authors' per-image loop over 2×2 patches of a 4×4 stub output (z: N×4×4)."""
    grid = lambda t: t.reshape(2, 2, 2, 2).permute(0, 2, 1, 3).reshape(4, 4)  # noqa: E731  rows: patches
    ungrid = lambda t: t.reshape(2, 2, 2, 2).permute(0, 2, 1, 3).reshape(4, 4)  # noqa: E731
    out1, out2 = x1.clone(), x2.clone()
    for i in range(x1.shape[0]):
        p1, p2 = grid(torch.sigmoid(z1[i])), grid(torch.sigmoid(z2[i]))
        conf1, conf2 = torch.maximum(p1, 1 - p1).mean(1), torch.maximum(p2, 1 - p2).mean(1)
        m1 = torch.stack([torch.zeros(4), grid(z1[i]).mean(1)], 1)
        m2 = torch.stack([torch.zeros(4), grid(z2[i]).mean(1)], 1)
        b, d = int(conf1.argmin()), int(conf2.argmin())
        if use_kl:
            t1, t2 = conf1.topk(top_k).indices, conf2.topk(top_k).indices
            kl1 = [F.kl_div(m1[j].softmax(-1).log(), m2[d].softmax(-1), reduction="sum") for j in t1]
            kl2 = [F.kl_div(m2[j].softmax(-1).log(), m1[b].softmax(-1), reduction="sum") for j in t2]
            a, c = int(t1[int(torch.stack(kl1).argmin())]), int(t2[int(torch.stack(kl2).argmin())])
        else:
            a, c = int(conf1.argmax()), int(conf2.argmax())
        g1, g2 = grid(x1[i, 0]), grid(x2[i, 0])
        g1[b] = g2[c]
        g2[d] = g1[a]
        out1[i, 0], out2[i, 0] = ungrid(g1), ungrid(g2)
    return torch.cat([out1, out2])


M = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)


@pytest.mark.parametrize("kl_share, cps_weight", [(1.0, 1.0), (0.0, 0.5)])
def test_step_by_value(monkeypatch, kl_share, cps_weight):
    """Both students' mixes, the displaced sample (against the authors' loop) and every term and the total."""
    masks = torch.stack([M, M.flip(1)])
    monkeypatch.setattr(bcp_module, "zero_centred_masks", lambda n, shape, ratio, device: masks[:n])
    method, student = _method(monkeypatch, kl_share=kl_share, cps_weight=cps_weight)
    peer = method.peer
    gen = torch.Generator().manual_seed(3)
    x, x_s, weak = (torch.randn(2, 1, 4, 4, generator=gen) for _ in range(3))
    strong = weak + 0.3 * torch.randn(2, 1, 4, 4, generator=gen)
    mask = (torch.randn(2, 4, 4, generator=gen) > 0).long()
    label = torch.tensor([0, 1])
    total, logs, _ = method.step(student, (x, mask, label, x_s), (weak, strong), 50)
    m4 = masks[:, None]
    y_w, y_s = (weak[:, 0] < 0).long(), (strong[:, 0] < 0).long()
    x1 = torch.cat([torch.where(m4, x, weak), torch.where(m4, weak, x)])
    x2 = torch.cat([torch.where(m4, x_s, strong), torch.where(m4, strong, x_s)])
    assert torch.equal(student.seen[0], torch.cat([x, x1])) and torch.equal(peer.seen[0], torch.cat([x, x2]))
    z1, z2 = x1[:, 0], -2.0 * x2[:, 0]
    sample = _authors_loop(x1, x2, z1, z2, 2, kl_share == 1.0)
    assert torch.equal(student.seen[1], sample) and torch.equal(peer.seen[1], sample)
    y1 = torch.cat([torch.where(masks, mask, y_w), torch.where(masks, y_w, mask)])
    y2 = torch.cat([torch.where(masks, mask, y_s), torch.where(masks, y_s, mask)])
    expect = {"bcp_in": _region(z1[:2], y1[:2], masks) + 0.5 * _region(z1[:2], y1[:2], ~masks),
              "bcp_out": _region(z1[2:], y1[2:], ~masks) + 0.5 * _region(z1[2:], y1[2:], masks),
              "bcp_in_2": _region(z2[:2], y2[:2], masks) + 0.5 * _region(z2[:2], y2[:2], ~masks),
              "bcp_out_2": _region(z2[2:], y2[2:], ~masks) + 0.5 * _region(z2[2:], y2[2:], masks),
              "cps_1": _dice(z1, z2 > 0), "cps_2": _dice(z2, z1 > 0),
              "cps_abd_1": _dice(sample[:, 0], -2 * sample[:, 0] > 0),
              "cps_abd_2": _dice(-2 * sample[:, 0], sample[:, 0] > 0),
              "cls_sup": F.cross_entropy(torch.stack([torch.zeros(2), x.mean((1, 2, 3))], 1), label),
              "cls_sup_2": F.cross_entropy(torch.stack([torch.zeros(2), -2 * x.mean((1, 2, 3))], 1), label)}
    assert set(logs) == set(expect) | {"agree"}
    for key, value in expect.items():
        assert logs[key].item() == pytest.approx(value.item(), rel=1e-5), key
    assert logs["agree"].item() == pytest.approx(((z1 > 0) == (z2 > 0)).float().mean().item())
    bcp = sum(expect[k] for k in ("bcp_in", "bcp_out", "bcp_in_2", "bcp_out_2"))
    cps = sum(expect[k] for k in ("cps_1", "cps_2", "cps_abd_1", "cps_abd_2"))
    cls = expect["cls_sup"] + expect["cls_sup_2"]
    assert total.item() == pytest.approx(0.5 * (bcp + cps_weight * cps).item() + 1.1 * cls.item(), rel=1e-5)
    total.backward()
    assert student.s.grad is not None and peer.s.grad is not None
    assert all(p.grad is None for p in method.teacher.parameters())


def test_pretraining_copies_f1_into_the_peer_and_the_teacher(monkeypatch):
    method, student = _method(monkeypatch, iters=4, pretrain=0.5)
    x = torch.randn(2, 1, 4, 4)
    mask = (x[:, 0] > 0).long()
    _, logs, _ = method.step(student, (x, mask, torch.tensor([0, 1]), x + 1), (x, x), 1)
    assert set(logs) == {"bcp_pre", "cls_sup"} and method.peer.seen == []
    with torch.no_grad():
        student.s.fill_(3.0)
    method.after_step(student, 1)
    assert method.peer.s.item() == 3.0 and method.teacher.model.s.item() == 3.0
    with torch.no_grad():
        student.s.fill_(5.0)
    method.after_step(student, 2)
    assert method.peer.s.item() == 3.0  # self-training: the peer learns on its own


def test_state_round_trip_and_refusals(monkeypatch):
    method, _ = _method(monkeypatch)
    with torch.no_grad():
        method.peer.s.fill_(0.7)
    fresh, _ = _method(monkeypatch)
    fresh.load_state_dict(method.state_dict())
    assert fresh.peer.s.item() == pytest.approx(0.7) and fresh.teacher.model.s.item() == -0.5
    with pytest.raises(UserError, match="second network"):
        fresh.load_state_dict({"teacher": method.state_dict()["teacher"]})
    with pytest.raises(UserError, match="abd.top_k 5 exceeds the 4 patches"):
        _method(monkeypatch, top_k=5)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 2)
    with pytest.raises(UserError, match="method abd .* DDP"):
        _method(monkeypatch)


def test_labeled_strong_view_leaves_the_weak_sample_unchanged(phantom_split):
    part = phantom_split / "train" / "4" / "labeled"
    plain = SplitDataset(part, "labeled", size=64, seed=5)
    both = SplitDataset(part, "labeled", size=64, seed=5, labeled_strong=True)
    a, b = plain[1], both[1]
    assert len(a) == 3 and len(b) == 4 and all(torch.equal(u, v) for u, v in zip(a, b))
    assert b[3].shape == b[0].shape and not torch.equal(b[3], b[0])


def _run(split, out, *extra):
    argv = ["--config", str(SMOKE_CONFIG), "--data", str(split), "--labels", "4", "--out", str(out),
            "--device", "cpu", "--method", "abd", "--set", "bcp.pretrain_iters=0.25", "--set", "eval.every=100",
            "--set", "train.iters=4", *extra]
    assert train_main(argv, task="seg") == 0
    return torch.load(out / "checkpoints" / "latest.pt", weights_only=False)


@pytest.mark.slow
def test_abd_trains_and_resumes_exactly(phantom_split, tmp_path, capsys):
    """4 steps (1 pre-training, 3 ABD) straight == 2 steps, stop, resume 2: both networks, the optimiser state
    (the peer's moments in the same optimisers) and the teacher bit-equal; the peer trained apart from f₁."""
    whole = _run(phantom_split, tmp_path / "whole")
    _run(phantom_split, tmp_path / "parts", "--stop-after", "2")
    parts = _run(phantom_split, tmp_path / "parts")
    assert "from step 2" in capsys.readouterr().err
    assert whole["step"] == parts["step"] == 4 and set(whole["method"]) == {"teacher", "peer"}
    peer, model = whole["method"]["peer"], whole["model"]
    assert set(peer) == set(model) and any(not torch.equal(v, model[k]) for k, v in peer.items()
                                           if v.dtype.is_floating_point)
    assert len(whole["seg_optimizer"]["param_groups"]) == len(whole["cls_optimizer"]["param_groups"]) == 2
    whole.pop("train_seconds"), parts.pop("train_seconds")
    _assert_same(whole, parts)


def _assert_same(a, b, where="latest.pt"):
    """Recursive equality of checkpoint contents (tensors bit-exact)."""
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert set(a) == set(b), where
        for key in a:
            _assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, np.ndarray):
        assert np.array_equal(a, b), where
    else:
        assert a == b, (where, a, b)
