"""The checkpoint file: atomic writes, reading with or without DDP / torch.compile prefixes, ``best.pt``'s slim state.

Shared by the trainers (they write and resume), ``Code/models/encoders.py`` (pre-trained encoder weights) and
``Code/inference/loading.py`` (which rebuilds the network of a checkpoint). Imports nothing of Hermes but
``Code.errors`` and ``Code.common``.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Dict, Union

import torch

from Code.common.file_mode import user_file_mode
from Code.errors import UserError

_PREFIXES = ("module.", "_orig_mod.")


def save_checkpoint(path: Union[str, Path], state: Dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically: a temporary file in the same folder, flushed, given the mode of
    ``common.file_mode.user_file_mode`` (0o666 & ~umask), then renamed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, user_file_mode())  # mkstemp made it 0600; the user's umask decides, as for any new file
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


BEST_KEYS = ("step", "config", "model")  # what evaluate.py, predict.py, export.py and the sealed test read


def slim_state(state: Dict[str, Any], **extra: Any) -> Dict[str, Any]:
    """The part of a trainer state that ``best.pt`` keeps: :data:`BEST_KEYS` plus ``extra`` (e.g. ``val``) and
    ``slim: True``; no optimiser, scheduler, EMA teacher, memory bank, stream or RNG state (those are ``latest.pt``'s:
    a run continues from there, never from ``best.pt``)."""
    return dict({key: state[key] for key in BEST_KEYS}, slim=True, **extra)


def clean_state_dict(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Strip the ``module.`` (DDP) and ``_orig_mod.`` (torch.compile) prefixes from parameter names."""
    cleaned = {}
    for key, value in state.items():
        changed = True
        while changed:
            changed = False
            for prefix in _PREFIXES:
                if key.startswith(prefix):
                    key, changed = key[len(prefix):], True
        cleaned[key.replace("._orig_mod.", ".").replace(".module.", ".")] = value
    return cleaned


def load_checkpoint(path: Union[str, Path], map_location: Union[str, torch.device] = "cpu") -> Dict[str, Any]:
    """Read a checkpoint written by the trainer; a one-line error if it is missing or not a Hermes checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # torch raises many kinds for a damaged file
        raise UserError(f"cannot read checkpoint {path}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise UserError(f"{path} is not a Hermes checkpoint (no 'model' and 'config' entries)")
    state["model"] = clean_state_dict(state["model"])
    return state
