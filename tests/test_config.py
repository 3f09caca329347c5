"""Config loading: layering, validation errors, ``--set`` parsing, and every shipped config file."""
from pathlib import Path

import pytest
import yaml

from Code.engine.config import CONFIG_DIR, dump_config, load_config, parse_set_option
from helpers import SMOKE_CONFIG
from Code.errors import UserError


def test_base_defaults_are_the_reference_weights():
    config = load_config()
    assert config["loss"] == {"seg": 0.5, "cls": 1.1, "seg_unsup": 0.1, "pixel_contrast": 0.8, "cls_unsup": 0.1,
                              "image_contrast": 0.2, "consistency": 1.0}
    assert config["ssl"]["tau_hi"] == 0.95 and config["ssl"]["tau_lo"] == 0.5 and config["ssl"]["combine"] == "and"
    assert config["train"]["iters"] == 3000 and config["model"]["encoder_weights"] is None


def test_layers_apply_in_order(tmp_path):
    parent = tmp_path / "parent.yaml"
    parent.write_text("train:\n  iters: 50\n  batch_labeled: 4\n")
    child = tmp_path / "child.yaml"
    child.write_text("base: parent.yaml\ntrain:\n  iters: 60\n")
    config = load_config(str(child), overrides=[parse_set_option("train.batch_labeled=2")],
                         defaults={"model": {"ias": True}, "train": {"iters": 1}})
    assert config["train"]["iters"] == 60
    assert config["train"]["batch_labeled"] == 2
    assert config["model"]["ias"] is True


def test_unknown_key_lists_valid_keys():
    with pytest.raises(UserError, match=r"unknown config key 'train.iter'.*iters"):
        load_config(overrides=[parse_set_option("train.iter=5")])
    with pytest.raises(UserError, match=r"unknown config key 'nonsense'"):
        load_config(overrides=[{"nonsense": 1}])


@pytest.mark.parametrize("item, message", [
    ("train.iters=abc", "expects int"),
    ("method=mixmatch", "must be one of supervised, fixmatch, hermes, mean_teacher"),
    ("ssl.combine=xor", "must be one of and, or"),
    ("data.size=100", "multiple of 32"),
    ("model.ias=3", "expects bool"),
])
def test_bad_values_are_named(item, message):
    with pytest.raises(UserError, match=message):
        load_config(overrides=[parse_set_option(item)])


def test_set_option_parses_yaml_values():
    assert parse_set_option("a.b=0.5") == {"a": {"b": 0.5}}
    assert parse_set_option("m=[1, 2]") == {"m": [1, 2]}
    assert parse_set_option("x=null") == {"x": None}
    with pytest.raises(UserError, match="key=value"):
        parse_set_option("noequals")


def test_int_accepted_where_float_expected():
    assert load_config(overrides=[parse_set_option("train.seg_lr=1")])["train"]["seg_lr"] == 1


