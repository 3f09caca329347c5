"""HermesNet: shapes for every switch combination, gradient routing, parameter groups, weights and errors.

Uses timm's tiny ``test_resnet`` through smp's ``tu-`` prefix (random weights, nothing downloaded).
"""
import itertools
import time

import pytest
import torch

from Code.errors import UserError
from Code.models import HermesNet

TINY = dict(encoder_name="tu-test_resnet", decoder_channels=(32, 16, 16, 8, 8), pixel_embed_dim=16,
            image_embed_dim=8, consist_dim=12)
HEADS = ("seg_head", "decoder", "cls_branch", "cls_head", "pixel_projection", "image_projection",
         "consist_seg_projection", "consist_cls_projection")


pytestmark = pytest.mark.usefixtures("single_thread")


def tiny_net(**overrides):
    torch.manual_seed(0)
    return HermesNet(**{**TINY, **overrides})


def _grads(module):
    return [p.grad for p in module.parameters()]


def _has_grad(module):
    return any(g is not None and g.abs().sum() > 0 for g in _grads(module))


def _no_grad(module):
    return all(g is None or g.abs().sum() == 0 for g in _grads(module))


def _full_loss(out):
    return sum(value.float().pow(2).mean() for value in out.values())


@pytest.mark.parametrize("ias,saliency,shared", list(itertools.product([False, True], repeat=3)))
def test_every_switch_combination_shapes_and_all_heads_learn(ias, saliency, shared):
    net = tiny_net(ias=ias, saliency=saliency, shared_encoder=shared, num_classes=3)
    out = net(torch.randn(2, 1, 64, 64))
    expected = {"seg_logits": (2, 2, 64, 64), "cls_logits": (2, 3), "pixel_embed": (2, 16, 8, 8),
                "image_embed": (2, 8), "consist_seg": (2, 12), "consist_cls": (2, 12)}
    if saliency:
        expected["saliency"] = (2, 1, 16, 16)
    assert {k: tuple(v.shape) for k, v in out.items()} == expected
    assert torch.allclose(out["pixel_embed"].norm(dim=1), torch.ones(2, 8, 8), atol=1e-5)
    assert torch.allclose(out["image_embed"].norm(dim=1), torch.ones(2), atol=1e-5)
    if saliency:
        assert 0 <= out["saliency"].min() and out["saliency"].max() <= 1
    _full_loss(out).backward()
    for name in HEADS:
        assert _has_grad(getattr(net, name)), name
    assert (net.cls_branch.ias is not None) == ias


