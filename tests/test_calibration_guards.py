"""Issue #21 / #22 guards on calibration: the part it is fitted on is never the evaluated one nor a split's test
part; a calibration applies only to the checkpoint file it was fitted on; evaluate.py and predict.py flag the same
images for review whatever the images' original size."""
import csv
import json
import os
import shutil
from pathlib import Path

import cv2
import pytest
import torch

from Code.inference.calibration import calibration_path, checkpoint_sha256, save_calibration
from Code.common.checkpoint import load_checkpoint, save_checkpoint
from Code.engine.config import load_config
from helpers import load_script, smoke_model_with_decisions

pytestmark = pytest.mark.usefixtures("single_thread")
ROOT = Path(__file__).resolve().parents[1]
evaluate, predict, export = load_script("evaluate"), load_script("predict"), load_script("export")


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def smoke_checkpoint(tmp_path_factory):
    """The smoke model with its segmentation logits scaled up 200×: on phantom images its lesion probabilities
    then spread over (0, 1) (about 0.5 everywhere otherwise, which would make every lesion entropy ≈ 1)."""
    config = load_config(ROOT / "configs" / "smoke.yaml")
    model = smoke_model_with_decisions(config)
    with torch.no_grad():
        model.seg_head[0].weight *= 200.0
        model.seg_head[0].bias *= 200.0
    path = tmp_path_factory.mktemp("guards") / "source.pt"
    save_checkpoint(path, {"model": model.state_dict(), "config": config, "step": 6})
    return path


@pytest.fixture
def checkpoint(smoke_checkpoint, tmp_path):
    """A fresh copy as ``<tmp>/run/checkpoints/best.pt`` (no calibration file yet)."""
    path = tmp_path / "run" / "checkpoints" / "best.pt"
    path.parent.mkdir(parents=True)
    shutil.copy(smoke_checkpoint, path)
    return path


def _part_copy(source, target, extra_lines=()):
    shutil.copytree(source, target)
    if extra_lines:
        with (target / "labeled.txt").open("a") as handle:
            handle.write("".join(f"{line}\n" for line in extra_lines))
    return target


def test_val_that_is_scored_or_test_is_refused(phantom_split, checkpoint, tmp_path, run_main, assert_one_line_error):
    """Each way of fitting on the scored images or on test is a one-line error, with nothing written.
    Mutations checked: validation_part_to_fit not calling refuse_scored_images (all cases fit and exit 0);
    refuse_scored_images without the resolved-path comparison (the symbolic link case fits); without the
    split.json overlap rule (the one-test-image case fits)."""
    split = phantom_split
    copy_a, copy_b = _part_copy(split / "test", tmp_path / "copy_a"), _part_copy(split / "test", tmp_path / "copy_b")
    (tmp_path / "link").symlink_to(split / "test", target_is_directory=True)
    whole = tmp_path / "whole"
    shutil.copytree(split, whole)
    test_line = (split / "test" / "labeled.txt").read_text().splitlines()[0]
    with (whole / "val" / "labeled.txt").open("a") as handle:
        handle.write(test_line + "\n")
    cases = [  # (--data, --val or None, fragments of the message)
        (split / "test", split / "test", ["is the --data folder being evaluated"]),
        (split / "val", None, ["--calibrate: the validation part", "is the --data folder being evaluated"]),
        (split / "val", split / "test", ["is the test part of the split"]),
        (split / "val", tmp_path / "link", ["is the test part of the split", str(split.resolve())]),
        (split / "val", copy_a, ["lists the same", "as the test part of the split"]),
        (copy_b, copy_a, ["lists the same", "as the evaluated --data"]),
        (whole / "test", whole / "val", ["1 of its", "belong to the test part", test_line.split()[0]]),
    ]
    for data, val, fragments in cases:
        out = tmp_path / "never"
        args = ["--checkpoint", checkpoint, "--data", data, "--calibrate", "--device", "cpu", "--out", out]
        result = run_main(evaluate.main, *args, *(["--val", val] if val else []))
        assert_one_line_error(result, *fragments, "fitted on images that are not scored")
        assert not out.exists() and not calibration_path(checkpoint).exists()


