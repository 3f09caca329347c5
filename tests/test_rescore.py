"""``eval.prior_correction: pool`` (Code/engine/prior_correction.py) in the trainer's sealed test and in
``Code/rescore.py`` (a finished run re-scored into a new run folder): the hand formula on the written rows, π
recorded, the same numbers by both paths, report.py reading the copy as a row, and the refusals."""
import csv
import json
import shutil

import pytest
import torch

from Code.engine.prior_correction import correct_records, labeled_prior
from Code.engine.rescore import main as rescore_main
from helpers import SMOKE_CONFIG, load_script

pytestmark = pytest.mark.usefixtures("single_thread")




@pytest.fixture(scope="module")
def runs(phantom_split, tmp_path_factory):
    """A supervised cls run, its re-scored copy with the pool correction, and the same run trained with it."""
    from Code.engine.cli import main
    from Code.errors import run_cli

    root = tmp_path_factory.mktemp("rescore")

    def call(entry, *args):
        try:
            run_cli(entry, [str(a) for a in args])
        except SystemExit as exc:
            assert not exc.code, f"{args}: exit {exc.code}"

    base = ["--config", str(SMOKE_CONFIG), "--data", phantom_split, "--labels", "4", "--method", "supervised",
            "--set", "log.image_every=0"]
    call(lambda argv: main(argv, task="cls"), *base, "--out", root / "plain")
    call(lambda argv: main(argv, task="cls"), *base[:-1], "log.image_every=0", "eval.prior_correction=pool",
         "--out", root / "trained_pool")
    call(rescore_main, root / "plain", "--out", root / "rescored", "--set", "eval.prior_correction=pool")
    return root


def rows(path):
    with path.open() as handle:
        return {r["image"]: r for r in csv.DictReader(handle)}


def test_corrected_rows_follow_the_hand_formula(runs, phantom_split):
    """p' = p·π1/πs1 / (p·π1/πs1 + (1 − p)·π0/πs0), pred = [p' > ½], on the written CSVs (6 decimals).
    Mutations checked: the ratio inverted (π_s/π); pred_class left uncorrected."""
    final = json.loads((runs / "rescored" / "final_metrics.json").read_text())
    note = final["prior_correction"]
    pi, pi_s = note["final"]["pool_prior"], note["labeled_prior"]
    pool = (phantom_split / "train" / "4" / "unlabeled" / "unlabeled.txt").read_text().split()
    assert pi_s == [0.5, 0.5] and note["final"]["pool_images"] == len(pool) > 0 and note["best"] is not None
    assert abs(pi[0] + pi[1] - 1) < 1e-5 and pi != pi_s
    ratio = (pi[1] / pi_s[1]) / (pi[0] / pi_s[0])
    assert 1 / 4 - 1e-4 <= ratio <= 4 + 1e-4  # the default bound ssl.prior_max_shift 4
    plain = rows(runs / "plain" / "test_predictions_final.csv")
    rescored = rows(runs / "rescored" / "test_predictions_final.csv")
    assert plain.keys() == rescored.keys()
    for name, row in plain.items():
        p = float(row["prob_malignant"])
        expected = p * pi[1] / pi_s[1] / (p * pi[1] / pi_s[1] + (1 - p) * pi[0] / pi_s[0])
        assert float(rescored[name]["prob_malignant"]) == pytest.approx(expected, abs=2e-5)
        if abs(expected - 0.5) > 1e-4:
            assert int(rescored[name]["pred_class"]) == int(expected > 0.5)
        assert rescored[name]["dice"] == row["dice"]  # segmentation untouched


def test_correct_records_by_hand():
    """π = (0.8, 0.2) from π_s = (0.5, 0.5): odds × ¼; p = 0.6 → 0.6/(0.6 + 0.4·4) = 3/11, predicted benign."""
    out = correct_records([{"prob_malignant": 0.6, "pred_class": 1, "name": "a"}], torch.tensor([0.8, 0.2]),
                          torch.tensor([0.5, 0.5]))
    assert out[0]["prob_malignant"] == pytest.approx(3 / 11) and out[0]["pred_class"] == 0


def test_trainer_and_rescore_give_the_same_result(runs):
    """The sealed test of a run trained with eval.prior_correction=pool equals the re-scored copy of the same run
    trained without it (deterministic smoke training): one implementation, two entry points. AUC is unchanged by
    the correction; the val metrics of final_metrics.json are corrected too."""
    trained = json.loads((runs / "trained_pool" / "final_metrics.json").read_text())
    rescored = json.loads((runs / "rescored" / "final_metrics.json").read_text())
    plain = json.loads((runs / "plain" / "final_metrics.json").read_text())
    for key in ("test_at_final", "test_at_best_val", "val_at_final", "val_at_best"):
        assert trained[key] == pytest.approx(rescored[key], nan_ok=True), key
    assert trained["prior_correction"]["final"] == rescored["prior_correction"]["final"]
    assert rescored["test_at_final"]["auc"] == pytest.approx(plain["test_at_final"]["auc"])
    assert rescored["best_val_step"] == plain["best_val_step"]
    assert rescored["rescored_from"] == str((runs / "plain").resolve()) and "prior_correction" not in plain


