"""Building smp encoders with optional pretrained weights, offline-friendly.

``encoder_weights``:
* ``None`` — random initialisation (the default; nothing is downloaded).
* a weights name such as ``"imagenet"`` — smp downloads it from the Hugging Face hub; when that fails (offline,
  ``HF_HUB_OFFLINE=1``, no network) a one-line :class:`UserError` explains how to use a local file instead.
* a path to a local ``.pth``/``.pt``/``.safetensors`` file — a state dict of the encoder (optionally under a
  ``"state_dict"`` or ``"model"`` key, optionally with a ``"module."``/``"encoder."`` prefix). Missing keys,
  unexpected keys (other than a classifier head: ``fc.``, ``classifier.``, ``head.``, ``last_linear.``) and shape
  mismatches are reported in one line. A 3-channel first convolution is summed over its input channels for
  ``in_channels=1``, as smp does for its own pretrained weights. A file that records the encoder it was made for
  (``encoder_name`` and ``in_channels`` beside its ``state_dict``, as ``Code/pretrain.py`` writes ``encoder.pth``)
  is refused in one line when they differ from the model's.
* a Hermes checkpoint (``best.pt``/``latest.pt`` of ``seg_train.py``/``cls_train.py``, ``latest.pt`` of
  ``pretrain.py``): its encoder's weights are taken (with a note), after the same check against the encoder name
  and channels of its saved config. Files are read with ``weights_only=True`` (no code from the file runs); one
  that does not load so is a one-line error.
"""
from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from urllib.parse import urlparse
from typing import Dict, Optional

import segmentation_models_pytorch as smp
import torch
from torch import nn

from Code.errors import UserError

_HEAD_PREFIXES = ("fc.", "classifier.", "head.", "last_linear.")
_WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".safetensors")


def _is_weights_path(weights: str) -> bool:
    return os.sep in weights or "/" in weights or weights.endswith(_WEIGHT_SUFFIXES) or Path(weights).is_file()


def _hub_unreachable_reason(timeout_s: float = 3.0) -> Optional[str]:
    """Why the Hugging Face hub cannot be reached, or None. Checked up front so that an offline machine fails in
    seconds instead of after the hub client's retries (~20–70 s). Skipped behind a proxy (it may still work)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return None  # the hub client fails at once by itself (or finds the weights in its local cache)
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None
    endpoint = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout=timeout_s).close()
    except OSError as exc:
        return f"{endpoint.hostname} unreachable: {exc}"
    return None


def _get_encoder(name: str, in_channels: int, weights: Optional[str]) -> nn.Module:
    try:
        return smp.encoders.get_encoder(name, in_channels=in_channels, depth=5, weights=weights)
    except KeyError as exc:
        raise UserError(f"model.encoder_name / encoder_weights: {exc.args[0] if exc.args else exc}") from None
    except RuntimeError as exc:
        if "Unknown model" in str(exc):  # timm's message for an unknown tu- name
            raise UserError(f"model.encoder_name={name!r}: unknown timm model") from None
        raise


def build_encoder(name: str, in_channels: int, weights: Optional[str]) -> nn.Module:
    """smp encoder ``name`` (depth 5) with ``weights`` as described in the module docstring."""
    if weights is None:
        return _get_encoder(name, in_channels, None)
    if not isinstance(weights, (str, os.PathLike)):
        raise UserError(f"model.encoder_weights must be null, a weights name or a file path, got {weights!r}")
    weights = os.fspath(weights)
    if _is_weights_path(weights):
        encoder = _get_encoder(name, in_channels, None)
        load_encoder_weights(encoder, weights, in_channels, encoder_name=name)
        return encoder
    known = smp.encoders.encoders.get(name, {}).get("pretrained_settings")
    if known is not None and weights not in known:
        raise UserError(f"model.encoder_weights={weights!r} is not a weights name of encoder {name!r} "
                        f"(known: {', '.join(known)}) nor an existing file")
    reason = _hub_unreachable_reason()
    if reason is None:
        try:
            return _get_encoder(name, in_channels, weights)
        except UserError:
            raise
        except Exception as exc:  # noqa: BLE001 — any download failure becomes one actionable line
            from huggingface_hub import constants

            reason = ("HF_HUB_OFFLINE is set and the weights are not in the local cache" if constants.HF_HUB_OFFLINE
                      else f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    raise UserError(
        f"model.encoder_weights={weights!r}: cannot download the pretrained weights of encoder {name!r} "
        f"({reason}). Save the encoder's state dict to a file on a machine with network "
        f"(torch.save(smp.encoders.get_encoder({name!r}, weights={weights!r}).state_dict(), 'encoder.pth')) "
        f"and set model.encoder_weights to that file's path")


def _check_recorded_encoder(raw, path: str, encoder_name: Optional[str], in_channels: int) -> None:
    """One-line UserError when the file records another encoder name or input channel count than the model's."""
    if not isinstance(raw, dict):
        return
    saved_name, saved_channels = raw.get("encoder_name"), raw.get("in_channels")
    name_differs = encoder_name is not None and saved_name is not None and saved_name != encoder_name
    channels_differ = saved_channels is not None and saved_channels != in_channels
    if name_differs or channels_differ:
        raise UserError(
            f"model.encoder_weights: {path} was made for encoder {saved_name!r} with {saved_channels} input "
            f"channel(s), but the model is {encoder_name!r} with {in_channels} (model.encoder_name, "
            f"data.in_channels); use the same settings, or pre-train again with them")