def test_calibration_is_tied_to_its_checkpoint_file(checkpoint, tmp_path, run_main, assert_one_line_error):
    """A calibration stores the SHA-256 of its checkpoint file; after best.pt moved (saved again with other
    content), or for a file without the hash, evaluate.py/predict.py --calibration and export.py --temperature
    auto/FILE refuse in one line with the refit hint, writing nothing. A copy of the checkpoint (same bytes) keeps
    its calibration. Mutation checked: resolve_temperature not calling check_fitted_on fails."""
    from Code.inference.calibration import resolve_temperature

    document = {"temperature": 1.5, "review_thresholds": None, "checkpoint_sha256": checkpoint_sha256(checkpoint)}
    stored = calibration_path(checkpoint)
    save_calibration(stored, document)
    assert resolve_temperature("auto", checkpoint) == document
    copy = tmp_path / "elsewhere.pt"
    shutil.copy(checkpoint, copy)
    assert resolve_temperature(str(stored), copy) == document

    state = load_checkpoint(checkpoint)
    save_checkpoint(checkpoint, dict(state, step=state["step"] + 10))  # the run went on: best.pt moved
    images = ROOT / "Assets"
    runs = {
        "evaluate": (evaluate.main, ["--checkpoint", checkpoint, "--data", tmp_path, "--calibration",
                                     "--device", "cpu", "--out", tmp_path / "never"]),
        "predict": (predict.main, ["--checkpoint", checkpoint, "--images", images, "--calibration", stored,
                                   "--device", "cpu", "--out", tmp_path / "never"]),
        "export": (export.main, ["--checkpoint", checkpoint, "--format", "onnx", "--out", tmp_path / "never.onnx",
                                 "--temperature", "auto"]),
    }
    (tmp_path / "labeled.txt").write_text("a.png a.png 0\n")  # evaluate.py checks --data before the calibration
    for name, (main, args) in runs.items():
        assert_one_line_error(run_main(main, *args), "fitted on another checkpoint", "--calibrate --force")
    stored.write_text(json.dumps({"temperature": 1.5, "review_thresholds": None}))  # written before the hash
    for name, (main, args) in runs.items():
        assert_one_line_error(run_main(main, *args), "does not record the checkpoint", "--calibrate --force")
    assert not (tmp_path / "never").exists() and not (tmp_path / "never.onnx").exists()
    assert resolve_temperature("1.5", checkpoint) == {"temperature": 1.5, "review_thresholds": None}


def _mixed_size_part(source, target):
    """``source``'s images and masks resized to sizes other than the model's 64×64 (a labeled part)."""
    sizes = [(80, 112), (50, 70), (130, 90), (64, 64), (97, 41)]
    lines = (source / "labeled.txt").read_text().split("\n")
    for folder in ("image", "mask"):
        (target / folder).mkdir(parents=True)
    for i, line in enumerate(l for l in lines if l.strip()):
        image, mask, _ = line.split()
        h, w = sizes[i % len(sizes)]
        for folder, name, interpolation in (("image", image, cv2.INTER_LINEAR), ("mask", mask, cv2.INTER_NEAREST)):
            pixels = cv2.imread(str(source / folder / name), cv2.IMREAD_UNCHANGED)
            cv2.imwrite(str(target / folder / name), cv2.resize(pixels, (w, h), interpolation=interpolation))
    shutil.copy(source / "labeled.txt", target / "labeled.txt")
    return target


def test_evaluate_and_predict_flag_the_same_images(phantom_split, checkpoint, tmp_path):
    """The same images (of sizes other than the model's) and the same calibration give the same class and lesion
    entropies and review flags in evaluate.py's per_image.csv and predict.py's predictions.csv. Mutation checked:
    predict.py computing the entropies from the lesion probability resized to the original size (the former
    behaviour) fails."""
    part = _mixed_size_part(phantom_split / "test", tmp_path / "mixed")
    assert evaluate.main(["--checkpoint", str(checkpoint), "--data", str(part), "--val", str(phantom_split / "val"),
                          "--calibrate", "--device", "cpu", "--out", str(tmp_path / "eval"), "--no-overlays",
                          "--batch-size", "5"]) == 0
    assert predict.main(["--checkpoint", str(checkpoint), "--images", str(part / "image"), "--calibration",
                         "--device", "cpu", "--out", str(tmp_path / "pred"), "--no-overlays", "--batch-size", "3"]) == 0
    evaluated = {r["name"]: r for r in _rows(tmp_path / "eval" / "per_image.csv")}
    predicted = {os.path.basename(r["file"]): r for r in _rows(tmp_path / "pred" / "predictions.csv")}
    assert set(evaluated) == set(predicted) and len(evaluated) > 5
    for name, row in evaluated.items():
        for key in ("class_entropy", "lesion_entropy", "prob_malignant"):
            assert float(predicted[name][key]) == pytest.approx(float(row[key]), abs=1e-5, nan_ok=True), (name, key)
    flags = [int(evaluated[n]["review"]) for n in sorted(evaluated)]
    assert [int(predicted[n]["review"]) for n in sorted(evaluated)] == flags
    assert 0 < sum(flags) < len(flags)