@pytest.mark.parametrize("path", sorted(str(p.relative_to(CONFIG_DIR)) for p in CONFIG_DIR.rglob("*.yaml")))
def test_every_shipped_config_loads(path):
    if Path(path).name.startswith("pretrain"):  # Code/pretrain.py's own schema (configs/pretrain.yaml)
        from Code.pretraining.config import load_pretrain_config
        assert dump_config(load_pretrain_config(str(CONFIG_DIR / path)))
        return
    config = load_config(str(CONFIG_DIR / path))
    assert dump_config(config)
    if path.startswith(("busi", "udiat", "sztus")) and Path(path).stem.isdigit():
        assert config["data"]["size"] == 224 and config["train"]["iters"] == 3000
        assert config["train"]["batch_labeled"] == 8 and config["train"]["batch_unlabeled"] == 8
        assert config["data"]["labels"] == int(Path(path).stem)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(UserError, match="config file not found"):
        load_config(str(tmp_path / "none.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config(str(bad))


@pytest.mark.parametrize("item, interval", [
    ("loss.seg=-1", "[0, inf)"),
    ("train.seg_lr=-1", "(0, inf)"),
    ("train.cls_lr=-0.1", "(0, inf)"),
    ("train.cls_lr=0", "(0, inf)"),
    ("data.num_workers=-1", "[0, inf)"),
    ("train.iters=0", "[1, inf)"),
    ("eval.batch_size=0", "[1, inf)"),
    ("ssl.tau_hi=1.5", "[0, 1]"),
    ("ssl.ema_decay=1", "[0, 1)"),
    ("contrast.temperature=0", "(0, inf)"),
    ("train.seg_lr=.nan", "(0, inf)"),
    ("loss.cls=.inf", "[0, inf)"),
    ("model.decoder_channels=[32, 0, 16, 8, 8]", "[1, inf)"),
])
def test_out_of_range_values_name_key_value_and_range(item, interval):
    """Issue #21: `--set loss.seg=-1` was accepted and negative learning rates or workers ended in tracebacks.
    Mutations checked: validate_config not calling check_ranges; in_range treating "(" as "[" (lr 0 accepted) — each fails."""
    key, value = item.split("=", 1)
    with pytest.raises(UserError) as info:
        load_config(overrides=[parse_set_option(item)])
    message = str(info.value)
    assert f"'{key}'" in message and interval in message and "\n" not in message
    assert f"got {yaml.safe_load(value)!r}" in message


def test_range_bounds_are_accepted_and_schedules_keep_their_hint():
    config = load_config(overrides=[parse_set_option(s) for s in (
        "loss.seg=0", "data.num_workers=0", "ssl.tau_lo=0", "ssl.tau_hi=1", "ssl.ema_decay=0", "train.iters=1")])
    assert config["loss"]["seg"] == 0 and config["ssl"]["tau_hi"] == 1
    with pytest.raises(UserError, match=r"'ssl.unsup_rampup' must be in \[0, 1\], got 300 \(a fraction of train"):
        load_config(overrides=[parse_set_option("ssl.unsup_rampup=300")])
    with pytest.raises(UserError, match="tau_lo <= tau_hi"):
        load_config(overrides=[parse_set_option("ssl.tau_lo=0.9"), parse_set_option("ssl.tau_hi=0.8")])


def _numeric_leaves(node, prefix=""):
    for key, value in node.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _numeric_leaves(value, f"{name}.")
        elif isinstance(value, list) and value and all(isinstance(v, (int, float)) for v in value):
            yield name
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            yield name


def test_every_numeric_key_has_a_range():
    """One table: every numeric key of configs/base.yaml has a range in RANGES (or its own check), and every
    RANGES key exists. Mutation checked: deleting the loss.seg entry of RANGES fails."""
    from Code.engine.config import BASE_CONFIG, OWN_CHECKS, RANGES, in_range

    base = yaml.safe_load(BASE_CONFIG.read_text())
    numeric = set(_numeric_leaves(base))
    assert numeric - set(RANGES) - OWN_CHECKS == set()
    assert set(RANGES) | OWN_CHECKS <= numeric
    assert in_range(0.5, "[0, 1)") and not in_range(1, "[0, 1)") and not in_range(True, "[0, inf)")


def test_a_saved_config_is_completed_with_the_keys_added_since(tmp_path):
    """A run saved before a key existed continues (and a grid skips or resumes it) instead of counting the new key
    as a change; a key whose absence meant something else (``eval.test_curves``: older runs wrote test curves) gets
    that meaning. Mutation checked: read_saved_config without completion (both keys differ)."""
    import copy

    import yaml

    from Code.engine.run_folder import differences, read_saved_config

    full = load_config(str(SMOKE_CONFIG))
    saved = copy.deepcopy(full)
    del saved["contrast"]["temperature"], saved["eval"]["test_curves"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(saved))
    got = read_saved_config(tmp_path)
    assert got["contrast"]["temperature"] == full["contrast"]["temperature"] and got["eval"]["test_curves"] is True
    assert differences(got, full) == ["eval.test_curves"]
    saved["contrast"]["image_bank_size"] = 3  # a key the run has is never changed
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(saved))
    assert read_saved_config(tmp_path)["contrast"]["image_bank_size"] == 3