@pytest.mark.parametrize("size", [(32, 32), (64, 96), (128, 64)])
def test_output_size_equals_input_size(size):
    net = tiny_net(ias=True, saliency=True, in_channels=3).eval()
    with torch.no_grad():
        out = net(torch.randn(1, 3, *size))
    h, w = size
    assert out["seg_logits"].shape == (1, 2, h, w)
    assert out["pixel_embed"].shape[-2:] == (h // 8, w // 8) and out["saliency"].shape[-2:] == (h // 4, w // 4)


def test_bad_input_sizes_and_settings_raise_user_error():
    net = tiny_net()
    with pytest.raises(UserError, match="multiple of 32"):
        net(torch.randn(1, 1, 64, 70))
    with pytest.raises(UserError, match="in_channels"):
        net(torch.randn(1, 3, 64, 64))
    for bad in (dict(colour=True), dict(ias="yes"), dict(in_channels=2), dict(saliency_mode="gradcam"),
                dict(decoder_channels=(8, 8)), dict(num_classes=1), dict(encoder_name="no_such_encoder")):
        with pytest.raises(UserError):
            tiny_net(**bad)


def test_param_groups_cover_every_parameter_once():
    for shared in (True, False):
        net = tiny_net(ias=True, saliency=True, shared_encoder=shared)
        groups = net.param_groups()
        ids = [id(p) for group in groups.values() for p in group]
        assert len(ids) == len(set(ids)) == len(list(net.parameters()))
        seg_ids, cls_ids = {id(p) for p in groups["seg"]}, {id(p) for p in groups["cls"]}
        assert {id(p) for p in net.encoder.parameters()} <= seg_ids
        assert {id(p) for p in net.cls_branch.ias.parameters()} <= cls_ids
        assert {id(p) for p in net.consist_seg_projection.parameters()} <= seg_ids
        assert {id(p) for p in net.image_projection.parameters()} <= cls_ids
        if not shared:
            assert {id(p) for p in net.cls_encoder.parameters()} <= cls_ids


def test_classifier_loss_does_not_reach_segmentation_through_ias():
    net = tiny_net(ias=True, shared_encoder=False)
    net(torch.randn(2, 1, 64, 64))["cls_logits"].sum().backward()
    assert _has_grad(net.cls_branch.ias) and _has_grad(net.cls_encoder)
    assert _no_grad(net.decoder) and _no_grad(net.encoder)

    net = tiny_net(ias=True, shared_encoder=False, detach_seg_for_cls=False)
    net(torch.randn(2, 1, 64, 64))["cls_logits"].sum().backward()
    assert _has_grad(net.decoder)


@pytest.mark.parametrize("mode", ["cam", "gradient"])
def test_segmentation_loss_does_not_reach_classifier_through_saliency(mode):
    net = tiny_net(ias=True, saliency=True, saliency_mode=mode)
    net(torch.randn(2, 1, 64, 64))["seg_logits"].sum().backward()
    assert _has_grad(net.decoder)
    assert _no_grad(net.cls_branch) and _no_grad(net.cls_head)

    if mode == "cam":
        net = tiny_net(saliency=True, detach_saliency=False)
        net(torch.randn(2, 1, 64, 64))["seg_logits"].sum().backward()
        assert _has_grad(net.cls_head) and _has_grad(net.cls_branch)


def test_gradient_saliency_leaves_parameter_grads_alone_and_runs_without_grad_inference_and_autocast():
    net = tiny_net(saliency=True, saliency_mode="gradient", shared_encoder=False)
    x = torch.randn(2, 1, 64, 64)
    out = net(x)
    assert all(p.grad is None for p in net.parameters())  # the input-gradient pass wrote nothing
    assert out["saliency"].amax(dim=(1, 2, 3)).allclose(torch.ones(2)) and not out["saliency"].requires_grad
    assert not x.requires_grad
    with torch.no_grad():
        quiet = net(x)
    assert not any(v.requires_grad for v in quiet.values())
    with torch.inference_mode():
        evaluated = net.eval()(torch.randn(2, 1, 64, 64))
    assert evaluated["saliency"].amax(dim=(1, 2, 3)).allclose(torch.ones(2))
    net.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = net(x)
    assert torch.isfinite(mixed["saliency"]).all() and mixed["saliency"].max() > 0


def test_imagenet_weights_offline_fail_fast(monkeypatch):
    from huggingface_hub import constants
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    start = time.monotonic()
    with pytest.raises(UserError, match="encoder_weights.*file"):
        HermesNet(encoder_name="resnet18", encoder_weights="imagenet")
    assert time.monotonic() - start < 10


def test_local_encoder_weights(tmp_path):
    import segmentation_models_pytorch as smp
    source = smp.encoders.get_encoder("tu-test_resnet", in_channels=3, weights=None)
    state = source.state_dict()
    path = tmp_path / "encoder.pth"
    torch.save({"state_dict": state}, path)
    net = tiny_net(encoder_weights=str(path))  # 3-channel file into a grey-input model
    first = next(k for k, v in state.items() if v.dim() == 4)
    assert torch.allclose(net.encoder.state_dict()[first], state[first].sum(1, keepdim=True))
    other = next(k for k in state if k != first and state[k].dim() == 4)
    assert torch.equal(net.encoder.state_dict()[other], state[other])

    torch.save({k: v for k, v in state.items() if k != other}, path)
    with pytest.raises(UserError, match="missing keys"):
        tiny_net(encoder_weights=str(path))
    torch.save({**state, other: torch.zeros(1, 1, 1, 1)}, path)
    with pytest.raises(UserError, match="shape mismatches"):
        tiny_net(encoder_weights=str(path))
    with pytest.raises(UserError, match="not found"):
        tiny_net(encoder_weights=str(tmp_path / "missing.pth"))
