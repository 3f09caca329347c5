"""Hermes' optional streams (Code/methods/hermes_streams.py: copy-paste, feature perturbation) by value on a stub
network, their place in Hermes' total, and 2 iterations on the phantom with both on.

The stub's lesion logit is ``s·x`` per pixel (background 0) and its malignancy logit ``s·mean(x)``; it records every
batch it sees. Its ``encoder`` returns [x, x] (the input and one feature map) and the heads read the feature map,
so that the feature-dropout hook of the fp stream acts on what the heads see."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from Code.engine.cli import main as train_main
from Code.engine.config import load_config
from Code.methods import build_method
from Code.methods import hermes_streams
from Code.methods.hermes_streams import HermesStreams
from Code.methods.terms import combine_terms, ramp_weights
from Code.reporting.scalars import read_scalars
from helpers import SMOKE_CONFIG

pytestmark = pytest.mark.usefixtures("single_thread")

M = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)


class Encoder(nn.Module):
    def forward(self, x):
        return [x, x]


class Stub(nn.Module):
    def __init__(self):
        super().__init__()
        self.s = nn.Parameter(torch.ones(()))
        self.encoder = Encoder()
        self.seen = []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        feature = self.encoder(x)[1]
        lesion = self.s * feature[:, :1]
        mean = lesion.mean(dim=(1, 2, 3))
        return {"seg_logits": torch.cat([torch.zeros_like(lesion), lesion], 1),
                "cls_logits": torch.stack([torch.zeros_like(mean), mean], 1)}


def _settings(**kw):
    settings = {"copy_paste": 0.0, "copy_paste_ratio": 0.5, "copy_paste_alpha": 0.5, "feature_perturbation": 0.0,
                "fp_dropout": 0.5}
    settings.update(kw)
    return settings


def _region_loss(z, y, r):
    """½ (CE over r + 1 − Dice_lesion over r), written out for the stub's logits (background 0, lesion z)."""
    r, y = r.float(), y.float()
    ce = torch.where(y > 0, F.softplus(-z), F.softplus(z))
    p = torch.sigmoid(z)
    dice = 1 - 2 * (p * y * r).sum() / ((p * r).sum() + (y * r).sum())
    return 0.5 * ((ce * r).sum() / r.sum().clamp_min(1) + dice)


def _batch():
    gen = torch.Generator().manual_seed(0)
    x, strong = torch.randn(2, 1, 4, 4, generator=gen), torch.randn(2, 1, 4, 4, generator=gen)
    mask = torch.tensor([[[1, 1, 0, 0], [1, 1, 0, 0], [1, 0, 0, 1], [0, 0, 1, 1]]]).repeat(2, 1, 1)
    mask[1] = 1 - mask[1]
    pseudo = (torch.randn(2, 4, 4, generator=gen) > 0).long()
    keep = torch.randn(2, 4, 4, generator=gen) > -0.3  # most pixels kept, some not
    keep[0, 1, 2] = False  # one unkept pixel inside the rectangle: it must teach nothing
    pl = {"seg_pseudo": pseudo, "seg_keep": keep, "cls_pseudo": torch.tensor([1, 0]),
          "cls_keep": torch.tensor([True, False])}
    return x, mask, strong, pl


