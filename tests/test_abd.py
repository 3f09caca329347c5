"""``abd`` (Code/methods/abd.py) by value on a stub network, and 2 iterations on the phantom.

The stub (test_bcp.py's, plus a bias b) has lesion logit ``s·x + b`` per pixel (background 0) and malignancy logit
its mean; it records every batch it sees. The student has s = 1, b = 0; the teacher s = −0.5, b = 0.3, so its
pseudo-label of a pixel v is [v < 0.6] and its confidence sigmoid(|0.3 − 0.5·v|), whose patch order differs from
the student's sigmoid(|v|) (so a confidence taken from the wrong network is seen).

Mutations checked (each made once, the named test failed, then restored):
- patch_confidence: max pooling instead of the mean; the lesion probability instead of the max class probability;
  the uncovered remainder rows included → test_patch_confidence_by_value.
- displace: the destination and source index swapped; the patch grid transposed (row/column order); written into
  the input in place (no clone) → test_displace_by_value.
- ABD-R: argmin/argmax exchanged (the most reliable patch replaced); the donor patch taken from the same view; the
  pseudo-labels not displaced with the pixels → test_reliable_displacement_by_value, test_step_by_value.
- ABD-I: the labeled rule made "reliable" (argmin receives); the labels not displaced; no partner (roll removed)
  → test_inverse_displacement_by_value, test_step_by_value.
- the step: abd_r or abd_i left out of the total or its weight not applied; the displaced images left out of the
  student's batch; the confidence taken from the student instead of the teacher; cls_sup dropped
  → test_step_by_value.
"""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from Code.engine.cli import main as train_main
from Code.engine.config import load_config
from Code.errors import UserError
from Code.methods import abd as abd_module
from Code.methods import bcp as bcp_module
from Code.methods import build_method, method_teacher
from helpers import SMOKE_CONFIG

pytestmark = pytest.mark.usefixtures("single_thread")


class Stub(nn.Module):
    def __init__(self):
        super().__init__()
        self.s = nn.Parameter(torch.ones(()))
        self.b = nn.Parameter(torch.zeros(()))
        self.seen = []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        lesion = self.s * x[:, :1] + self.b
        mean = lesion.mean(dim=(1, 2, 3))
        return {"seg_logits": torch.cat([torch.zeros_like(lesion), lesion], 1),
                "cls_logits": torch.stack([torch.zeros_like(mean), mean], 1)}


def _config(**settings):
    return load_config(None, [{"method": "abd", "train": {"iters": 100}, "data": {"size": 32},
                               "bcp": {"pretrain_iters": 0.0}, "abd": {"grid": 2, **settings}}])


def _move(a, dst, b, src, p=2, g=2):
    """Patch ``dst`` of a (C×H×W or H×W) replaced by patch ``src`` of b, written out with slices."""
    out = a.clone()
    (r, c), (r2, c2) = divmod(int(dst), g), divmod(int(src), g)
    out[..., r * p:(r + 1) * p, c * p:(c + 1) * p] = b[..., r2 * p:(r2 + 1) * p, c2 * p:(c2 + 1) * p]
    return out


def test_patch_confidence_by_value():
    """4×4 probabilities, grid 2: each 2×2 patch's mean max-class probability; a 5×5 map ignores row/column 4."""
    lesion = torch.tensor([[0.9, 0.9, 0.5, 0.3], [0.9, 0.7, 0.5, 0.3], [0.2, 0.2, 0.6, 0.6], [0.2, 0.0, 0.6, 0.6]])
    probs = torch.stack([1 - lesion, lesion])[None]
    conf = abd_module.patch_confidence(probs, 2)
    assert conf[0].tolist() == pytest.approx([0.85, 0.6, 0.85, 0.6])
    padded = F.pad(probs, (0, 1, 0, 1), value=0.5)
    padded[:, :, 4, :] = torch.tensor([0.0, 1.0])[:, None]  # confident remainder row: must not count
    assert abd_module.patch_confidence(padded, 2)[0].tolist() == pytest.approx([0.85, 0.6, 0.85, 0.6])


def test_displace_by_value():
    """Patch 0 of x ← patch 3 of x + 100 (grid 2 on 4×4); label maps move alike; the input is left unchanged."""
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    out = abd_module.displace(x, x + 100, torch.tensor([0]), torch.tensor([3]), 2)
    assert out[0, 0].tolist() == [[110, 111, 2, 3], [114, 115, 6, 7], [8, 9, 10, 11], [12, 13, 14, 15]]
    y = torch.arange(16).reshape(1, 4, 4)
    out = abd_module.displace(y, y + 100, torch.tensor([1]), torch.tensor([2]), 2)
    assert out[0].tolist() == [[0, 1, 108, 109], [4, 5, 112, 113], [8, 9, 10, 11], [12, 13, 14, 15]]
    whole = abd_module.displace(x, x + 100, torch.tensor([0]), torch.tensor([0]), 1)
    assert torch.equal(whole, x + 100) and x[0, 0, 0, 0].item() == 0.0