def _safe_globals() -> list:
    """What a Hermes training checkpoint needs beyond tensors to load with ``weights_only=True``: the numpy RNG
    state (arrays of uint32)."""
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    return [core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def _load_weights_file(path: str):
    """The object in ``path``, loaded without running code from the file (``weights_only=True``); one line if not."""
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file
        try:
            return load_file(path, device="cpu")
        except Exception as exc:  # noqa: BLE001
            raise UserError(f"model.encoder_weights: cannot read {path}: {type(exc).__name__}: "
                            f"{_first_line(exc)}") from None
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 — PyTorch's multi-line advice (weights_only=False) is not for users
        raise UserError(f"model.encoder_weights: cannot read {path} as weights ({type(exc).__name__}): it must be "
                        "an encoder state dict, a pretrain.py encoder.pth or a checkpoint of seg_train.py, "
                        "cls_train.py or pretrain.py") from None


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else ""


def _checkpoint_encoder(state: dict, path: str, encoder_name: Optional[str], in_channels: Optional[int]) -> dict:
    """The encoder part (``encoder.*`` of ``model``) of a Hermes checkpoint (seg_train.py / cls_train.py
    ``best.pt``/``latest.pt``, pretrain.py ``latest.pt``), after checking its encoder name and channels."""
    from Code.common.checkpoint import clean_state_dict
    from Code.engine.run_kind import script_of

    config = state["config"]
    recorded = {"encoder_name": config.get("model", {}).get("encoder_name"),
                "in_channels": config.get("data", {}).get("in_channels")}
    if in_channels is not None:
        _check_recorded_encoder(recorded, path, encoder_name, in_channels)
    model = clean_state_dict(state["model"])
    encoder = {k[len("encoder."):]: v for k, v in model.items() if k.startswith("encoder.")}
    if not encoder:
        raise UserError(f"model.encoder_weights: {path} is a checkpoint of {script_of(config.get('task'))} without "
                        "encoder weights")
    if os.environ.get("RANK", "0") == "0":
        print(f"note: model.encoder_weights: taking the encoder of {path} (a checkpoint of "
              f"{script_of(config.get('task'))}, step {state.get('step')}); its other weights are not used",
              file=sys.stderr)
    return encoder


def _read_state_dict(path: str, encoder_name: Optional[str] = None,
                     in_channels: Optional[int] = None) -> Dict[str, torch.Tensor]:
    if not Path(path).is_file():
        raise UserError(f"model.encoder_weights: file not found: {path}")
    state = _load_weights_file(path)
    if isinstance(state, dict) and isinstance(state.get("config"), dict) and isinstance(state.get("model"), dict):
        state = _checkpoint_encoder(state, path, encoder_name, in_channels)
    elif in_channels is not None:
        _check_recorded_encoder(state, path, encoder_name, in_channels)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"model.encoder_weights: {path} does not hold a state dict of tensors")
    for prefix in ("module.", "encoder."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def _first_items(names) -> str:
    names = sorted(names)
    return ", ".join(names[:3]) + (f" … ({len(names)} in all)" if len(names) > 3 else "")


def load_encoder_weights(encoder: nn.Module, path: str, in_channels: int, encoder_name: Optional[str] = None) -> None:
    """Load the state dict in ``path`` into ``encoder`` strictly; one-line UserError on any mismatch (including a
    recorded encoder name other than ``encoder_name`` or other input channels, see the module docstring)."""
    state = _read_state_dict(path, encoder_name, in_channels)
    expected = encoder.state_dict()
    state = {k: v for k, v in state.items() if k in expected or not k.startswith(_HEAD_PREFIXES)}
    missing = expected.keys() - state.keys()
    unexpected = state.keys() - expected.keys()
    mismatched = []
    for key in expected.keys() & state.keys():
        want, got = expected[key].shape, state[key].shape
        if want != got and in_channels == 1 and len(got) == 4 and got[1] == 3 and want == (got[0], 1, *got[2:]):
            state[key] = state[key].sum(dim=1, keepdim=True)  # 3-channel first conv → grey input
        elif want != got:
            mismatched.append(f"{key} {tuple(got)} vs {tuple(want)}")
    problems = []
    if missing:
        problems.append(f"missing keys: {_first_items(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_first_items(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches (file vs model): {_first_items(mismatched)}")
    if problems:
        raise UserError(f"model.encoder_weights: {path} does not fit the encoder: " + "; ".join(problems))
    nn.Module.load_state_dict(encoder, state, strict=True)