@pytest.mark.parametrize("alpha", [0.5, 0.2])
def test_copy_paste_mixes_the_strong_view_and_masks_unkept_pixels(monkeypatch, alpha):
    """Mutations checked: the weak view pasted instead of the strong one; the keep mask ignored (unkept pseudo-labels
    taught); α on the ground-truth part; one direction left out."""
    masks = torch.stack([M, M.flip(0)])
    monkeypatch.setattr(hermes_streams, "zero_centred_masks", lambda n, shape, ratio, device: masks[:n])
    streams = HermesStreams(_settings(copy_paste=1.0, copy_paste_alpha=alpha))
    x, mask, strong, pl = _batch()
    stub = Stub()
    terms = streams.terms(stub, x, mask, strong - 7.0, strong, pl)
    assert set(terms) == {"copy_paste"}
    m4 = masks[:, None]
    x_in, x_out = torch.where(m4, x, strong), torch.where(m4, strong, x)
    assert torch.equal(stub.seen[-1], torch.cat([x_in, x_out]))
    y_in = torch.where(masks, mask, pl["seg_pseudo"])
    y_out = torch.where(masks, pl["seg_pseudo"], mask)
    keep = pl["seg_keep"]
    expected = (_region_loss(x_in[:, 0], y_in, masks) + alpha * _region_loss(x_in[:, 0], y_in, ~masks & keep)
                + _region_loss(x_out[:, 0], y_out, ~masks) + alpha * _region_loss(x_out[:, 0], y_out, masks & keep))
    assert terms["copy_paste"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_feature_perturbation_drops_encoder_features_of_the_weak_rows_only(monkeypatch):
    """With p → 1 every channel of the weak rows' feature map is dropped, so their logits are 0 and each kept
    sample costs ln 2. Mutations checked: the dropout not applied (hook rows unset); the strong view used instead of
    the weak one; the keep masks ignored; the hook left on after the forward."""
    streams = HermesStreams(_settings(feature_perturbation=1.0, fp_dropout=0.999999))
    x, mask, strong, pl = _batch()
    stub = Stub()
    weak = strong + 3.0
    terms = streams.terms(stub, x, mask, weak, strong, pl)
    assert set(terms) == {"seg_fp", "cls_fp"}
    assert torch.equal(stub.seen[-1], weak)
    ln2 = torch.log(torch.tensor(2.0)).item()
    assert terms["seg_fp"].item() == pytest.approx(ln2 * pl["seg_keep"].float().mean().item(), rel=1e-5)
    assert terms["cls_fp"].item() == pytest.approx(ln2 * 0.5, rel=1e-5)
    out = stub(weak)  # hook unset after the stream: the features come through untouched
    assert torch.equal(out["seg_logits"][:, 1:], weak)
    with_p0 = HermesStreams(_settings(feature_perturbation=1.0, fp_dropout=0.0)).terms(Stub(), x, mask, weak, strong,
                                                                                        pl)
    z = weak[:, 0]
    ce = torch.where(pl["seg_pseudo"] > 0, F.softplus(-z), F.softplus(z))
    assert with_p0["seg_fp"].item() == pytest.approx((ce * pl["seg_keep"]).mean().item(), rel=1e-5)


def test_both_streams_share_one_forward_and_off_means_nothing(monkeypatch):
    """Mutations checked: a stream run when its weight is 0; the fp rows placed before the mixes."""
    monkeypatch.setattr(hermes_streams, "zero_centred_masks", lambda n, shape, ratio, device: M[None].repeat(n, 1, 1))
    x, mask, strong, pl = _batch()
    stub = Stub()
    assert HermesStreams(_settings()).terms(stub, x, mask, strong, strong, pl) == {} and stub.seen == []
    terms = HermesStreams(_settings(copy_paste=0.5, feature_perturbation=2.0, fp_dropout=0.0)).terms(
        stub, x, mask, strong + 1, strong, pl)
    assert set(terms) == {"copy_paste", "seg_fp", "cls_fp"} and len(stub.seen) == 1
    assert stub.seen[0].shape[0] == 6 and torch.equal(stub.seen[0][4:], strong + 1)


def test_weighted_total_by_value():
    """ρ_u · (seg.w · (w_cp·cp + w_fp·seg_fp) + cls.w · w_fp·cls_fp). Mutations checked: ρ_u not applied; w_fp on
    the copy-paste term; cls.w on the segmentation side."""
    streams = HermesStreams(_settings(copy_paste=0.5, feature_perturbation=2.0))
    terms = {"copy_paste": torch.tensor(2.0), "seg_fp": torch.tensor(3.0), "cls_fp": torch.tensor(5.0)}
    value = streams.weighted(terms, {"seg": 0.5, "cls": 1.1}, 0.25)
    assert float(value) == pytest.approx(0.25 * (0.5 * (0.5 * 2.0 + 2.0 * 3.0) + 1.1 * 2.0 * 5.0))


def test_hermes_adds_the_streams_to_its_total(monkeypatch):
    """Hermes' total = the paper's total + the weighted streams, the streams' terms logged, and nothing of them by
    default. Mutations checked: Hermes' total not overridden (streams computed, not trained on); ρ_u left out;
    the streams run with both weights 0."""
    from test_step import StubNet, make_config, views

    fixed = {"copy_paste": torch.tensor(2.0), "seg_fp": torch.tensor(3.0), "cls_fp": torch.tensor(5.0)}
    monkeypatch.setattr(HermesStreams, "terms", lambda self, *args: dict(fixed) if self.active else {})
    weak, strong = views([5.0, -5.0])
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    labeled = (x, (x[:, 0] > 0).long(), torch.tensor([1, 0]))
    config = make_config(hermes__copy_paste=0.5, hermes__feature_perturbation=2.0, ssl__unsup_rampup=0.5)
    method = build_method(config, torch.device("cpu"), StubNet())
    total, logs, _ = method.step(StubNet(), labeled, (weak, strong), 10)
    assert {"copy_paste", "seg_fp", "cls_fp"} <= set(logs)
    paper = combine_terms({k: v for k, v in logs.items() if k not in fixed}, method.loss_config, 10)
    rho_u = ramp_weights(method.loss_config, 10)["unsup"]
    assert 0 < rho_u < 1
    extra = rho_u * (0.5 * (0.5 * 2.0 + 2.0 * 3.0) + 1.1 * 2.0 * 5.0)
    assert total.item() == pytest.approx(float(paper) + extra, rel=1e-5)
    default = build_method(make_config(), torch.device("cpu"), StubNet())
    _, logs, _ = default.step(StubNet(), labeled, (weak, strong), 10)
    assert not set(fixed) & set(logs)


@pytest.mark.slow
def test_hermes_trains_two_iterations_with_both_streams(phantom_split, tmp_path):
    """``--method hermes`` with copy-paste and feature perturbation on, end to end; the row name says so."""
    out = tmp_path / "run"
    argv = ["--config", str(SMOKE_CONFIG), "--data", str(phantom_split), "--labels", "4", "--out", str(out),
            "--device", "cpu", "--method", "hermes", "--set", "train.iters=2", "hermes.copy_paste=1.0",
            "hermes.feature_perturbation=0.5"]
    assert train_main(argv, task="seg") == 0
    scalars = read_scalars(out / "tensorboard")
    latest = torch.load(out / "checkpoints" / "latest.pt", weights_only=False)
    assert latest["step"] == 2 and latest["config"]["hermes"]["copy_paste"] == 1.0
    assert {"ssl/copy_paste", "ssl/seg_fp", "ssl/cls_fp"} <= set(scalars), sorted(scalars)
