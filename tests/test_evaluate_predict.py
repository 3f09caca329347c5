"""evaluate.py and predict.py end to end on a tiny random model and a tiny split part (CPU; evaluate.py once as
a subprocess, the rest in-process through the scripts' ``main``)."""
import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from Code.engine.builders import build_model
from Code.common.checkpoint import save_checkpoint
from Code.engine.config import load_config
from Code.inference.metrics import METRIC_KEYS
from Code.errors import UserError
from helpers import load_script

ROOT = Path(__file__).resolve().parents[1]
TINY = {"data": {"size": 64, "in_channels": 1},
        "model": {"encoder_name": "tu-test_resnet", "encoder_weights": None, "decoder_channels": [32, 16, 16, 8, 8],
                  "pixel_embed_dim": 32, "image_embed_dim": 16, "consist_dim": 16}}


def run_script(name, *args, timeout=120):
    cmd = [sys.executable, str(ROOT / "Code" / name), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=timeout,
                          env={"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})


evaluate, predict = load_script("evaluate"), load_script("predict")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """``RUN/checkpoints/best.pt`` (plain keys) and a DDP-style copy with ``module.`` prefixes."""
    torch.manual_seed(0)
    config = load_config(overrides=[TINY])
    model = build_model(config)
    run = tmp_path_factory.mktemp("run")
    plain = run / "checkpoints" / "best.pt"
    save_checkpoint(plain, {"model": model.state_dict(), "config": config, "step": 7})
    ddp = run / "ddp.pt"
    save_checkpoint(ddp, {"model": {f"module.{k}": v for k, v in model.state_dict().items()}, "config": config,
                          "step": 7})
    return plain, ddp


def _blob_image(rng, height, width, lesion):
    image = rng.integers(40, 200, size=(height, width), dtype=np.uint8)
    mask = np.zeros((height, width), np.uint8)
    if lesion:
        cv2.circle(mask, (width // 2, height // 2), min(height, width) // 4, 255, -1)
        image[mask > 0] //= 3
    return image, mask


@pytest.fixture(scope="module")
def split_part(tmp_path_factory):
    """A split part ``test/{image,mask,labeled.txt}`` with 5 images of mixed sizes, both classes, one empty mask."""
    part = tmp_path_factory.mktemp("split") / "test"
    (part / "image").mkdir(parents=True)
    (part / "mask").mkdir()
    rng = np.random.default_rng(0)
    lines = []
    for i, (h, w, label) in enumerate([(64, 64, 0), (80, 96, 1), (50, 70, 0), (64, 64, 1), (90, 60, 1)]):
        image, mask = _blob_image(rng, h, w, lesion=i != 2)
        cv2.imwrite(str(part / "image" / f"case{i}.png"), image)
        cv2.imwrite(str(part / "mask" / f"case{i}_mask.png"), mask)
        lines.append(f"case{i}.png case{i}_mask.png {label}")
    (part / "labeled.txt").write_text("\n".join(lines) + "\n")
    return part


def _read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_evaluate_outputs_default_out_refusal_and_ddp(checkpoints, split_part, tmp_path):
    plain, ddp = checkpoints
    proc = run_script("evaluate.py", "--checkpoint", plain, "--data", split_part, "--device", "cpu",
                      "--batch-size", "2")
    assert proc.returncode == 0, proc.stderr
    out = plain.parent.parent / "eval_test"  # default: <run folder>/eval_<part name>
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics)[:len(METRIC_KEYS)] == list(METRIC_KEYS)
    assert metrics["n_images"] == 5 and metrics["step"] == 7 and metrics["checkpoint"] == str(plain.resolve())
    rows = _read_csv(out / "per_image.csv")
    assert [r["name"] for r in rows] == [f"case{i}.png" for i in range(5)]
    assert np.mean([float(r["dice"]) for r in rows]) == pytest.approx(metrics["dice"], abs=1e-12)
    assert np.mean([float(r["iou"]) for r in rows]) == pytest.approx(metrics["iou"], abs=1e-12)
    assert np.mean([r["label"] == r["pred_class"] for r in rows]) == pytest.approx(metrics["accuracy"])
    assert sorted(p.name for p in (out / "overlays").iterdir()) == [f"case{i}.png" for i in range(5)]
    overlay = cv2.imread(str(out / "overlays" / "case0.png"))
    assert overlay.shape[1] == 2 * 64 * 4 and overlay.shape[0] > 64 * 4  # image | overlay (enlarged), caption
    for figure in ("confusion_matrix.png", "roc.png"):
        assert (out / figure).stat().st_size > 1000

    with pytest.raises(UserError, match="--force"):  # the default folder now holds results
        evaluate.main(["--checkpoint", str(plain), "--data", str(split_part), "--device", "cpu"])

    # DDP-prefixed weights, another batch size, explicit --out: the same numbers
    other = tmp_path / "ddp_eval"
    assert evaluate.main(["--checkpoint", str(ddp), "--data", str(split_part), "--device", "cpu",
                          "--batch-size", "3", "--out", str(other), "--no-overlays"]) == 0
    metrics_ddp = json.loads((other / "metrics.json").read_text())
    for key in METRIC_KEYS:
        if metrics[key] is None:
            assert metrics_ddp[key] is None
        else:
            assert metrics_ddp[key] == pytest.approx(metrics[key], abs=1e-6)


def test_evaluate_one_line_errors(checkpoints, split_part, tmp_path, run_main):
    plain, _ = checkpoints
    proc = run_main(evaluate.main, "--checkpoint", tmp_path / "none.pt", "--data", split_part)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "checkpoint not found" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    cases = [(["--checkpoint", str(plain), "--data", str(tmp_path)], "no labeled.txt")]
    if not torch.cuda.is_available():
        cases.append((["--checkpoint", str(plain), "--data", str(split_part), "--device", "cuda"], "CUDA"))
    for args, message in cases:
        with pytest.raises(UserError, match=message):
            evaluate.main([*args, "--out", str(tmp_path / "never")])
    assert not (tmp_path / "never").exists()


def test_predict_original_sizes_and_failures(checkpoints, tmp_path, run_main):
    plain, ddp = checkpoints
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(1)
    sizes = {"gray.png": (70, 90), "colour.jpg": (100, 60), "scan.bmp": (64, 64), "scan.tif": (45, 130)}
    for name, (h, w) in sizes.items():
        image, _ = _blob_image(rng, h, w, lesion=True)
        if name == "colour.jpg":
            image = np.stack([image, image // 2, image], axis=-1)
        cv2.imwrite(str(images / name), image)
    (images / "broken.png").write_bytes(b"not an image at all")
    (images / "notes.txt").write_text("ignored: not an image extension")
    out = tmp_path / "pred"
    proc = run_main(predict.main, "--checkpoint", ddp, "--images", images, "--out", out, "--device", "cpu",
                    "--batch-size", "3")  # in-process: evaluate.py above runs as a script
    assert proc.returncode == 1, proc.stderr
    errors = [l for l in proc.stderr.splitlines() if l.startswith("error: ")]
    assert len(errors) == 1 and "broken.png" in errors[0]
    assert "1 of 5 images failed" in proc.stderr and "Traceback" not in proc.stderr
    rows = {Path(r["file"]).name: r for r in _read_csv(out / "predictions.csv")}
    assert set(rows) == set(sizes)
    masks = {}
    for name, (h, w) in sizes.items():
        row = rows[name]
        mask = cv2.imread(str(out / row["mask"]), cv2.IMREAD_UNCHANGED)
        assert mask.shape == (h, w) and set(np.unique(mask)) <= {0, 255}
        assert int(row["lesion_area_px"]) == int((mask == 255).sum())
        assert float(row["prob_benign"]) + float(row["prob_malignant"]) == pytest.approx(1.0, abs=1e-5)
        assert int(row["pred_class"]) == int(float(row["prob_malignant"]) > float(row["prob_benign"]))
        masks[row["mask"]] = name
    assert len(masks) == 4  # scan.bmp and scan.tif got distinct mask files
    assert len(list((out / "overlays").glob("*.png"))) == 4

    args = ["--checkpoint", str(plain), "--images", str(images / "gray.png"), str(images / "scan.tif"),
            "--device", "cpu"]
    with pytest.raises(UserError, match="--force"):
        predict.main([*args, "--out", str(out)])
    assert predict.main([*args, "--out", str(tmp_path / "pred2"), "--no-overlays"]) == 0
    assert len(_read_csv(tmp_path / "pred2" / "predictions.csv")) == 2


def test_predict_never_writes_over_the_images_folder_it_reads(checkpoints, split_part, tmp_path, run_main,
                                                              assert_one_line_error):
    """Issue #21: ``predict.py --images X/images --out X --force`` overwrote the ground-truth masks in X/masks/.
    Mutation checked: predict.py passing no inputs to the output rule (X is then refused only as a folder
    predict.py did not write, without naming --images)."""
    plain, _ = checkpoints
    x = tmp_path / "X"
    shutil.copytree(split_part, x)
    truth = {p.name: p.read_bytes() for p in (x / "mask").iterdir()}
    (x / "masks").mkdir()
    shutil.copyfile(x / "mask" / "case0_mask.png", x / "masks" / "case0.png")  # the user's own truth, as named
    result = run_main(predict.main, "--checkpoint", plain, "--images", x / "image", "--out", x, "--force",
                      "--device", "cpu")
    assert_one_line_error(result, "contains --images", "not even with --force")
    assert {p.name: p.read_bytes() for p in (x / "mask").iterdir()} == truth
    assert (x / "masks" / "case0.png").read_bytes() == truth["case0_mask.png"]


def test_force_replaces_evaluate_and_predict_outputs_as_a_whole(checkpoints, split_part, tmp_path):
    """Issue #21: --force into an earlier output wrote into it (stale rows, masks, overlays, review.md stayed).
    Mutation checked: prepare_output_folder writing into the folder instead of deleting it first."""
    plain, _ = checkpoints
    out = tmp_path / "eval"
    args = ["--checkpoint", str(plain), "--data", str(split_part), "--device", "cpu", "--out", str(out)]
    assert evaluate.main(args) == 0 and (out / "overlays").is_dir()
    assert evaluate.main([*args, "--no-overlays", "--force"]) == 0
    assert not (out / "overlays").exists() and not (out / "entropy").exists() and (out / "metrics.json").is_file()
    pred = tmp_path / "pred"
    images = sorted((split_part / "image").iterdir())
    base = ["--checkpoint", str(plain), "--device", "cpu", "--out", str(pred), "--no-overlays"]
    assert predict.main([*base, "--images", *map(str, images[:3])]) == 0
    assert predict.main([*base, "--images", str(images[3]), "--force"]) == 0
    assert [p.name for p in (pred / "masks").iterdir()] == [f"{images[3].stem}.png"]
    assert [Path(r["file"]).name for r in _read_csv(pred / "predictions.csv")] == [images[3].name]
    with pytest.raises(UserError, match="holds the output of predict.py"):  # another script's output: never
        evaluate.main([*args[:-1], str(pred), "--force"])
