"""A checkpoint → its network, rebuilt from the saved config, weights loaded, in eval mode."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import torch

from Code.common.checkpoint import load_checkpoint
from Code.errors import UserError
from Code.models import HermesNet


def load_model_from_checkpoint(path: Union[str, Path], device: Union[str, torch.device] = "cpu"
                               ) -> Tuple[torch.nn.Module, Dict[str, Any], Optional[int]]:
    """Rebuild the network of a checkpoint from its saved config and load its weights: ``(model.eval(), config, step)``."""
    state = load_checkpoint(path, map_location="cpu")
    config = state["config"]
    model = HermesNet.from_config(dict(config, model=dict(config["model"], encoder_weights=None)))  # weights: below
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise UserError(f"{path}: weights do not match the model of its config ({str(exc).splitlines()[0]})") from None
    return model.to(device).eval(), config, state.get("step")
