"""report.py on fabricated runs: hand-computed mean ± sample std, best vs final selection, task routing, layout."""
import csv
import json
from pathlib import Path

import pytest
import yaml
from helpers import load_script

ROOT = Path(__file__).resolve().parents[1]
KEYS = ("dice", "dice_global", "iou", "accuracy", "balanced_accuracy", "sensitivity", "specificity", "f1", "auc")


report = load_script("report")


def _final_metrics(task, rows, val):
    """``final_metrics.json`` as the trainer writes it for ``rows`` (see ``make_run``): test at the last row and at
    the val-chosen one (highest primary val metric, then val AUC, then the earliest step)."""
    full = lambda values: {k: values.get(k, 0.5) for k in KEYS}  # noqa: E731
    points = [(step, full(values), full(v[0] if v else values)) for step, values, *v in rows]
    primary = "dice" if task == "seg" else "balanced_accuracy"
    best = max(points, key=lambda p: (p[2][primary], p[2]["auc"] if p[2]["auc"] == p[2]["auc"] else -1, -p[0]))
    return {"step": points[-1][0], "test_at_final": dict(points[-1][1], step=points[-1][0]),
            "test_at_best_val": dict(best[1], step=best[0]) if val else None,
            "best_val_step": best[0] if val else None}


def make_run(parent, method, labels, seed, task, rows, select="best", finished=True, val=True, train=None, name=None,
             sealed=False):
    """A run folder; ``rows``: list of (step, {test metric: value}[, {val metric: value}]) — unspecified metrics
    are 0.5; val metrics default to the test ones; ``val=False`` writes no val columns (a split without val/).
    ``metrics.csv`` carries test columns (a run with test curves) unless ``sealed``; a ``finished`` run has the
    ``final_metrics.json`` of the trainer's selection."""
    run = parent / (name or f"{method}_n{labels}_s{seed}")
    run.mkdir(parents=True)
    config = {"seed": seed, "method": method, "task": task, "data": {"split": None, "labels": labels},
              "eval": {"select": select}, "train": train or {"iters": 200}, "device": "auto"}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    with (run / "metrics.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["step", *(() if sealed else KEYS), *((f"val_{k}" for k in KEYS) if val else ())])
        for step, values, *val_values in rows:
            val_values = val_values[0] if val_values else values
            writer.writerow([step, *(() if sealed else (f"{values.get(k, 0.5):.6f}" for k in KEYS)),
                             *((f"{val_values.get(k, 0.5):.6f}" for k in KEYS) if val else ())])
    if finished:
        (run / "final_metrics.json").write_text(json.dumps(_final_metrics(task, rows, val)))
    return run


@pytest.fixture()
def runs(tmp_path):
    seg, cls = tmp_path / "seg", tmp_path / "cls"
    d = lambda v: {"dice": v}  # noqa: E731
    # the val-best rows are never the test-best ones: a report that ranked by test would differ
    make_run(seg, "supervised", 72, 0, "seg", [(100, d(.70), d(.9)), (200, d(.80), d(.5)), (300, d(.75), d(.6))])
    make_run(seg, "supervised", 72, 1, "seg", [(100, d(.60), d(.5)), (200, d(.65), d(.7))])
    make_run(seg, "supervised", 72, 2, "seg", [(100, d(.90), d(.4)), (200, d(.85), d(.6))])
    make_run(seg, "hermes", 72, 0, "seg", [(100, d(.88))])
    make_run(seg, "hermes", 144, 0, "seg", [(100, d(.91))])
    make_run(seg, "hermes", 144, 1, "seg", [(100, d(.93))])
    make_run(seg, "mean_teacher", 144, 0, "seg", [(100, d(.5))])
    make_run(seg, "fixmatch", 72, 0, "seg", [(100, d(.99))], finished=False)  # unfinished: skipped
    a = lambda acc, auc: {"accuracy": acc, "auc": auc}  # noqa: E731
    make_run(cls, "supervised", 72, 0, "cls", [(100, a(.8, .7), a(.6, .5)), (200, a(.8, .9), a(.9, .9)),
                                              (300, a(.7, .95), a(.9, .8))])
    make_run(cls, "supervised", 72, 1, "cls", [(100, a(.9, float("nan")), a(.7, float("nan"))),
                                              (200, a(.6, .8), a(.7, .8))])
    return tmp_path


def _table(text, title):
    """The body rows of the Markdown table after the caption that starts with ``**title**``."""
    block = text.split(f"**{title}**")[1].split("\n\n")[1]
    return [[c.strip() for c in line.strip("|").split("|")] for line in block.splitlines()]


def test_best_selection_tables(runs, capsys):
    out = runs / "report"
    assert report.main([str(runs / "seg"), str(runs / "cls"), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    dice = _table(text, "Dice (%)")
    assert dice[0] == ["method", "144 labels", "72 labels"]
    # test Dice at the val-best rows: .70, .65, .85 → mean 73.33, sample std sqrt((3.33² + 8.33² + 11.67²)/2) = 10.41
    # (ranked by test it would be .80, .65, .90 → 78.33)
    assert dice[2] == ["supervised", "n/a", "73.33 ± 10.41"]
    assert dice[3][0] == "mean_teacher"  # the other registered methods between supervised-only and Hermes
    assert dice[4] == ["hermes", "92.00 ± 1.41 (n=2)", "88.00 (n = 1)"]
    assert "fixmatch" not in text  # unfinished run skipped
    acc = _table(text, "Accuracy (%)")
    # cls runs only; val-best by (accuracy, AUC with NaN = -inf): step 200 (val auc .9 beats .8) → test .8;
    # step 200 (val auc .8 beats NaN) → test .6; mean 70, std 14.14
    assert acc[2] == ["supervised", "70.00 ± 14.14"]
    assert "evaluation per run: best (val)" in text and "from cls runs" in text and "n = 1–3 seed(s)" in text
    pairs = _table(text, "Per run")
    row = next(r for r in pairs if r[:4] == ["supervised", "seg", "72", "0"])
    assert row[4] == "100" and row[5] == "70.00" and row[9] == "300" and row[10] == "75.00"
    assert (out / "report.md").read_text().count("| supervised |") >= 2
    with (out / "report.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    row = next(r for r in rows if r["metric"] == "dice" and r["method"] == "supervised")
    assert float(row["mean"]) == pytest.approx(73.3333, abs=1e-3) and row["n"] == "3" and row["select"] == "best (val)"


def test_runs_without_val_fall_back_to_final_and_say_so(tmp_path, capsys):
    """Mutation checked: choosing the best row by test metrics when no val columns exist."""
    make_run(tmp_path, "hermes", 20, 0, "seg", [(1, {"dice": .9}), (2, {"dice": .7})], val=False)
    assert report.main([str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert _table(text, "Dice (%)")[2] == ["hermes", "70.00 (n = 1)"]
    assert "final (no val)" in text and "n/a (no val)" in text


def test_final_selection_override_and_plot(runs, capsys, tmp_path):
    plot = tmp_path / "bars.png"
    assert report.main([str(runs), "--select", "final", "--out", str(tmp_path / "r"), "--plot", str(plot)]) == 0
    text = capsys.readouterr().out
    assert _table(text, "Dice (%)")[2] == ["supervised", "n/a", "75.00 ± 10.00"]  # .75, .65, .85
    assert _table(text, "Accuracy (%)")[2] == ["supervised", "65.00 ± 7.07"]    # .70, .60
    assert "evaluation per run: final" in text
    assert plot.is_file() and plot.stat().st_size > 1000
    assert report.main([str(runs / "seg"), "--include-incomplete", "--out", str(tmp_path / "r2")]) == 0
    assert _table(capsys.readouterr().out, "Dice (%)")[3] == ["fixmatch", "n/a", "99.00 (n = 1)"]


def test_config_select_per_run_and_single_run_folder(tmp_path, capsys):
    run = make_run(tmp_path, "hermes", 20, 0, "seg", [(1, {"dice": .9}), (2, {"dice": .7})], select="final")
    assert report.main([str(run)]) == 0  # a run folder itself; the report goes to its parent
    text = capsys.readouterr().out
    assert _table(text, "Dice (%)")[2] == ["hermes", "70.00 (n = 1)"]
    assert (tmp_path / "report.md").is_file()


def test_errors(tmp_path):
    with pytest.raises(report.UserError, match="no runs"):
        report.main([str(tmp_path)])
    with pytest.raises(report.UserError, match="not a run folder"):
        report.main([str(tmp_path / "missing")])


def test_runs_with_different_configs_are_not_pooled_as_seeds(tmp_path, capsys):
    """Defect 11. Mutation checked: without split_config_variants the three runs pool into one row
    '80.00 ± 10.00' (n = 3), although one of them trained twice as long."""
    d = lambda v: {"dice": v}  # noqa: E731
    make_run(tmp_path, "hermes", 72, 0, "seg", [(100, d(.70))])
    make_run(tmp_path, "hermes", 72, 1, "seg", [(100, d(.80))], train={"iters": 200}, name="h_s1")
    make_run(tmp_path, "hermes", 72, 0, "seg", [(100, d(.90))], train={"iters": 400}, name="h_long")
    assert report.main([str(tmp_path), "--out", str(tmp_path / "r")]) == 0
    captured = capsys.readouterr()
    dice = _table(captured.out, "Dice (%)")
    assert dice[2:] == [["hermes (train.iters=200)", "75.00 ± 7.07"], ["hermes (train.iters=400)", "90.00 (n = 1)"]]
    assert "different configs (differ in: train.iters)" in captured.err


def test_every_differing_key_names_the_row(tmp_path, capsys):
    """Four keys tell the configs apart; two runs differ only in the last of them (sorted). Mutation checked: names
    cut to the first three keys give those two runs one name, and the table pools them as two seeds."""
    d = lambda v: {"dice": v}  # noqa: E731
    make_run(tmp_path, "hermes", 8, 0, "seg", [(1, d(.60))], train={"a": 0, "b": 0, "c": 0, "d": 0}, name="base")
    make_run(tmp_path, "hermes", 8, 0, "seg", [(1, d(.70))], train={"a": 0, "b": 0, "c": 0, "d": 1}, name="only_d")
    make_run(tmp_path, "hermes", 8, 0, "seg", [(1, d(.80))], train={"a": 1, "b": 1, "c": 1, "d": 0}, name="abc")
    assert report.main([str(tmp_path)]) == 0
    rows = _table(capsys.readouterr().out, "Dice (%)")[2:]
    assert sorted(rows) == [["hermes (train.a=0, train.b=0, train.c=0, train.d=0)", "60.00 (n = 1)"],
                            ["hermes (train.a=0, train.b=0, train.c=0, train.d=1)", "70.00 (n = 1)"],
                            ["hermes (train.a=1, train.b=1, train.c=1, train.d=0)", "80.00 (n = 1)"]]


def test_one_run_twice_is_not_two_seeds(tmp_path):
    """The same experiment and seed in two folders (a copied run) must not count as n = 2."""
    d = {"dice": .7}
    first = make_run(tmp_path / "grid", "hermes", 8, 0, "cls", [(1, d)])
    make_run(tmp_path / "copy", "hermes", 8, 0, "cls", [(1, d)])
    with pytest.raises(report.UserError, match=f"{first}.* same experiment with the same seed"):
        report.main([str(tmp_path / "grid"), str(tmp_path / "copy"), "--out", str(tmp_path / "r")])


def test_paired_gain_over_supervised_by_seed(tmp_path, capsys):
    """Δ = method − supervised of the same seed, at the val-chosen and the final step; an unpaired seed is left
    out. Mutations checked: pairing by run order instead of seed; taking the supervised run's final row for
    the val-chosen Δ."""
    d = lambda test, val=None: {"dice": test} if val is None else {"dice": val}  # noqa: E731
    make_run(tmp_path, "supervised", 8, 0, "seg", [(1, d(.60), d(.9)), (2, d(.70), d(.5))])  # val-chosen .60, final .70
    make_run(tmp_path, "supervised", 8, 1, "seg", [(1, d(.50))])
    make_run(tmp_path, "hermes", 8, 2, "seg", [(1, d(.99))])  # no supervised seed 2: unpaired
    make_run(tmp_path, "hermes", 8, 0, "seg", [(1, d(.65), d(.2)), (2, d(.66), d(.8))])  # val-chosen = final = .66
    make_run(tmp_path, "hermes", 8, 1, "seg", [(1, d(.58))])
    assert report.main([str(tmp_path)]) == 0
    rows = _table(capsys.readouterr().out, "Paired gain over supervised-only")
    assert rows[0][:6] == ["method", "task", "data", "labels", "test at", "Δ dice"]
    # val-chosen: Δ = .66 − .60 = +6, .58 − .50 = +8 → mean +7.00, std 1.41, ahead in 2 of 2
    assert rows[2][:6] == ["hermes", "seg", "phantom", "8", "val-chosen step", "+7.00 ± 1.41 (2/2)"]
    # final: .66 − .70 = −4, +8 → mean +2.00, std sqrt(6² + 6²) = 8.49, ahead in 1 of 2
    assert rows[3][:6] == ["hermes", "seg", "phantom", "8", "final step", "+2.00 ± 8.49 (1/2)"]
    assert len(rows) == 4  # supervised has no row of its own


def test_settings_beyond_the_method_are_named(tmp_path, capsys):
    """A `--set` given to one method's runs only (here Hermes with ssl.prior_aware) is named under the tables, so a
    row never hides what it ran with. Mutation checked: listing only keys that the supervised runs' configs have
    (a setting absent there) names nothing."""
    d = {"dice": .7}
    for seed in (0, 1):
        make_run(tmp_path, "supervised", 8, seed, "cls", [(1, d)])
        hermes = make_run(tmp_path, "hermes", 8, seed, "cls", [(1, d)])
        config = yaml.safe_load((hermes / "config.yaml").read_text())
        config["ssl"] = {"prior_aware": True}
        (hermes / "config.yaml").write_text(yaml.safe_dump(config))
        make_run(tmp_path, "fixmatch", 8, seed, "cls", [(1, d)])  # same settings as supervised: not named
    assert report.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "**Settings beyond the method**" in out
    named = [line for line in out.splitlines() if line.startswith("- `cls` ")]
    # saved without ssl.prior_window / prior_max_shift, a prior-aware run had the old estimator (config.py ABSENT_MEANT)
    assert named == ["- `cls` hermes: ssl.prior_aware=True, ssl.prior_max_shift=0.0, ssl.prior_window=0"]
    assert "Settings beyond the method" in (tmp_path / "report.md").read_text()


def test_result_files_are_not_gitignored():
    """The small per-run files that `results/busi/collect.sh` copies must reach the repository, while run folders
    and checkpoints must not. Seen failing with the `.gitignore` rule `runs/` (it matched `results/busi/runs/` too)."""
    import shutil
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    if shutil.which("git") is None or not (root / ".git").exists():
        pytest.skip("not a git checkout")

    def ignored(path: str) -> bool:
        return subprocess.run(["git", "check-ignore", "-q", path], cwd=root).returncode == 0

    assert not ignored("results/busi/runs/seg/hermes_n144_s0/metrics.csv")
    assert not ignored("results/busi/runs/ablation/x/hermes_n144_s0/config.yaml")
    assert ignored("runs/busi/seg/hermes_n144_s0/metrics.csv")
    assert ignored("results/busi/runs/seg/hermes_n144_s0/checkpoints/latest.pt")


def _with_encoder(run, path):
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["model"] = {"encoder_weights": path}
    (run / "config.yaml").write_text(yaml.safe_dump(config))


def test_per_seed_encoders_pool_and_pair_with_their_own_supervised_row(tmp_path, capsys):
    """Each seed fine-tuned from its own pre-trained encoder (`..._s{seed}/encoder.pth`): `--per-seed` pools the
    seeds into one row, Hermes pairs with supervised of the same encoder, and `--baseline` pairs every row with
    from-scratch supervised-only. Mutations checked: without the seed template each seed is its own row (n = 1);
    pairing Hermes with the first supervised run of its seed (the scratch one) gives +6.00 ± 0.00; a template that also replaces digits
    inside numbers turns `busi64` into `busi6{seed}` for seed 4."""
    d = lambda v: {"dice": v}  # noqa: E731
    for seed, (scratch, pre, hermes_pre) in {1: (.60, .62, .66), 4: (.70, .75, .76)}.items():
        _with_encoder(make_run(tmp_path, "supervised", 8, seed, "seg", [(1, d(scratch))], name=f"sup_s{seed}"), None)
        for method, value in (("supervised", pre), ("hermes", hermes_pre)):
            run = make_run(tmp_path, method, 8, seed, "seg", [(1, d(value))], name=f"{method}_pre_s{seed}")
            _with_encoder(run, f"runs/pretrain/busi64_s{seed}/encoder.pth")
    scratch_row = "supervised (model.encoder_weights=None)"
    pre = "model.encoder_weights=runs/pretrain/busi64_s{seed}/encoder.pth"
    assert report.main([str(tmp_path), "--out", str(tmp_path / "a"), "--per-seed", "model.encoder_weights"]) == 0
    out = capsys.readouterr().out
    assert _table(out, "Dice (%)")[2:] == [[scratch_row, "65.00 ± 7.07"], [f"supervised ({pre})", "68.50 ± 9.19"],
                                           ["hermes", "71.00 ± 7.07"]]
    gains = _table(out, "Paired gain over supervised-only")
    # Hermes − supervised from the same encoder: +4, +1 → +2.50 ± 2.12 (2/2); the scratch run is not its partner
    assert gains[2][:6] == ["hermes", "seg", "phantom", "8", "val-chosen step", "+2.50 ± 2.12 (2/2)"]
    assert len(gains) == 4
    assert report.main([str(tmp_path), "--out", str(tmp_path / "b"), "--per-seed", "model.encoder_weights",
                        "--baseline", scratch_row]) == 0
    gains = _table(capsys.readouterr().out, f"Paired gain over {scratch_row}")
    # pre-trained − scratch supervised: +2, +5 → +3.50 ± 2.12; Hermes pre-trained − scratch: +6, +6 → +6.00 ± 0.00
    assert gains[2][:6] == [f"supervised ({pre})", "seg", "phantom", "8", "val-chosen step", "+3.50 ± 2.12 (2/2)"]
    assert gains[4][:6] == ["hermes", "seg", "phantom", "8", "val-chosen step", "+6.00 ± 0.00 (2/2)"]
    with pytest.raises(report.UserError, match="--baseline 'supervised' is not a row"):
        report.main([str(tmp_path), "--per-seed", "model.encoder_weights", "--baseline", "supervised"])
    with pytest.raises(report.UserError, match="--per-seed model.encoder_weight: no run"):
        report.main([str(tmp_path), "--per-seed", "model.encoder_weight"])


def test_output_files_follow_the_output_rule(tmp_path, capsys):
    """README "Outputs and --force": report.md / report.csv / --plot are replaced only with --force and only when
    report.py wrote them; never a file the report reads. Mutations checked: the input check dropped (metrics.csv is then
    refused only as not a figure, without naming the input); the kind test dropped lets --force replace the
    user's report.md."""
    run = make_run(tmp_path / "runs", "hermes", 20, 0, "seg", [(1, {"dice": .9})])
    metrics = (run / "metrics.csv").read_bytes()
    with pytest.raises(report.UserError, match="is the run file .*metrics.csv, an input of this command"):
        report.main([str(tmp_path / "runs"), "--out", str(tmp_path / "r"), "--plot", str(run / "metrics.csv"),
                     "--force"])
    assert (run / "metrics.csv").read_bytes() == metrics and not (tmp_path / "r" / "report.md").exists()
    assert report.main([str(tmp_path / "runs"), "--out", str(tmp_path / "r")]) == 0
    with pytest.raises(report.UserError, match="exists \\(add --force"):
        report.main([str(tmp_path / "runs"), "--out", str(tmp_path / "r")])
    assert report.main([str(tmp_path / "runs"), "--out", str(tmp_path / "r"), "--force"]) == 0
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "report.md").write_text("my own notes")
    with pytest.raises(report.UserError, match="not a report.md of report.py"):
        report.main([str(tmp_path / "runs"), "--out", str(tmp_path / "mine"), "--force"])
    assert (tmp_path / "mine" / "report.md").read_text() == "my own notes"


def test_sealed_runs_take_test_from_final_metrics_and_test_curves_are_named(tmp_path, capsys):
    """Test metrics come from ``final_metrics.json`` (a sealed run's metrics.csv has val columns only); a run with
    test columns in metrics.csv but no ``test_curves`` record (made before the test was sealed) counts as a run with
    test curves; an unfinished sealed run has no test metrics at all. Mutations checked: no metrics.csv fallback in
    ``provenance.test_curves`` (0 runs with test curves); reading the test metrics from metrics.csv (the sealed run
    is then skipped as without test metrics)."""
    d = lambda v: {"dice": v}  # noqa: E731
    make_run(tmp_path, "hermes", 8, 0, "seg", [(1, d(.60), d(.9)), (2, d(.70), d(.5))], sealed=True)
    make_run(tmp_path, "supervised", 8, 0, "seg", [(1, d(.50))])  # test curves in its metrics.csv
    make_run(tmp_path, "fixmatch", 8, 0, "seg", [(1, d(.99))], sealed=True, finished=False)
    assert report.main([str(tmp_path), "--include-incomplete"]) == 0
    captured = capsys.readouterr()
    assert _table(captured.out, "Dice (%)")[2:] == [["supervised", "50.00 (n = 1)"], ["hermes", "60.00 (n = 1)"]]
    assert "1 of 2 runs were made with test curves" in captured.out
    assert "skipping" in captured.err and "fixmatch_n8_s0: no test metrics" in captured.err
    assert report.main([str(tmp_path), "--select", "final", "--out", str(tmp_path / "final")]) == 0
    assert _table(capsys.readouterr().out, "Dice (%)")[3] == ["hermes", "70.00 (n = 1)"]


def test_a_pretraining_run_is_named_as_such(tmp_path):
    """Issue 21: report.py on a pretrain.py run said "skipping unfinished run". Named: a one-line refusal saying
    what it is; found below a folder of runs: left out, and counted when nothing else is left. Mutation checked:
    without the task check the named run is 'skipped as unfinished' and the folder reports 'no finished runs'."""
    pre = tmp_path / "runs" / "pretrain_s0"
    pre.mkdir(parents=True)
    (pre / "config.yaml").write_text(yaml.safe_dump({"task": "pretrain", "method": "mocov2", "seed": 0}))
    (pre / "metrics.csv").write_text("step,val_knn_accuracy,val_knn_balanced_accuracy\n0,0.5,0.5\n")
    with pytest.raises(report.UserError, match=r"is a pre-training run \(pretrain.py\), not a training run; "
                                               r"report.py reads seg_train/cls_train runs"):
        report.main([str(pre)])
    with pytest.raises(report.UserError, match=r"no runs .*\(1 pre-training run\(s\) of pretrain.py left out\)"):
        report.main([str(tmp_path / "runs")])
