"""The method registry and each method's own state (Code/methods/): names read from the registry, state saved and
restored by the method, and checkpoints of the layout before Code/methods/ mapped into it."""
import pytest
import torch

from Code.engine.builders import build_model
from Code.engine.config import load_config
from Code.errors import UserError
from Code.methods import REGISTRY, Method, build_method, method_names, method_state, register

pytestmark = pytest.mark.usefixtures("single_thread")


def test_method_choices_come_from_the_registry(monkeypatch):
    """Mutations checked: ``--method`` choices / config validation reading a fixed tuple instead of the registry;
    a second registration under a taken name silently replacing the first."""
    from Code.engine.cli import build_parser

    assert method_names()[:3] == ("supervised", "fixmatch", "hermes")
    monkeypatch.setitem(REGISTRY, "stub_method", type("Stub", (Method,), {}))
    assert "stub_method" in method_names()
    assert "stub_method" in build_parser("seg")._option_string_actions["--method"].choices
    assert load_config(None, [{"method": "stub_method"}])["method"] == "stub_method"
    with pytest.raises(ValueError, match="registered twice"):
        register("hermes")(type("Other", (Method,), {}))
    monkeypatch.delitem(REGISTRY, "stub_method")
    with pytest.raises(UserError, match="must be one of supervised, fixmatch, hermes"):
        load_config(None, [{"method": "stub_method"}])


def _trained(config, model):
    """A hermes method after two steps of ``model`` (banks, pool prior and EMA teacher all moved)."""
    method = build_method(config, torch.device("cpu"), model)
    gen = torch.Generator().manual_seed(0)
    for step in range(2):
        x, weak = torch.randn(2, 1, 64, 64, generator=gen), torch.randn(2, 1, 64, 64, generator=gen)
        mask = (torch.rand(2, 64, 64, generator=gen) > 0.7).long()
        method.step(model, (x, mask, torch.tensor([0, 1])), (weak, weak + 0.1), step)
        method.after_step(model, step)
    return method


def _flat(state):
    return {f"{part}.{key}": value for part, sub in state.items() for key, value in sub.items()}


@pytest.mark.parametrize("layout", ["method", "before Code/methods/"])
def test_method_state_round_trip_and_old_layout(layout):
    """Mutations checked: the teacher, the pool prior or the banks left out of ``state_dict``; ``method_state``
    not mapping the old top-level keys; a missing teacher accepted silently."""
    config = load_config("configs/smoke.yaml", [{"method": "hermes", "ssl": {"prior_aware": True, "teacher": "ema"},
                                                 "contrast": {"min_pixels": 1}}])
    torch.manual_seed(0)
    model = build_model(config)
    saved = _trained(config, model).state_dict()
    assert set(saved) == {"teacher", "pool_prior", "banks"}
    assert int(saved["pool_prior"]["seen"]) == 2 and saved["banks"]["image.filled"].sum() > 0
    checkpoint = {"step": 2, "method": saved} if layout == "method" else {"step": 2, "model": {}, **saved}
    fresh = build_method(config, torch.device("cpu"), build_model(config))
    before = _flat(fresh.state_dict())
    assert any(not torch.equal(before[k], v) for k, v in _flat(saved).items())
    fresh.load_state_dict(method_state(checkpoint))
    restored = _flat(fresh.state_dict())
    assert set(restored) == set(_flat(saved)) and all(torch.equal(restored[k], v) for k, v in _flat(saved).items())
    with pytest.raises(UserError, match="no EMA teacher"):
        fresh.load_state_dict({k: v for k, v in saved.items() if k != "teacher"})
