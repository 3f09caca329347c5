"""``mean_teacher`` (Code/methods/mean_teacher.py) by value on a stub network, and 2 iterations on the phantom.

The stub's lesion logit is ``s·x`` per pixel (background 0) and its malignancy logit ``s·mean(x)``; with s = 1 for
the student and 0.5 for the teacher, the teacher's lesion probability on the weak view is σ(weak/2) and the
student's on the strong view σ(strong)."""
import math

import pytest
import torch

from Code.engine.cli import main as train_main
from Code.engine.config import load_config
from Code.methods import build_method
from Code.methods.terms import combine_terms
from helpers import SMOKE_CONFIG
from stubs import ScaleStub

pytestmark = pytest.mark.usefixtures("single_thread")


Stub = ScaleStub


def _config(**mean_teacher):
    settings = dict(consistency=2.0, rampup=0.5, **mean_teacher)
    return load_config(None, [{"method": "mean_teacher", "train": {"iters": 100}, "mean_teacher": settings}])


def test_consistency_is_the_softmax_mse_to_the_ema_teacher():
    """Mutations checked: the consistency term left out of the total; MSE on logits instead of probabilities; the
    teacher fed the strong view (or the student the weak one); the cls term dropped; the weight not ramped."""
    config = _config()
    student = Stub()
    method = build_method(config, torch.device("cpu"), student)
    with torch.no_grad():
        method.teacher.model.s.fill_(0.5)  # the teacher's weights differ from the student's (as after EMA steps)
    gen = torch.Generator().manual_seed(0)
    weak, strong = torch.randn(2, 1, 6, 6, generator=gen), torch.randn(2, 1, 6, 6, generator=gen)
    x = torch.randn(2, 1, 6, 6, generator=gen)
    mask, label = (x[:, 0] > 0).long(), torch.tensor([0, 1])
    total, logs, _ = method.step(student, (x, mask, label), (weak, strong), 20)
    # student σ(strong) against teacher σ(0.5·weak); both channels differ by ± the same amount
    seg = ((torch.sigmoid(strong) - torch.sigmoid(0.5 * weak)) ** 2).mean()
    cls = ((torch.sigmoid(strong.mean((1, 2, 3))) - torch.sigmoid(0.5 * weak.mean((1, 2, 3)))) ** 2).mean()
    assert logs["seg_mse"].item() == pytest.approx(seg.item(), rel=1e-5)
    assert logs["cls_mse"].item() == pytest.approx(cls.item(), rel=1e-4)  # float32 near 1e-4
    weight = 2.0 * math.exp(-5 * (1 - 20 / 50) ** 2)
    supervised = 0.5 * logs["seg_sup"].item() + 1.1 * logs["cls_sup"].item()  # loss.seg, loss.cls
    assert combine_terms(logs, config, 20).item() == pytest.approx(supervised, rel=1e-6)
    expected = supervised + weight * (seg.item() + cls.item())
    assert total.item() == pytest.approx(expected, rel=1e-5)
    total.backward()
    assert student.s.grad is not None and all(p.grad is None for p in method.teacher.parameters())


def test_teacher_decay_follows_the_rampup():
    """Mutations checked: the two decays swapped (or the ramp-up decay never used); the teacher never updated."""
    config = load_config(None, [{"method": "mean_teacher", "train": {"iters": 10000},
                                 "mean_teacher": {"rampup": 0.5, "ema_decay_rampup": 0.99, "ema_decay": 0.999}}])
    student = Stub()
    method = build_method(config, torch.device("cpu"), student)
    with torch.no_grad():
        student.s.fill_(2.0)
    method.after_step(student, 1000)  # in the ramp-up: d = min(0.99, 1001/1010) = 0.99
    assert method.teacher.model.s.item() == pytest.approx(0.99 * 1 + 0.01 * 2)
    before = method.teacher.model.s.item()
    method.after_step(student, 20000)  # after it: d = min(0.999, 20001/20010) = 0.999
    assert method.teacher.model.s.item() == pytest.approx(0.999 * before + 0.001 * 2)


@pytest.mark.slow
def test_mean_teacher_trains_two_iterations_on_the_phantom(phantom_split, tmp_path):
    """``--method mean_teacher`` end to end: 2 iterations, the EMA teacher saved as the method's state."""
    out = tmp_path / "run"
    argv = ["--config", str(SMOKE_CONFIG), "--data", str(phantom_split), "--labels", "4", "--out", str(out),
            "--device", "cpu", "--method", "mean_teacher", "--set", "train.iters=2"]
    assert train_main(argv, task="seg") == 0
    latest = torch.load(out / "checkpoints" / "latest.pt", weights_only=False)
    assert latest["step"] == 2 and latest["config"]["method"] == "mean_teacher"
    assert set(latest["method"]) == {"teacher"}
    teacher = {k.removeprefix("model."): v for k, v in latest["method"]["teacher"].items()}
    assert set(teacher) == set(latest["model"])
    assert any(not torch.equal(v, latest["model"][k]) for k, v in teacher.items()
               if v.dtype.is_floating_point)  # the teacher lags the student
