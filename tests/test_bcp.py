"""``bcp`` (Code/methods/bcp.py) by value on a stub network, and 2 iterations on the phantom.

The stub's lesion logit is ``s·x`` per pixel (background 0) and its malignancy logit ``s·mean(x)``; it records every
batch it sees. With s = 1 for the student and −0.5 for the teacher, the teacher's pseudo-label of u is [u < 0]
(the student's would be [u > 0])."""
import pytest
import torch
import torch.nn.functional as F

from Code.engine.cli import main as train_main
from Code.engine.config import load_config
from Code.errors import UserError
from Code.methods import bcp as bcp_module
from Code.methods import build_method
from helpers import SMOKE_CONFIG
from stubs import ScaleStub as Stub

pytestmark = pytest.mark.usefixtures("single_thread")




def _config(**settings):
    return load_config(None, [{"method": "bcp", "train": {"iters": 100}, "bcp": {"pretrain_iters": 0.0, **settings}}])


# The 4×4 example: the zero rectangle of M covers rows 1–2, columns 2–3.
M = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)


def test_copy_paste_masks_by_value():
    """Mutations checked: the rectangle kept instead of zeroed (M inverted); its size off by one; its position not
    random; β ignored."""
    masks = bcp_module.rectangle_masks(torch.tensor([1, 0]), torch.tensor([2, 0]), (2, 2), (4, 4))
    assert torch.equal(masks[0], M)
    assert torch.equal(masks[1], torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1]]).bool())
    torch.manual_seed(0)
    drawn = bcp_module.zero_centred_masks(64, (6, 6), 2 / 3, torch.device("cpu"))  # a 4×4 zero rectangle
    corners = set()
    for mask in drawn:
        rows, cols = torch.nonzero(~mask, as_tuple=True)
        assert len(rows) == 16 and rows.max() - rows.min() == 3 and cols.max() - cols.min() == 3
        corners.add((int(rows.min()), int(cols.min())))
    assert corners == {(r, c) for r in range(3) for c in range(3)}  # every position of a 4×4 rectangle in 6×6


def test_bidirectional_mix_by_value():
    """X_in / Y_in take the labeled image where M = 1, X_out / Y_out the unlabeled one (hand-computed).
    Mutations checked: the two directions swapped; the labels mixed with the other mask side."""
    x_l = torch.arange(16.0).reshape(1, 1, 4, 4)
    y_l = torch.tensor([[[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]])
    y_u = torch.tensor([[[0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1]]])
    mix = bcp_module.bidirectional_mix(x_l, y_l, x_l + 100, y_u, M[None])
    assert mix["x_in"][0, 0].tolist() == [[0, 1, 2, 3], [4, 5, 106, 107], [8, 9, 110, 111], [12, 13, 14, 15]]
    assert mix["x_out"][0, 0].tolist() == [[100, 101, 102, 103], [104, 105, 6, 7], [108, 109, 10, 11],
                                           [112, 113, 114, 115]]
    assert mix["y_in"][0].tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 0, 0]]
    assert mix["y_out"][0].tolist() == [[0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1]]


def _region_loss(z, y, r):
    """½ (CE over r + 1 − Dice_lesion over r), written out for the stub's logits (background 0, lesion z)."""
    r, y = r.float(), y.float()
    ce = torch.where(y > 0, F.softplus(-z), F.softplus(z))
    p = torch.sigmoid(z)
    dice = 1 - 2 * (p * y * r).sum() / ((p * r).sum() + (y * r).sum())
    return 0.5 * ((ce * r).sum() / r.sum() + dice)


def _batch():
    gen = torch.Generator().manual_seed(0)
    x, weak = torch.randn(2, 1, 4, 4, generator=gen), torch.randn(2, 1, 4, 4, generator=gen)
    mask = torch.tensor([[[1, 1, 0, 0], [1, 1, 0, 0], [1, 0, 0, 1], [0, 0, 1, 1]]]).repeat(2, 1, 1)
    mask[1] = 1 - mask[1]
    return x, mask, torch.tensor([0, 1]), weak


@pytest.mark.parametrize("alpha", [0.5, 0.2])
def test_step_mixes_both_directions_and_weighs_pseudo_labels_by_alpha(monkeypatch, alpha):
    """Mutations checked: the inward or the outward stream left out of the total or of the student's batch; α
    on the ground-truth part (or not applied); the teacher's pseudo-labels replaced by the student's; cls_sup
    dropped; the strong view mixed instead of the weak one."""
    masks = torch.stack([M, M.flip(0)])
    monkeypatch.setattr(bcp_module, "zero_centred_masks", lambda n, shape, ratio, device: masks[:n])
    config = _config(alpha=alpha)
    student = Stub()
    method = build_method(config, torch.device("cpu"), student)
    with torch.no_grad():
        method.teacher.model.s.fill_(-0.5)
    x, mask, label, weak = _batch()
    total, logs, vis = method.step(student, (x, mask, label), (weak, weak + 5.0), 50)
    pseudo = (weak[:, 0] < 0).long()
    assert torch.equal(vis["pseudo"], pseudo)
    m4 = masks[:, None]
    x_in, x_out = torch.where(m4, x, weak), torch.where(m4, weak, x)
    assert torch.equal(student.seen[-1], torch.cat([x, x_in, x_out]))
    y_in, y_out = torch.where(masks, mask, pseudo), torch.where(masks, pseudo, mask)
    z_in, z_out = x_in[:, 0], x_out[:, 0]
    bcp_in = _region_loss(z_in, y_in, masks) + alpha * _region_loss(z_in, y_in, ~masks)
    bcp_out = _region_loss(z_out, y_out, ~masks) + alpha * _region_loss(z_out, y_out, masks)
    cls_sup = F.cross_entropy(torch.stack([torch.zeros(2), x.mean((1, 2, 3))], 1), label)
    assert logs["bcp_in"].item() == pytest.approx(bcp_in.item(), rel=1e-5)
    assert logs["bcp_out"].item() == pytest.approx(bcp_out.item(), rel=1e-5)
    assert logs["cls_sup"].item() == pytest.approx(cls_sup.item(), rel=1e-5)
    assert total.item() == pytest.approx(0.5 * (bcp_in + bcp_out).item() + 1.1 * cls_sup.item(), rel=1e-5)
    total.backward()
    assert student.s.grad is not None and all(p.grad is None for p in method.teacher.parameters())


