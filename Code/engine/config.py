"""Configuration: YAML files layered on ``configs/base.yaml``, command-line overrides, validation.

A config file may name ``base: <file>`` (relative to itself) to inherit from another file; every file is finally
layered on ``configs/base.yaml``, which lists every valid key with its default. Unknown keys and values of the
wrong type are a :class:`~Code.errors.UserError` that names the key and lists the valid ones.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Optional

import yaml

from Code.errors import UserError

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
BASE_CONFIG = CONFIG_DIR / "base.yaml"

CHOICES = {  # "method": the registered methods (Code/methods/, read when a config is checked: _choices)
    "device": ("auto", "cpu", "cuda"),
    "task": ("seg", "cls"),
    "ssl.threshold": ("dual", "single"),
    "ssl.combine": ("and", "or"),
    "model.saliency_mode": ("cam", "gradient"),
    "eval.select": ("best", "final"),
    "eval.prior_correction": ("none", "pool"),
    "train.cls_optimizer": ("sgd", "adam"),
    "ssl.seg_unsup_loss": ("dice", "ce", "ce_dice"),
    "freematch.teacher": ("joint", "ema", "eval", "train"),
    "fixmatch.teacher": ("joint", "ema", "eval", "train"),
    "fixmatch.seg_unsup_loss": ("dice", "ce", "ce_dice"),
}
# Keys whose value may be of any type (free-form dicts validated elsewhere, or null-able paths/numbers).
FREE_KEYS = {"data.aug", "data.split", "data.labels", "model.encoder_weights"}
# The valid range of every numeric key (a list's elements each): "[a, b]" closed, "(a, b)" open, mixed allowed;
# "inf" has no bound (so NaN and ±inf are never in range). The keys checked by validate_config instead (data.size,
# data.in_channels) are listed in OWN_CHECKS; tests/test_config.py checks that every numeric key of base.yaml
# is in one of the two.
RANGES = {
    "seed": "[0, inf)",
    "data.num_workers": "[0, inf)",
    "model.decoder_channels": "[1, inf)", "model.pixel_embed_dim": "[1, inf)", "model.image_embed_dim": "[1, inf)",
    "model.consist_dim": "[1, inf)",
    "train.iters": "[1, inf)", "train.batch_labeled": "[1, inf)", "train.batch_unlabeled": "[1, inf)",
    "train.seg_lr": "(0, inf)", "train.cls_lr": "(0, inf)", "train.seg_weight_decay": "[0, inf)",
    "train.cls_weight_decay": "[0, inf)", "train.cls_momentum": "[0, 1)", "train.poly_power": "[0, inf)",
    "train.grad_clip": "[0, inf)",
    "ssl.ema_decay": "[0, 1)", "ssl.prior_momentum": "[0, 1)", "ssl.prior_window": "[0, inf)",
    "ssl.prior_max_shift": "[0, inf)",  # and not in (0, 1): _validate_ssl
    "ssl.tau_hi": "[0, 1]", "ssl.tau_lo": "[0, 1]",
    "ssl.unsup_rampup": "[0, 1]", "ssl.contrast_warmup": "[0, 1]", "ssl.contrast_rampup": "[0, 1]",
    "ssl.consistency_rampup": "[0, 1]",
    "mean_teacher.consistency": "[0, inf)", "mean_teacher.rampup": "[0, 1]", "mean_teacher.ema_decay_rampup": "[0, 1)",
    "mean_teacher.ema_decay": "[0, 1)",
    "fixmatch.threshold": "[0, 1]", "fixmatch.unsup_rampup": "[0, 1]",
    "freematch.momentum": "[0, 1)", "freematch.unsup_weight": "[0, inf)", "freematch.fairness_weight": "[0, inf)",
    "bcp.mask_ratio": "(0, 1)", "bcp.alpha": "[0, inf)", "bcp.ema_decay": "[0, 1)", "bcp.pretrain_iters": "[0, 1)",
    "abd.grid": "[1, inf)", "abd.top_k": "[1, inf)", "abd.kl_share": "[0, 1]", "abd.cps_weight": "[0, inf)",
    "unimatch.threshold": "[0, 1]", "unimatch.fp_dropout": "[0, 1)", "unimatch.strong_weight": "[0, inf)",
    "unimatch.fp_weight": "[0, inf)",
    "hermes.copy_paste": "[0, inf)", "hermes.copy_paste_ratio": "(0, 1)", "hermes.copy_paste_alpha": "[0, inf)",
    "hermes.feature_perturbation": "[0, inf)", "hermes.fp_dropout": "[0, 1)",
    **{f"loss.{key}": "[0, inf)" for key in ("seg", "cls", "seg_unsup", "pixel_contrast", "cls_unsup",
                                             "image_contrast", "consistency")},
    "contrast.temperature": "(0, inf)", "contrast.image_bank_size": "[1, inf)", "contrast.pixel_bank_size": "[1, inf)",
    "contrast.max_samples": "[1, inf)", "contrast.max_views": "[1, inf)", "contrast.min_pixels": "[1, inf)",
    "eval.every": "[1, inf)", "eval.batch_size": "[1, inf)",
    "log.every": "[1, inf)", "log.image_every": "[0, inf)",  # 0 = no TensorBoard images
}
OWN_CHECKS = {"data.size", "data.in_channels"}
# What a value out of range means, where the range alone does not say it.
RANGE_HINTS = {key: "a fraction of train.iters (e.g. 300 of 3000 iterations is 0.1)"
               for key in ("ssl.unsup_rampup", "ssl.contrast_warmup", "ssl.contrast_rampup", "ssl.consistency_rampup",
                           "fixmatch.unsup_rampup")}


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
    choices = _choices(name)
    if choices is not None and value not in choices:
        raise UserError(f"config key '{name}' must be one of {', '.join(choices)}, got {value!r}")


def _choices(name: str) -> Optional[Iterable[str]]:
    """The valid values of key ``name`` (None: any); ``method``'s come from the method registry."""
    if name == "method":
        from Code.methods import method_names  # here: the methods import this module (schedule_steps)
        return method_names()
    return CHOICES.get(name)


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


