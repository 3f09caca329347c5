"""FixMatch as its paper describes it by default (issue #23), its shared-teacher variant as a setting, and runs saved
before the ``fixmatch`` block kept the same run.

Mutations checked (each fails a test here): FixMatch reading ``ssl.teacher`` / ``ssl.tau_hi`` / ``ssl.unsup_rampup``
/ ``ssl.seg_unsup_loss`` instead of its own block; Hermes reading the ``fixmatch`` block; ``complete_saved_config``
filling an old fixmatch run's block at the new defaults, or copying ``ssl`` values into a non-fixmatch run;
``method_teacher`` returning ``None`` for the EMA-teacher methods.
"""
import copy
import math

import pytest
import torch

from Code.engine.config import complete_saved_config, load_config
from Code.methods import build_method, method_teacher
from Code.methods.terms import combine_terms
from tests.stubs import ScaleStub

pytestmark = pytest.mark.usefixtures("single_thread")


def config(method="fixmatch", **sections):
    overrides = [{"method": method, "train": {"iters": 100}}]
    overrides += [{section: values} for section, values in sections.items()]
    return load_config(None, overrides)


def build(cfg, student=None):
    return build_method(cfg, torch.device("cpu"), student=student)


def test_published_defaults_and_hermes_keeps_ssl():
    fixmatch = build(config(ssl={"teacher": "ema", "tau_hi": 0.7, "unsup_rampup": 0.3, "seg_unsup_loss": "dice"}),
                     student=ScaleStub())
    assert fixmatch.teacher_mode == "joint" and fixmatch.teacher is None  # ssl.teacher is Hermes', not FixMatch's
    assert fixmatch.settings == {"teacher": "joint", "threshold": 0.95, "seg_unsup_loss": "ce", "unsup_rampup": 0.0}
    variant = build(config(fixmatch={"teacher": "ema", "unsup_rampup": 0.1}), student=ScaleStub())
    assert variant.teacher_mode == "ema" and variant.teacher is not None
    hermes = build(config("hermes", ssl={"teacher": "eval", "tau_hi": 0.8}, fixmatch={"teacher": "ema"}))
    assert hermes.teacher_mode == "eval" and hermes.settings["threshold"] == 0.8


def _kept_images(method, prob_malignant):
    """Which images the weak view keeps, for weak-view malignancy probabilities ``prob_malignant``."""
    p = torch.tensor(prob_malignant)
    logits = torch.stack([torch.zeros_like(p), torch.log(p / (1 - p))], 1)
    out_weak = {"seg_logits": torch.zeros(len(p), 2, 4, 4), "cls_logits": logits}
    labels, _ = method.pseudo_labels(out_weak, step=50)
    return labels["cls_keep"].tolist()


def test_threshold_is_fixmatch_tau():
    assert _kept_images(build(config()), [0.96, 0.94, 0.03]) == [True, False, True]  # τ = 0.95, both classes
    assert _kept_images(build(config(fixmatch={"threshold": 0.9})), [0.96, 0.94, 0.08]) == [True, True, True]
    assert _kept_images(build(config(ssl={"tau_hi": 0.5})), [0.96, 0.94, 0.03]) == [True, False, True]
    # a τ below Hermes' τ_lo (0.5) is FixMatch's own business, not a dual-threshold error
    assert _kept_images(build(config(fixmatch={"threshold": 0.3})), [0.6, 0.4]) == [True, True]


def test_no_ramp_by_default_and_the_variant_ramps():
    """ρ_u = 1 from step 0 by default; with ``fixmatch.unsup_rampup`` r, ρ_u(t) = exp(−5(1 − t/(r·T))²)."""
    terms = {"seg_sup": torch.tensor(1.0), "cls_sup": torch.tensor(2.0), "seg_unsup": torch.tensor(3.0),
             "cls_unsup": torch.tensor(4.0)}
    published, variant = build(config()), build(config(fixmatch={"unsup_rampup": 0.5}))
    w = published.config["loss"]
    full = w["seg"] * (1 + w["seg_unsup"] * 3) + w["cls"] * (2 + w["cls_unsup"] * 4)
    assert combine_terms(terms, published.loss_config, 0).item() == pytest.approx(full, rel=1e-6)
    rho = math.exp(-5 * (1 - 10 / 50) ** 2)
    ramped = w["seg"] * (1 + rho * w["seg_unsup"] * 3) + w["cls"] * (2 + rho * w["cls_unsup"] * 4)
    assert combine_terms(terms, variant.loss_config, 10).item() == pytest.approx(ramped, rel=1e-6)
    assert published.config["ssl"]["unsup_rampup"] == config()["ssl"]["unsup_rampup"]  # the run's config untouched


def _saved_before_block(method, **ssl):
    saved = copy.deepcopy(config(method, ssl=ssl))
    del saved["fixmatch"]
    return saved


def test_old_fixmatch_run_is_completed_as_it_ran():
    saved = _saved_before_block("fixmatch", teacher="ema", tau_hi=0.9, unsup_rampup=0.1, seg_unsup_loss="ce")
    completed = complete_saved_config(saved)
    assert completed["fixmatch"] == {"teacher": "ema", "threshold": 0.9, "seg_unsup_loss": "ce", "unsup_rampup": 0.1}
    method = build(completed, student=ScaleStub())
    assert method.teacher_mode == "ema" and method.loss_config["ssl"]["unsup_rampup"] == 0.1
    # another method's old run gets the block's defaults: it does not read them, and a new run of it is the same run
    hermes = complete_saved_config(_saved_before_block("hermes", teacher="ema", unsup_rampup=0.1))
    assert hermes["fixmatch"] == config("hermes")["fixmatch"]
    assert complete_saved_config(config("fixmatch")) == config("fixmatch")  # a key the run has is never changed


@pytest.mark.parametrize("method,sections,teacher", [
    ("supervised", {}, None), ("fixmatch", {}, "joint"), ("fixmatch", {"fixmatch": {"teacher": "ema"}}, "ema"),
    ("hermes", {}, "ema"), ("mean_teacher", {}, "ema"), ("bcp", {}, "ema"), ("unimatch", {}, "joint"),
    ("freematch", {"freematch": {"teacher": "eval"}}, "eval"),
])
def test_method_teacher(method, sections, teacher):
    assert method_teacher(config(method, **sections)) == teacher


def test_report_names_the_shared_teacher_variant(tmp_path, capsys):
    """An old FixMatch run (saved before the block, Hermes' teacher and ramp) and a published one are two rows,
    each named by what it ran with. Mutation checked: ``method_label`` returning the bare method."""
    import yaml
    from helpers import load_script
    from test_report import _table, make_run

    report = load_script("report")
    d = {"dice": 0.6}
    make_run(tmp_path, "supervised", 8, 0, "seg", [(1, d)], sealed=True)
    make_run(tmp_path, "fixmatch", 8, 0, "seg", [(1, {"dice": 0.7})], sealed=True)
    old = make_run(tmp_path, "fixmatch", 8, 0, "seg", [(1, {"dice": 0.8})], sealed=True, name="fixmatch_ema")
    saved = yaml.safe_load((old / "config.yaml").read_text())
    saved["ssl"] = {"teacher": "ema", "unsup_rampup": 0.1}
    (old / "config.yaml").write_text(yaml.safe_dump(saved))
    assert report.main([str(tmp_path)]) == 0
    rows = [row[0] for row in _table(capsys.readouterr().out, "Dice (%)")[2:]]
    assert rows == ["supervised", "fixmatch", "fixmatch (fixmatch.teacher=ema, fixmatch.unsup_rampup=0.1)"]
