"""Configuration: YAML files layered on ``configs/base.yaml``, command-line overrides, validation.

A config file may name ``base: <file>`` (relative to itself) to inherit from another file; every file is finally
layered on ``configs/base.yaml``, which lists every valid key with its default. Unknown keys and values of the
wrong type are a :class:`~Code.errors.UserError` that names the key and lists the valid ones.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Dict, Iterable, Optional

import yaml

from Code.errors import UserError

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
BASE_CONFIG = CONFIG_DIR / "base.yaml"

METHODS = ("supervised", "fixmatch", "hermes")
CHOICES = {
    "method": METHODS,
    "device": ("auto", "cpu", "cuda"),
    "task": ("seg", "cls"),
    "ssl.threshold": ("dual", "single"),
    "ssl.combine": ("and", "or"),
    "model.saliency_mode": ("cam", "gradient"),
    "eval.select": ("best", "final"),
    "train.cls_optimizer": ("sgd", "adam"),
    "ssl.seg_unsup_loss": ("dice", "ce", "ce_dice"),
}
# Keys whose value may be of any type (free-form dicts validated elsewhere, or null-able paths/numbers).
FREE_KEYS = {"data.aug", "data.split", "data.labels", "model.encoder_weights"}


def _read_yaml(path: Path) -> Dict[str, Any]:
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must hold a mapping of settings")
    return data


def _load_chain(path: Path, seen: Optional[set] = None) -> Dict[str, Any]:
    """Read ``path`` and, recursively, the files it names as ``base`` (the later file wins)."""
    seen = set() if seen is None else seen
    path = path.resolve()
    if path in seen:
        raise UserError(f"config file {path} inherits from itself through 'base'")
    seen.add(path)
    data = _read_yaml(path)
    parent = data.pop("base", None)
    if parent is None or path == BASE_CONFIG.resolve():
        return data
    parent_path = (path.parent / parent) if not Path(parent).is_absolute() else Path(parent)
    merged = _load_chain(parent_path, seen)
    _merge_into(merged, data, validate=False)
    return merged


def _merge_into(dst: Dict[str, Any], src: Dict[str, Any], validate: bool, prefix: str = "") -> None:
    for key, value in src.items():
        name = f"{prefix}{key}"
        if validate and key not in dst:
            valid = ", ".join(sorted(dst))
            raise UserError(f"unknown config key '{name}' (valid keys{' in ' + prefix[:-1] if prefix else ''}: {valid})")
        if isinstance(value, dict) and isinstance(dst.get(key), dict) and name not in FREE_KEYS:
            _merge_into(dst[key], value, validate, prefix=f"{name}.")
        else:
            if validate:
                _check_type(name, dst.get(key), value)
            dst[key] = copy.deepcopy(value)


def _check_type(name: str, default: Any, value: Any) -> None:
    if name in FREE_KEYS or default is None:
        return
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif isinstance(default, dict):
        ok = isinstance(value, dict)
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise UserError(f"config key '{name}' expects {type(default).__name__}, got {value!r}")
    if name in CHOICES and value not in CHOICES[name]:
        raise UserError(f"config key '{name}' must be one of {', '.join(CHOICES[name])}, got {value!r}")


def parse_set_option(item: str) -> Dict[str, Any]:
    """Turn ``"a.b=value"`` into ``{"a": {"b": value}}``; the value is read as YAML (numbers, bools, lists)."""
    if "=" not in item:
        raise UserError(f"--set expects key=value, got '{item}'")
    key, raw = item.split("=", 1)
    key = key.strip()
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        raise UserError(f"--set {key}: cannot read value '{raw}'") from None
    nested: Dict[str, Any] = {}
    node = nested
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return nested


def load_config(path: Optional[str] = None, overrides: Iterable[Dict[str, Any]] = (),
                defaults: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Resolve a config: base, then ``defaults`` (an entry script's), the file at ``path``, each override in order."""
    config = _read_yaml(BASE_CONFIG)
    layers = [defaults] if defaults else []
    if path:
        layers.append(_load_chain(Path(path)))
    layers.extend(overrides)
    for layer in layers:
        _merge_into(config, layer, validate=True)
    validate_config(config)
    return config


def validate_config(config: Dict[str, Any]) -> None:
    """Cross-field checks that a single key's type cannot express."""
    size = config["data"]["size"]
    if size <= 0 or size % 32:
        raise UserError(f"config key 'data.size' must be a positive multiple of 32, got {size}")
    if config["data"]["in_channels"] not in (1, 3):
        raise UserError(f"config key 'data.in_channels' must be 1 or 3, got {config['data']['in_channels']}")
    train = config["train"]
    for key in ("iters", "batch_labeled", "batch_unlabeled"):
        if train[key] <= 0:
            raise UserError(f"config key 'train.{key}' must be positive, got {train[key]}")
    if config["eval"]["every"] <= 0 or config["log"]["every"] <= 0:
        raise UserError("config keys 'eval.every' and 'log.every' must be positive")
    _validate_ssl(config["ssl"], config["components"])


SSL_CHOICES = {"teacher": ("joint", "ema", "eval", "train"), "threshold": ("dual", "single"),
               "combine": ("and", "or"), "class_ratio": ("batch", "pool"), "seg_unsup_loss": ("dice", "ce", "ce_dice")}
SCHEDULE_KEYS = ("unsup_rampup", "contrast_warmup", "contrast_rampup", "consistency_rampup")


def _validate_ssl(ssl: Dict[str, Any], components: Dict[str, Any]) -> None:
    for key, choices in SSL_CHOICES.items():
        if ssl[key] not in choices:
            raise UserError(f"config key 'ssl.{key}' must be one of {', '.join(choices)}, got {ssl[key]!r}")
    if components["consistency_mode"] not in ("cosine", "stopgrad"):
        raise UserError(f"config key 'components.consistency_mode' must be cosine or stopgrad, "
                        f"got {components['consistency_mode']!r}")
    for key in SCHEDULE_KEYS:
        if not 0.0 <= ssl[key] <= 1.0:
            raise UserError(f"config key 'ssl.{key}' is a fraction of train.iters in [0, 1], got {ssl[key]} "
                            f"(e.g. 300 of 3000 iterations is 0.1)")
    for key in ("ema_decay", "prior_momentum"):
        if not 0.0 <= ssl[key] < 1.0:
            raise UserError(f"config key 'ssl.{key}' must be in [0, 1), got {ssl[key]}")


def schedule_steps(config: Dict[str, Any], key: str) -> float:
    """A schedule key of ``ssl`` (a fraction of the run) in iterations: ``ssl[key] · train.iters``."""
    return float(config["ssl"][key]) * float(config["train"]["iters"])


def dump_config(config: Dict[str, Any]) -> str:
    """The resolved config as YAML text (saved as RUN/config.yaml and inside every checkpoint)."""
    return yaml.safe_dump(config, sort_keys=False)