# Keys whose absence in a run saved before they existed meant something other than today's default.
# A value may be a function ``(the saved config as it was saved, today's default) → value``, for keys whose old
# meaning depends on the run.


def _old_pool_prior(old_value: Any) -> Callable[[Dict[str, Any], Any], Any]:
    """The old value where the run trained with the pool prior (prior-aware or pool class ratio, not supervised);
    elsewhere the key has no effect on training and takes today's default, so that such a run (and a grid that
    compares its config) stays the same run."""
    def meant(saved: Dict[str, Any], default: Any) -> Any:
        ssl = saved.get("ssl") or {}
        used = saved.get("method") != "supervised" and (ssl.get("prior_aware") or ssl.get("class_ratio") == "pool")
        return old_value if used else default
    return meant


def _fixmatch_read_ssl(key: str) -> Callable[[Dict[str, Any], Any], Any]:
    """Before the ``fixmatch`` block, FixMatch read Hermes' ``ssl`` settings (its teacher, τ_hi, pseudo-label loss
    and ramp): an old fixmatch run keeps the value of ``ssl.<key>``; other methods do not read the block."""
    def meant(saved: Dict[str, Any], default: Any) -> Any:
        ssl = saved.get("ssl") or {}
        return ssl[key] if saved.get("method") == "fixmatch" and key in ssl else default
    return meant


ABSENT_MEANT = {("eval", "test_curves"): True,  # runs from before the sealed test wrote test curves
                ("fixmatch", "teacher"): _fixmatch_read_ssl("teacher"),
                ("fixmatch", "threshold"): _fixmatch_read_ssl("tau_hi"),
                ("fixmatch", "seg_unsup_loss"): _fixmatch_read_ssl("seg_unsup_loss"),
                ("fixmatch", "unsup_rampup"): _fixmatch_read_ssl("unsup_rampup"),
                # runs from before the windowed, bounded pool prior: per-batch EM averaged (window 0), unbounded (0)
                ("ssl", "prior_window"): _old_pool_prior(0),
                ("ssl", "prior_max_shift"): _old_pool_prior(0.0)}


def complete_saved_config(saved: Dict[str, Any]) -> Dict[str, Any]:
    """A run's saved config completed with the keys added to ``base.yaml`` since it was saved, at their defaults
    or at :data:`ABSENT_MEANT`, so that a run made by older code continues — and a grid skips or resumes it —
    instead of counting every new key as a change. New keys default to the old behaviour, so the run is the same
    run; a key the run *has* is never changed here."""
    completed = copy.deepcopy(saved)
    _fill_missing(completed, _read_yaml(BASE_CONFIG), (), ABSENT_MEANT, saved)
    return completed


