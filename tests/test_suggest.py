"""suggest.py (issue #24): every strategy's ranked CSV, the scores and strategies on constructed outputs, and the
one-line refusals (a checkpoint of another split or budget, --k larger than the pool, ...). In-process through
the script's ``main``; a tiny random model on the session's phantom split (18 pool images of budget 4, 64x64)."""
import csv
import shutil

import numpy as np
import pytest
import torch

from Code.active.strategies import batch_parts, outside_share, select, strategy_scores
from Code.common.checkpoint import save_checkpoint
from helpers import load_script, smoke_config, smoke_model_with_decisions

pytestmark = pytest.mark.usefixtures("single_thread")
suggest = load_script("suggest")


def _checkpoint(path, split, labels):
    config = smoke_config(split, labels)
    save_checkpoint(path, {"model": smoke_model_with_decisions(config).state_dict(), "config": config, "step": 1})
    return path


@pytest.fixture(scope="module")
def ckpt(phantom_split, tmp_path_factory):
    return _checkpoint(tmp_path_factory.mktemp("run") / "checkpoints" / "best.pt", phantom_split, 4)


def _pool(split, labels=4):
    return (split / "train" / str(labels) / "unlabeled" / "unlabeled.txt").read_text().split()


def _rows(out):
    with (out / "to_label.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def _run(run_main, ckpt, split, out, *extra, labels=4, k=3):
    return run_main(suggest.main, "--checkpoint", ckpt, "--data", split, "--labels", labels, "--k", k, "--out", out,
                    "--device", "cpu", *extra)


@pytest.mark.parametrize("strategy", ["random", "entropy", "disagreement", "diverse"])
def test_every_strategy_writes_a_ranked_csv(strategy, run_main, ckpt, phantom_split, tmp_path):
    result = _run(run_main, ckpt, phantom_split, tmp_path / "s", "--strategy", strategy)
    assert result.returncode == 0, result.stderr
    rows = _rows(tmp_path / "s")
    assert list(rows[0]) == list(suggest.CSV_COLUMNS)
    assert [int(r["rank"]) for r in rows] == [1, 2, 3]
    images = [r["image"] for r in rows]
    assert len(set(images)) == 3 and set(images) <= set(_pool(phantom_split))
    if strategy != "diverse":
        scores = [float(r["score"]) for r in rows]
        assert scores == sorted(scores, reverse=True)
    assert (tmp_path / "s" / "contact_sheet.png").stat().st_size > 0


def test_random_is_seeded(run_main, ckpt, phantom_split, tmp_path):
    runs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        assert _run(run_main, ckpt, phantom_split, tmp_path / name, "--strategy", "random", "--seed", seed,
                    k=4).returncode == 0
        runs[name] = [r["image"] for r in _rows(tmp_path / name)]
    assert runs["a"] == runs["b"] and runs["a"] != runs["c"]


def test_scores_of_constructed_outputs():
    """Image 0: a certain lesion map and class, the CAM on the lesion; image 1: p = 0.5 everywhere, CAM elsewhere."""
    lesion = torch.zeros(8, 8)
    lesion[2:6, 2:6] = 1.0
    certain = torch.stack([1 - 0.999 * lesion - 0.001 * (1 - lesion), 0.999 * lesion + 0.001 * (1 - lesion)])
    seg = torch.stack([certain, torch.full((2, 8, 8), 0.5)])
    cls = torch.tensor([[0.99, 0.01], [0.5, 0.5]])
    off = torch.zeros(8, 8)
    off[0, 0] = 1.0
    cam = torch.stack([lesion, off])[:, None]
    parts = {k: v.numpy() for k, v in batch_parts(seg, cls, cam).items()}
    assert parts["pixel_entropy"][1] == pytest.approx(1.0) and parts["pixel_entropy"][0] < 0.05
    assert parts["disagreement"][0] == pytest.approx(0.001, abs=1e-3) and parts["disagreement"][1] > 0.45
    chosen, scores, _ = select("entropy", parts, np.eye(2), 1, seed=0)
    assert chosen == [1] and scores[1] == pytest.approx(2.0)
    assert select("disagreement", parts, np.eye(2), 1, seed=0)[0] == [1]


def test_disagreement_is_the_cam_share_outside_the_lesion():
    lesion = torch.zeros(1, 4, 4)
    lesion[0, :2] = 1.0  # top half
    cam = torch.zeros(1, 4, 4)
    cam[0, :, :] = 1.0
    assert float(outside_share(cam, lesion)) == pytest.approx(0.5)
    cam[0, :2] = 3.0  # three quarters of the evidence on the lesion
    assert float(outside_share(cam, lesion)) == pytest.approx(0.25)
    assert float(outside_share(torch.zeros(1, 4, 4), lesion)) == pytest.approx(0.5)  # no evidence: uniform


def test_diverse_does_not_pick_two_copies():
    """Images 0 and 1 are copies (same features, the two highest scores); entropy takes both, diverse one."""
    rng = np.random.default_rng(0)
    features = rng.normal(size=(12, 16))
    features[1] = features[0]
    pixel = np.linspace(0.9, 0.1, 12)
    pixel[1] = pixel[0]
    parts = {"pixel_entropy": pixel, "class_entropy": np.zeros(12), "disagreement": np.zeros(12)}
    assert select("entropy", parts, features, 2, seed=0)[0] == [0, 1]
    chosen, _, clusters = select("diverse", parts, features, 2, seed=0)
    assert chosen[0] == 0 and chosen[1] != 1 and len(chosen) == 2 and set(clusters) == set(chosen)


def test_random_scores_depend_on_the_seed_only():
    parts = {"pixel_entropy": np.zeros(5), "class_entropy": np.zeros(5), "disagreement": np.zeros(5)}
    assert np.array_equal(strategy_scores("random", parts, 3), strategy_scores("random", parts, 3))
    assert not np.array_equal(strategy_scores("random", parts, 3), strategy_scores("random", parts, 4))


def test_test_and_val_images_are_never_read(run_main, ckpt, phantom_split, tmp_path):
    split = tmp_path / "split"
    shutil.copytree(phantom_split, split)
    shutil.rmtree(split / "test" / "image")
    shutil.rmtree(split / "val" / "image")
    result = _run(run_main, ckpt, split, tmp_path / "out")  # a copy of the checkpoint's split: the lists match
    assert result.returncode == 0, result.stderr


def test_refusals(run_main, assert_one_line_error, ckpt, phantom_split, phantom_raw, tmp_path):
    from Code.DataProcess.splitting import split_dataset

    other = tmp_path / "other"
    split_dataset("sztus", phantom_raw, other, [4], seed=1, val_ratio=0.25)
    lists = [(s / "train/4/labeled/labeled.txt").read_text() for s in (phantom_split, other)]
    assert lists[0] != lists[1]
    foreign = _checkpoint(tmp_path / "foreign.pt", other, 4)
    out = tmp_path / "out"
    assert_one_line_error(_run(run_main, foreign, phantom_split, out), "trained on another split")
    budget10 = _checkpoint(tmp_path / "b10.pt", phantom_split, 10)
    assert_one_line_error(_run(run_main, budget10, phantom_split, out), "label budget 10", "--labels 4")
    assert_one_line_error(_run(run_main, ckpt, phantom_split, out, k=19), "--k 19 is larger", "18 images")
    assert_one_line_error(_run(run_main, ckpt, phantom_split, out, k=0), "--k must be positive")
    assert_one_line_error(_run(run_main, ckpt, phantom_split, out, labels=6), "no budget train/6/")
    assert_one_line_error(_run(run_main, tmp_path / "none.pt", phantom_split, out), "checkpoint not found")
    assert_one_line_error(_run(run_main, ckpt, tmp_path, out), "not a split folder")
    assert_one_line_error(_run(run_main, ckpt, phantom_split, phantom_split / "s"), "is inside")
    assert not out.exists() and not (phantom_split / "s").exists()