def _views():
    gen = torch.Generator().manual_seed(0)
    return torch.randn(2, 1, 4, 4, generator=gen), torch.randn(2, 1, 4, 4, generator=gen)


def test_reliable_displacement_by_value():
    """Hand-built confidences: each view's least confident patch receives the other view's most confident one."""
    u_w, u_s = _views()
    pseudo = (u_w[:, 0] < 0).long()
    c_w = torch.tensor([[0.9, 0.2, 0.8, 0.7], [0.6, 0.7, 0.8, 0.5]])   # low_w = 1, 3; high_w = 0, 2
    c_s = torch.tensor([[0.6, 0.5, 0.95, 0.3], [0.1, 0.9, 0.4, 0.3]])  # low_s = 3, 0; high_s = 2, 1
    rel = abd_module.reliable_displacement(u_w, u_s, pseudo, c_w, c_s, 2)
    for n, (low_w, high_s, low_s, high_w) in enumerate([(1, 2, 3, 0), (3, 1, 0, 2)]):
        assert torch.equal(rel["x_w"][n], _move(u_w[n], low_w, u_s[n], high_s))
        assert torch.equal(rel["y_w"][n], _move(pseudo[n], low_w, pseudo[n], high_s))
        assert torch.equal(rel["x_s"][n], _move(u_s[n], low_s, u_w[n], high_w))
        assert torch.equal(rel["y_s"][n], _move(pseudo[n], low_s, pseudo[n], high_w))


def test_inverse_displacement_by_value():
    """3 labeled images: image n's most confident patch receives the least confident patch of image n − 1."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, 1, 4, 4, generator=gen)
    y = (torch.rand(3, 4, 4, generator=gen) > 0.5).long()
    conf = torch.tensor([[0.9, 0.2, 0.8, 0.7], [0.3, 0.4, 0.6, 0.5], [0.5, 0.9, 0.1, 0.6]])
    # highest: 0, 2, 1; lowest: 1, 0, 2. Image 0's donor is image 2, image 1's is image 0, image 2's is image 1.
    x_i, y_i = abd_module.inverse_displacement(x, y, conf, 2)
    for n, (donor, high, low) in enumerate([(2, 0, 2), (0, 2, 1), (1, 1, 0)]):
        assert torch.equal(x_i[n], _move(x[n], high, x[donor], low))
        assert torch.equal(y_i[n], _move(y[n], high, y[donor], low))


def _region_loss(z, y, r):
    """½ (CE over r + 1 − Dice_lesion over r), written out for the stub's logits (background 0, lesion z)."""
    r, y = r.float(), y.float()
    ce = torch.where(y > 0, F.softplus(-z), F.softplus(z))
    p = torch.sigmoid(z)
    dice = 1 - 2 * (p * y * r).sum() / ((p * r).sum() + (y * r).sum())
    return 0.5 * ((ce * r).sum() / r.sum() + dice)


def _teacher_conf(v):
    """The stub teacher's patch confidence (grid 2 on 4×4): mean of sigmoid(|0.3 − 0.5·v|) per 2×2 patch (N×4)."""
    c = torch.sigmoid((0.3 - 0.5 * v[:, 0]).abs())
    return c.reshape(-1, 2, 2, 2, 2).mean((2, 4)).flatten(1)


M = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)


