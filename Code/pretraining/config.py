"""Pre-training configuration: ``configs/pretrain.yaml`` (every key, with its default) ← ``--config`` ← flags ←
``--set``; the same layering, ``base:`` inheritance and validation rules as the trainers' configs
(Code/engine/config.py), on a schema of its own."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Iterable, Optional

from Code.engine.config import CONFIG_DIR, _load_chain, _merge_into, _read_yaml
from Code.errors import UserError

PRETRAIN_CONFIG = CONFIG_DIR / "pretrain.yaml"
OPTIMIZERS = ("sgd", "adamw")
FIXED = ("task", "method")


def load_pretrain_config(path: Optional[str] = None, overrides: Iterable[Dict[str, Any]] = ()) -> Dict[str, Any]:
    """Resolve a pre-training config (unknown keys and wrong types are a one-line :class:`UserError`)."""
    config = _read_yaml(PRETRAIN_CONFIG)
    layers = []
    if path:
        layers.append(_load_chain(Path(path)))
    layers.extend(overrides)
    for layer in layers:
        layer = dict(layer)
        for key in FIXED:  # fixed values (the trainers' checks know other choices for these names)
            if key in layer and layer.pop(key) != config[key]:
                raise UserError(f"config key '{key}' of pretrain.py is fixed to {config[key]!r}")
        _merge_into(config, layer, validate=True)
    validate_pretrain_config(config)
    return config


def _positive(config: Dict[str, Any], section: str, *keys: str) -> None:
    for key in keys:
        if config[section][key] <= 0:
            raise UserError(f"config key '{section}.{key}' must be positive, got {config[section][key]}")


def validate_pretrain_config(config: Dict[str, Any]) -> None:
    """Cross-field checks that a single key's type cannot express."""
    from Code.data.transforms import resolve_aug

    size = config["data"]["size"]
    if size <= 0 or size % 32:
        raise UserError(f"config key 'data.size' must be a positive multiple of 32, got {size}")
    if config["data"]["in_channels"] not in (1, 3):
        raise UserError(f"config key 'data.in_channels' must be 1 or 3, got {config['data']['in_channels']}")
    pre = config["pretrain"]
    _positive(config, "pretrain", "iters", "batch", "lr", "temperature", "queue_size", "proj_hidden", "proj_dim",
              "bn_splits")
    _positive(config, "monitor", "every", "knn_k")
    _positive(config, "log", "every")
    if pre["optimizer"] not in OPTIMIZERS:
        raise UserError(f"config key 'pretrain.optimizer' must be one of {', '.join(OPTIMIZERS)}, "
                        f"got {pre['optimizer']!r}")
    if not 0.0 <= pre["key_momentum"] < 1.0:
        raise UserError(f"config key 'pretrain.key_momentum' must be in [0, 1), got {pre['key_momentum']}")
    if pre["warmup_iters"] < 0 or pre["weight_decay"] < 0:
        raise UserError("config keys 'pretrain.warmup_iters' and 'pretrain.weight_decay' must be >= 0")
    if pre["batch"] % pre["bn_splits"] or pre["batch"] // pre["bn_splits"] < 2:
        raise UserError(f"config key 'pretrain.batch' ({pre['batch']}) must be a multiple of 'pretrain.bn_splits' "
                        f"({pre['bn_splits']}) with at least 2 images per split")
    if pre["queue_size"] < pre["batch"]:
        raise UserError(f"config key 'pretrain.queue_size' ({pre['queue_size']}) must be at least "
                        f"'pretrain.batch' ({pre['batch']})")
    try:
        resolve_aug(config["views"])
    except UserError as exc:
        raise UserError(str(exc).replace("aug.", "views.")) from None