def test_report_reads_the_copy_as_a_row(runs, tmp_path, run_main):
    """report.py on [run, its re-scored copy]: two rows named by eval.prior_correction and a paired interval."""
    proc = run_main(load_script("report").main, runs / "plain", runs / "rescored", "--out", tmp_path,
                    "--baseline", "supervised (eval.prior_correction=none)")
    assert proc.returncode == 0, proc.stderr
    text = (tmp_path / "report.md").read_text()
    assert "supervised (eval.prior_correction=pool)" in text and "supervised (eval.prior_correction=none)" in text
    with (tmp_path / "report_intervals.csv").open() as handle:
        intervals = list(csv.DictReader(handle))
    assert any(r["method"] == "supervised (eval.prior_correction=pool)" for r in intervals)


def test_refusals(runs, tmp_path, run_main, assert_one_line_error):
    """A non-eval key, a training eval key, an unfinished run, NEW_RUN = RUN, an existing output without --force;
    a re-scored copy is no run a trainer continues."""
    plain = runs / "plain"
    assert_one_line_error(run_main(rescore_main, plain, "--out", tmp_path / "a", "--set", "train.iters=9"),
                          "train.iters")
    assert_one_line_error(run_main(rescore_main, plain, "--out", tmp_path / "a", "--set", "eval.every=2"),
                          "eval.every")
    assert_one_line_error(run_main(rescore_main, plain, "--out", plain, "--set", "eval.prior_correction=pool"),
                          "is the run to re-score")
    unfinished = tmp_path / "unfinished"
    shutil.copytree(plain, unfinished)
    (unfinished / "final_metrics.json").unlink()
    assert_one_line_error(run_main(rescore_main, unfinished, "--out", tmp_path / "b"), "not finished")
    assert_one_line_error(run_main(rescore_main, runs / "rescored", "--out", tmp_path / "c"), "no checkpoints")
    assert_one_line_error(run_main(rescore_main, plain, "--out", runs / "rescored"), "--force")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    from Code.engine.cli import main

    proc = run_main(lambda argv: main(argv, task="cls"), "--config", str(SMOKE_CONFIG), "--out", runs / "rescored")
    assert_one_line_error(proc, "not a Hermes run folder")
    assert (runs / "rescored" / "final_metrics.json").is_file()


def test_sealed_test_corrects_val_with_each_weights_own_prior(phantom_split, tmp_path):
    """The trainer's sealed test with eval.prior_correction=pool (a Trainer shell around a model with mixed class
    decisions, unbounded): val_at_final is the val set's corrected metrics, not the training's uncorrected ones,
    and test_predictions_final.csv holds the corrected rows. Mutations checked: val_at_final left at the
    uncorrected last_val; the pool prior estimated from the test set."""
    from Code.engine.data import build_eval_loader
    from Code.engine.distributed import DistInfo
    from Code.engine.prior_correction import estimate, pool_posteriors
    from Code.engine.trainer import Trainer
    from Code.inference.metrics import summarize_metrics
    from Code.inference.prediction import evaluate_model
    from helpers import smoke_config, smoke_model_with_decisions

    config = smoke_config(phantom_split, task="cls", method="supervised",
                          eval={"prior_correction": "pool"}, ssl={"prior_max_shift": 0.0})
    shell = object.__new__(Trainer)
    shell.config, shell.run_dir, shell.device, shell.dist = config, tmp_path, torch.device("cpu"), DistInfo()
    shell.split, shell.labels, shell.amp_dtype, shell.test_curves = phantom_split, 4, None, False
    shell.model = smoke_model_with_decisions(config)
    shell.eval_loader = build_eval_loader(config, phantom_split, shell.dist, "test")
    shell.val_loader = build_eval_loader(config, phantom_split, shell.dist, "val")
    shell.labeled_prior = labeled_prior(phantom_split, 4)
    shell.step, shell.best, shell.train_seconds, shell.last_val = 6, None, 0.0, {"accuracy": -1.0}
    result = shell._score_test_once()
    prior = estimate(pool_posteriors(shell.model, phantom_split, 4, config, shell.device), shell.labeled_prior, 0.0)
    assert result["prior_correction"]["final"]["pool_prior"] == pytest.approx(prior.tolist(), abs=1e-6)
    val = correct_records(evaluate_model(shell.model, shell.val_loader, "cpu"), prior, shell.labeled_prior)
    assert result["val_at_final"] == pytest.approx(summarize_metrics(val), nan_ok=True)
    test = correct_records(evaluate_model(shell.model, shell.eval_loader, "cpu"), prior, shell.labeled_prior)
    written = rows(tmp_path / "test_predictions_final.csv")
    for record in test:
        assert float(written[record["name"]]["prob_malignant"]) == pytest.approx(record["prob_malignant"], abs=1e-6)
        assert int(written[record["name"]]["pred_class"]) == record["pred_class"]


def test_correction_without_a_pool_is_refused_at_start(phantom_split, tmp_path, run_main, assert_one_line_error):
    """A split budget without unlabeled.txt: refused before training, not after the last step."""
    from Code.engine.cli import main

    split = tmp_path / "split"
    shutil.copytree(phantom_split, split)
    (split / "train" / "4" / "unlabeled" / "unlabeled.txt").unlink()
    proc = run_main(lambda argv: main(argv, task="cls"), "--config", str(SMOKE_CONFIG), "--data", split, "--labels",
                    "4", "--method", "supervised", "--out", tmp_path / "run", "--set", "eval.prior_correction=pool")
    assert_one_line_error(proc, "eval.prior_correction", "unlabeled.txt")
    assert not (tmp_path / "run" / "checkpoints" / "latest.pt").exists()