@pytest.mark.parametrize("w_r, w_i", [(1.0, 1.0), (0.5, 2.0)])
def test_step_by_value(monkeypatch, w_r, w_i):
    """The student's batch [x, X_in, X_out, U_w', U_s', X_i] and every term by value, the weights applied."""
    masks = torch.stack([M, M.flip(0)])
    monkeypatch.setattr(bcp_module, "zero_centred_masks", lambda n, shape, ratio, device: masks[:n])
    student = Stub()
    method = build_method(_config(reliable_weight=w_r, inverse_weight=w_i), torch.device("cpu"), student)
    with torch.no_grad():
        method.teacher.model.s.fill_(-0.5)
        method.teacher.model.b.fill_(0.3)
    x, weak = _views()
    strong = weak * 1.7 - 0.3
    mask = torch.tensor([[[1, 1, 0, 0], [1, 1, 0, 0], [1, 0, 0, 1], [0, 0, 1, 1]]]).repeat(2, 1, 1)
    mask[1] = 1 - mask[1]
    label = torch.tensor([0, 1])
    total, logs, _ = method.step(student, (x, mask, label), (weak, strong), 50)
    pseudo = (weak[:, 0] < 0.6).long()
    c_w, c_s, c_l = _teacher_conf(weak), _teacher_conf(strong), _teacher_conf(x)
    u_w = torch.stack([_move(weak[n], c_w[n].argmin(), strong[n], c_s[n].argmax()) for n in range(2)])
    y_w = torch.stack([_move(pseudo[n], c_w[n].argmin(), pseudo[n], c_s[n].argmax()) for n in range(2)])
    u_s = torch.stack([_move(strong[n], c_s[n].argmin(), weak[n], c_w[n].argmax()) for n in range(2)])
    y_s = torch.stack([_move(pseudo[n], c_s[n].argmin(), pseudo[n], c_w[n].argmax()) for n in range(2)])
    x_i = torch.stack([_move(x[n], c_l[n].argmax(), x[1 - n], c_l[1 - n].argmin()) for n in range(2)])
    y_i = torch.stack([_move(mask[n], c_l[n].argmax(), mask[1 - n], c_l[1 - n].argmin()) for n in range(2)])
    m4 = masks[:, None]
    x_in, x_out = torch.where(m4, x, weak), torch.where(m4, weak, x)
    assert torch.equal(student.seen[-1], torch.cat([x, x_in, x_out, u_w, u_s, x_i]))
    ones = torch.ones(2, 4, 4, dtype=torch.bool)
    abd_r = _region_loss(u_w[:, 0], y_w, ones) + _region_loss(u_s[:, 0], y_s, ones)
    abd_i = _region_loss(x_i[:, 0], y_i, ones)
    y_in, y_out = torch.where(masks, mask, pseudo), torch.where(masks, pseudo, mask)
    bcp_in = _region_loss(x_in[:, 0], y_in, masks) + 0.5 * _region_loss(x_in[:, 0], y_in, ~masks)
    bcp_out = _region_loss(x_out[:, 0], y_out, ~masks) + 0.5 * _region_loss(x_out[:, 0], y_out, masks)
    cls_sup = F.cross_entropy(torch.stack([torch.zeros(2), x.mean((1, 2, 3))], 1), label)
    assert set(logs) == {"bcp_in", "bcp_out", "abd_r", "abd_i", "cls_sup"}
    for name, value in [("abd_r", abd_r), ("abd_i", abd_i), ("bcp_in", bcp_in), ("bcp_out", bcp_out),
                        ("cls_sup", cls_sup)]:
        assert logs[name].item() == pytest.approx(value.item(), rel=1e-5), name
    expected = 0.5 * (bcp_in + bcp_out + w_r * abd_r + w_i * abd_i) + 1.1 * cls_sup
    assert total.item() == pytest.approx(expected.item(), rel=1e-5)
    total.backward()
    assert student.s.grad is not None and all(p.grad is None for p in method.teacher.parameters())


def test_the_ema_teacher_labels_the_weak_view():
    assert method_teacher(_config()) == "ema"


def test_grid_larger_than_the_image_is_a_user_error():
    config = _config(grid=40)
    with pytest.raises(UserError, match="abd.grid 40"):
        build_method(config, torch.device("cpu"), Stub())


def test_state_round_trip():
    """Mutation checked: the teacher left out of ``state_dict`` (inherited from bcp)."""
    config = _config()
    method = build_method(config, torch.device("cpu"), Stub())
    with torch.no_grad():
        method.teacher.model.s.fill_(0.3)
    fresh = build_method(config, torch.device("cpu"), Stub())
    fresh.load_state_dict(method.state_dict())
    assert fresh.teacher.model.s.item() == pytest.approx(0.3)
    with pytest.raises(UserError, match="no EMA teacher"):
        fresh.load_state_dict({})


@pytest.mark.slow
def test_abd_trains_two_iterations_on_the_phantom(phantom_split, tmp_path):
    """``--method abd`` end to end: one pre-training and one self-training iteration (with ABD), the teacher saved."""
    out = tmp_path / "run"
    argv = ["--config", str(SMOKE_CONFIG), "--data", str(phantom_split), "--labels", "4", "--out", str(out),
            "--device", "cpu", "--method", "abd", "--set", "train.iters=2", "--set", "bcp.pretrain_iters=0.5"]
    assert train_main(argv, task="seg") == 0
    latest = torch.load(out / "checkpoints" / "latest.pt", weights_only=False)
    assert latest["step"] == 2 and latest["config"]["method"] == "abd" and latest["config"]["abd"]["grid"] == 4
    assert set(latest["method"]) == {"teacher"}
    teacher = {k.removeprefix("model."): v for k, v in latest["method"]["teacher"].items()}
    assert set(teacher) == set(latest["model"])
    assert any(not torch.equal(v, latest["model"][k]) for k, v in teacher.items()
               if v.dtype.is_floating_point)  # after the self-training (ABD) step the teacher lags the student