def test_pairs_cycle_the_smaller_batch(monkeypatch):
    """3 unlabeled and 2 labeled images make 3 pairs (labeled 0, 1, 0). Mutation checked: pairs cut to the smaller
    batch."""
    masks = torch.stack([M, M, M])
    monkeypatch.setattr(bcp_module, "zero_centred_masks", lambda n, shape, ratio, device: masks[:n])
    student = Stub()
    method = build_method(_config(), torch.device("cpu"), student)
    x, mask, label, weak = _batch()
    weak = torch.cat([weak, -weak[:1]])
    method.step(student, (x, mask, label), (weak, weak), 50)
    x_in = torch.where(masks[:, None], x[[0, 1, 0]], weak)
    assert torch.equal(student.seen[-1][2:5], x_in)


def test_pretraining_pastes_labeled_images_and_copies_the_teacher(monkeypatch):
    """Mutations checked: the pre-training stage skipped (or never left); its mixed part weighted α; the teacher
    not copied from the student during it; the EMA decay not used after it."""
    masks = torch.stack([M, M.flip(1)])
    monkeypatch.setattr(bcp_module, "zero_centred_masks", lambda n, shape, ratio, device: masks[:n])
    config = load_config(None, [{"method": "bcp", "train": {"iters": 400},
                                 "bcp": {"pretrain_iters": 0.5, "ema_decay": 0.9}}])
    student = Stub()
    method = build_method(config, torch.device("cpu"), student)
    assert method.pretrain_steps() == 200
    x, mask, label, weak = _batch()
    total, logs, _ = method.step(student, (x, mask, label), (weak, weak), 199)
    x_mix = torch.where(masks[:, None], x, x.flip(0))  # roll by one of a batch of 2 = flip
    y_mix = torch.where(masks, mask, mask.flip(0))
    assert torch.equal(student.seen[-1], torch.cat([x, x_mix])) and len(student.seen) == 1
    pre = _region_loss(x_mix[:, 0], y_mix, masks) + _region_loss(x_mix[:, 0], y_mix, ~masks)
    assert set(logs) == {"bcp_pre", "cls_sup"}
    assert logs["bcp_pre"].item() == pytest.approx(pre.item(), rel=1e-5)
    assert total.item() == pytest.approx(0.5 * pre.item() + 1.1 * logs["cls_sup"].item(), rel=1e-6)
    with torch.no_grad():
        student.s.fill_(2.0)
    method.after_step(student, 199)
    assert method.teacher.model.s.item() == 2.0  # a copy of the pre-trained student
    with torch.no_grad():
        student.s.fill_(4.0)
    method.after_step(student, 200)
    assert method.teacher.model.s.item() == pytest.approx(0.9 * 2.0 + 0.1 * 4.0)
    _, logs, _ = method.step(student, (x, mask, label), (weak, weak), 200)
    assert set(logs) == {"bcp_in", "bcp_out", "cls_sup"}


def test_state_round_trip():
    """Mutations checked: the teacher left out of ``state_dict``; a missing teacher accepted silently."""
    config = _config()
    method = build_method(config, torch.device("cpu"), Stub())
    with torch.no_grad():
        method.teacher.model.s.fill_(0.3)
    saved = method.state_dict()
    fresh = build_method(config, torch.device("cpu"), Stub())
    fresh.load_state_dict(saved)
    assert fresh.teacher.model.s.item() == pytest.approx(0.3)
    with pytest.raises(UserError, match="no EMA teacher"):
        fresh.load_state_dict({})


@pytest.mark.slow
def test_bcp_trains_two_iterations_on_the_phantom(phantom_split, tmp_path):
    """``--method bcp`` end to end: one pre-training and one self-training iteration, the teacher saved."""
    out = tmp_path / "run"
    argv = ["--config", str(SMOKE_CONFIG), "--data", str(phantom_split), "--labels", "4", "--out", str(out),
            "--device", "cpu", "--method", "bcp", "--set", "train.iters=2", "--set", "bcp.pretrain_iters=0.5"]
    assert train_main(argv, task="seg") == 0
    latest = torch.load(out / "checkpoints" / "latest.pt", weights_only=False)
    assert latest["step"] == 2 and latest["config"]["method"] == "bcp"
    assert set(latest["method"]) == {"teacher"}
    teacher = {k.removeprefix("model."): v for k, v in latest["method"]["teacher"].items()}
    assert set(teacher) == set(latest["model"])
    assert any(not torch.equal(v, latest["model"][k]) for k, v in teacher.items()
               if v.dtype.is_floating_point)  # after the self-training step the teacher lags the student