def _fill_missing(config: Dict[str, Any], defaults: Dict[str, Any], path: tuple, absent: Dict[tuple, Any],
                  saved: Dict[str, Any]) -> None:
    """Fill ``config`` from ``defaults``; an ``absent`` value that is callable is given ``(saved, default)``."""
    for key, value in defaults.items():
        where = path + (key,)
        if key not in config:
            if isinstance(value, dict):  # a new block: fill it key by key (its keys may have absent meanings)
                config[key] = {}
                _fill_missing(config[key], value, where, absent, saved)
            else:
                meant = absent.get(where, value)
                config[key] = copy.deepcopy(meant(saved, value) if callable(meant) else meant)
        elif isinstance(value, dict) and isinstance(config[key], dict):
            _fill_missing(config[key], value, where, absent, saved)


def in_range(value: Any, interval: str) -> bool:
    """Whether the number ``value`` lies in ``interval`` (RANGES notation, e.g. ``"[0, 1)"``)."""
    low, high = (float(bound) for bound in interval[1:-1].split(","))
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    above = value >= low if interval[0] == "[" else value > low
    below = value <= high if interval[-1] == "]" else value < high
    return above and below


def check_ranges(config: Dict[str, Any], ranges: Dict[str, str] = RANGES) -> None:
    """A UserError naming the key, the value and the valid range for the first numeric key out of range."""
    for name, interval in ranges.items():
        node: Any = config
        for part in name.split("."):
            node = node[part]
        values = node if isinstance(node, list) else [node]
        if not all(in_range(v, interval) for v in values):
            hint = f" ({RANGE_HINTS[name]})" if name in RANGE_HINTS else ""
            raise UserError(f"config key '{name}' must be in {interval}, got {node!r}{hint}")


def validate_config(config: Dict[str, Any]) -> None:
    """Ranges of the numeric keys (RANGES) and cross-field checks that a single key's type cannot express."""
    check_ranges(config)
    size = config["data"]["size"]
    if size <= 0 or size % 32:
        raise UserError(f"config key 'data.size' must be a positive multiple of 32, got {size}")
    if config["data"]["in_channels"] not in (1, 3):
        raise UserError(f"config key 'data.in_channels' must be 1 or 3, got {config['data']['in_channels']}")
    _validate_ssl(config["ssl"], config["components"])


SSL_CHOICES = {"teacher": ("joint", "ema", "eval", "train"), "threshold": ("dual", "single"),
               "combine": ("and", "or"), "class_ratio": ("batch", "pool", "relative"),
               "seg_unsup_loss": ("dice", "ce", "ce_dice")}


def _validate_ssl(ssl: Dict[str, Any], components: Dict[str, Any]) -> None:
    for key, choices in SSL_CHOICES.items():
        if ssl[key] not in choices:
            raise UserError(f"config key 'ssl.{key}' must be one of {', '.join(choices)}, got {ssl[key]!r}")
    if components["consistency_mode"] not in ("cosine", "stopgrad"):
        raise UserError(f"config key 'components.consistency_mode' must be cosine or stopgrad, "
                        f"got {components['consistency_mode']!r}")
    if 0 < ssl["prior_max_shift"] < 1:
        raise UserError(f"config key 'ssl.prior_max_shift' must be 0 (unbounded) or >= 1, got {ssl['prior_max_shift']}")
    if ssl["threshold"] == "dual" and ssl["tau_lo"] > ssl["tau_hi"]:
        raise UserError(f"config keys 'ssl.tau_lo' ({ssl['tau_lo']}) and 'ssl.tau_hi' ({ssl['tau_hi']}): the dual "
                        f"threshold needs tau_lo <= tau_hi")


def schedule_steps(config: Dict[str, Any], key: str) -> float:
    """A schedule key of ``ssl`` (a fraction of the run) in iterations: ``ssl[key] · train.iters``."""
    return float(config["ssl"][key]) * float(config["train"]["iters"])


def dump_config(config: Dict[str, Any]) -> str:
    """The resolved config as YAML text (saved as RUN/config.yaml and inside every checkpoint)."""
    return yaml.safe_dump(config, sort_keys=False)
