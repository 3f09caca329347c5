"""export.py, the exported models and predict.py --model: parity with the checkpoint, metadata, refusals, bench."""
import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from Code.data import load_gray, normalization, preprocess
from Code.inference.calibration import calibration_path, checkpoint_sha256, save_calibration
from Code.common.checkpoint import save_checkpoint
from Code.inference.loading import load_model_from_checkpoint
from Code.engine.config import load_config
from Code.inference.export_graph import read_onnx_metadata
from Code.inference.predictors import CheckpointPredictor, OnnxPredictor, TorchScriptPredictor, open_exported
from Code.errors import UserError
from helpers import load_script, smoke_model_with_decisions

pytestmark = pytest.mark.usefixtures("single_thread")
ROOT = Path(__file__).resolve().parents[1]
CALIBRATION = {"temperature": 1.7, "review_thresholds": {"class_entropy": 0.9995, "lesion_entropy": 0.99}}

export, predict, bench = load_script("export"), load_script("predict"), load_script("bench")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The smoke model's checkpoint with a calibration file, exported to ONNX (``--temperature auto``) and
    TorchScript (``--temperature 1.7``)."""
    config = load_config(ROOT / "configs" / "smoke.yaml")
    root = tmp_path_factory.mktemp("export")
    checkpoint = root / "run" / "checkpoints" / "best.pt"
    save_checkpoint(checkpoint, {"model": smoke_model_with_decisions(config).state_dict(), "config": config,
                                 "step": 6})
    save_calibration(calibration_path(checkpoint), dict(CALIBRATION, checkpoint_sha256=checkpoint_sha256(checkpoint)))
    onnx_path, ts_path = root / "deploy" / "hermes.onnx", root / "deploy" / "hermes.ts"
    assert export.main(["--checkpoint", str(checkpoint), "--format", "onnx", "--out", str(onnx_path),
                        "--temperature", "auto"]) == 0
    assert export.main(["--checkpoint", str(checkpoint), "--format", "torchscript", "--out", str(ts_path),
                        "--temperature", "1.7"]) == 0
    return checkpoint, onnx_path, ts_path


def _reference(checkpoint):
    model, config, _ = load_model_from_checkpoint(checkpoint)
    return CheckpointPredictor(model, config, torch.device("cpu"), calibration=CALIBRATION)


def test_onnx_parity_dynamic_batch_and_size(exported):
    """Probabilities of ONNX Runtime and of the checkpoint agree to 1e-4 at the trained size and at another
    batch and spatial size (dynamic axes), with the temperature of the calibration file baked in.
    Mutation checked: InferenceGraph without the division by the temperature fails."""
    checkpoint, onnx_path, _ = exported
    reference, onnx_model = _reference(checkpoint), OnnxPredictor(onnx_path)
    for shape in [(3, 1, 64, 64), (2, 1, 96, 128), (1, 1, 32, 32)]:
        x = torch.randn(*shape, generator=torch.Generator().manual_seed(sum(shape)))
        (seg_ref, cls_ref), (seg, cls) = reference(x), onnx_model(x)
        assert seg.shape == seg_ref.shape == (shape[0], 2, *shape[2:]) and cls.shape == (shape[0], 2)
        assert float((seg - seg_ref).abs().max()) <= 1e-4
        assert float((cls - cls_ref).abs().max()) <= 1e-4
    lesion_share = float((seg_ref[:, 1] > 0.5).float().mean())
    assert 0.05 < lesion_share < 0.95  # masks are not trivially empty or full


def test_metadata_describes_preprocessing(exported):
    """Mutation checked: export_metadata storing the RGB normalisation for a 1-channel model fails."""
    checkpoint, onnx_path, ts_path = exported
    meta = read_onnx_metadata(onnx_path)
    mean, std = normalization(1)
    assert meta["input"]["input_size"] == [64, 64] and meta["input"]["channels"] == 1
    assert meta["input"]["mean"] == pytest.approx(mean.tolist()) and meta["input"]["std"] == pytest.approx(std.tolist())
    assert meta["input"]["scale"] == pytest.approx(1 / 255)
    assert meta["temperature"] == 1.7 and meta["review_thresholds"] == CALIBRATION["review_thresholds"]
    assert meta["class_names"] == ["benign", "malignant"] and meta["step"] == 6
    assert meta["source_checkpoint"] == str(checkpoint.resolve())
    ts = open_exported(ts_path)
    assert isinstance(ts, TorchScriptPredictor) and ts.temperature == 1.7 and ts.review_thresholds is None
    assert ts.size == 64


def test_torchscript_parity(exported):
    """Mutation checked: export_torchscript tracing the graph with temperature 1 instead of 1.7 fails."""
    checkpoint, _, ts_path = exported
    reference, ts = _reference(checkpoint), TorchScriptPredictor(ts_path)
    for shape in [(2, 1, 64, 64), (1, 1, 96, 64)]:
        x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
        (seg_ref, cls_ref), (seg, cls) = reference(x), ts(x)
        assert float((seg - seg_ref).abs().max()) <= 1e-4 and float((cls - cls_ref).abs().max()) <= 1e-4


def _rows(path):
    with open(path, newline="") as handle:
        return {Path(r["file"]).name: r for r in csv.DictReader(handle)}


def test_predict_with_onnx_model_matches_checkpoint(exported, tmp_path):
    """predict.py --model FILE.onnx gives the masks, classes and review flags of predict.py --checkpoint
    --calibration, probabilities within 1e-4 (a mask pixel may differ only where the lesion probability is
    within 1e-4 of the 0.5 threshold). Mutation checked: OnnxPredictor returning [lesion, 1 − lesion]
    (channels swapped) fails."""
    checkpoint, onnx_path, _ = exported
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for name, (h, w) in {"a.png": (64, 64), "b.png": (80, 120), "c.jpg": (150, 90)}.items():
        cv2.imwrite(str(images / name), rng.integers(0, 255, (h, w), dtype=np.uint8))
    outs = {"ckpt": tmp_path / "ckpt", "onnx": tmp_path / "onnx"}
    reference = _reference(checkpoint)
    assert predict.main(["--checkpoint", str(checkpoint), "--calibration", "--images", str(images), "--device",
                         "cpu", "--out", str(outs["ckpt"])]) == 0
    assert predict.main(["--model", str(onnx_path), "--images", str(images), "--out", str(outs["onnx"]),
                         "--batch-size", "2"]) == 0
    ref, got = _rows(outs["ckpt"] / "predictions.csv"), _rows(outs["onnx"] / "predictions.csv")
    assert set(ref) == set(got) == {"a.png", "b.png", "c.jpg"}
    for name in ref:
        assert got[name]["pred_class"] == ref[name]["pred_class"]
        assert got[name]["review"] == ref[name]["review"] and ref[name]["review"] in ("0", "1")
        for key in ("prob_malignant", "class_entropy"):
            assert float(got[name][key]) == pytest.approx(float(ref[name][key]), abs=1e-4)
        mask_ref = cv2.imread(str(outs["ckpt"] / ref[name]["mask"]), cv2.IMREAD_UNCHANGED)
        mask = cv2.imread(str(outs["onnx"] / got[name]["mask"]), cv2.IMREAD_UNCHANGED)
        assert 0 < (mask > 0).mean() < 1
        differ = mask != mask_ref  # allowed only where the probability is within 1e-4 of the 0.5 threshold
        if differ.any():
            gray = load_gray(images / name)
            seg, _ = reference(preprocess(gray, 64)[None])
            lesion = predict.lesion_probability(seg[0], *gray.shape).numpy()
            assert np.abs(lesion[differ] - 0.5).max() < 1e-4
        assert (outs["onnx"] / "entropy" / f"{Path(name).stem}.png").is_file()


def test_export_and_predict_refusals(exported, tmp_path):
    """Mutation checked: export.py without check_exportable (gradient saliency exported) fails."""
    checkpoint, onnx_path, _ = exported
    with pytest.raises(UserError, match="--force"):
        export.main(["--checkpoint", str(checkpoint), "--format", "onnx", "--out", str(onnx_path)])
    with pytest.raises(UserError, match="is a folder"):
        export.main(["--checkpoint", str(checkpoint), "--format", "onnx", "--out", str(tmp_path)])
    with pytest.raises(UserError, match="checkpoint not found"):
        export.main(["--checkpoint", str(tmp_path / "none.pt"), "--format", "onnx", "--out", str(tmp_path / "m")])
    with pytest.raises(UserError, match="calibration file not found"):
        export.main(["--checkpoint", str(onnx_path), "--format", "onnx", "--out", str(tmp_path / "m.onnx"),
                     "--temperature", "auto"])
    config = load_config(ROOT / "configs" / "smoke.yaml", overrides=[{"model": {"saliency_mode": "gradient"}}])
    gradient = tmp_path / "gradient.pt"
    save_checkpoint(gradient, {"model": smoke_model_with_decisions(config).state_dict(), "config": config})
    with pytest.raises(UserError, match="saliency_mode=gradient"):
        export.main(["--checkpoint", str(gradient), "--format", "torchscript", "--out", str(tmp_path / "g.ts")])
    assert not (tmp_path / "g.ts").exists()
    with pytest.raises(UserError, match="carries its own temperature"):
        predict.main(["--model", str(onnx_path), "--calibration", "--images", str(tmp_path)])
    with pytest.raises(UserError, match="model file not found"):
        predict.main(["--model", str(tmp_path / "none.onnx"), "--images", str(tmp_path)])
    (tmp_path / "fake.onnx").write_bytes(b"not a model")
    with pytest.raises(UserError, match="cannot read ONNX model"):
        open_exported(tmp_path / "fake.onnx")


def test_bench_export_on_the_exported_file(exported, capsys):
    """bench.py export: one JSON line per runtime and batch size, then the speed-up and the parity.
    Mutation checked: the speed-up dict keeping only the last batch size fails. (Building the PyTorch graph with
    T = 1 instead of the file's 1.7 is NOT caught here: the untrained smoke model's class margins on random inputs
    are too small for the temperature to move its probabilities by 1e-4; test_onnx_parity covers the
    temperature.)"""
    checkpoint, onnx_path, _ = exported
    assert bench.main(["export", "--checkpoint", str(checkpoint), "--onnx", str(onnx_path), "--size", "64",
                       "--batches", "1", "2", "--runs", "1"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [(l["runtime"], l["batch"]) for l in lines[:4]] == [("pytorch", 1), ("onnxruntime", 1),
                                                               ("pytorch", 2), ("onnxruntime", 2)]
    assert all(l["images_per_sec"] > 0 for l in lines[:4])
    assert set(lines[4]["onnxruntime_speedup"]) == {"1", "2"} and lines[4]["max_abs_diff"] <= 1e-4
    with pytest.raises(UserError, match="multiple of 32"):
        bench.main(["export", "--size", "50"])


def test_export_never_replaces_its_checkpoint_or_another_kind_of_file(exported, tmp_path):
    """Issue #21: ``export.py --checkpoint R/best.pt --out R/best.pt --force`` replaced the training checkpoint
    with a TorchScript file. Mutations checked: export.py without the kind test (is_exported_model) replaces the
    copied checkpoint; without its inputs the refusal no longer names --checkpoint."""
    checkpoint, onnx_path, ts_path = exported
    before = checkpoint.read_bytes()
    with pytest.raises(UserError, match="is --checkpoint .*an input of this command"):
        export.main(["--checkpoint", str(checkpoint), "--format", "torchscript", "--out", str(checkpoint), "--force"])
    assert checkpoint.read_bytes() == before
    other = tmp_path / "other.pt"
    other.write_bytes(before)
    with pytest.raises(UserError, match="is not a model exported by export.py"):
        export.main(["--checkpoint", str(checkpoint), "--format", "torchscript", "--out", str(other), "--force"])
    assert other.read_bytes() == before
    assert export.is_exported_model(onnx_path) and export.is_exported_model(ts_path)


def test_out_suffix_matches_the_format_and_a_misnamed_model_says_what_it_is(exported, tmp_path):
    """Issue 21: ``--format onnx --out x.ts`` was accepted, and ``predict.py --model x.ts`` then said
    'RuntimeError' with no reason. Mutations checked: without check_out_suffix the export writes x.ts; without the
    content sniffing the loaders' errors name no reason (the old 'cannot read TorchScript model x.ts: RuntimeError')."""
    checkpoint, onnx_path, ts_path = exported
    for fmt, name in (("onnx", "x.ts"), ("torchscript", "x.onnx"), ("onnx", "x")):
        with pytest.raises(UserError, match=rf"--out .*{name}: a {fmt} file is named"):
            export.main(["--checkpoint", str(checkpoint), "--format", fmt, "--out", str(tmp_path / name)])
        assert not (tmp_path / name).exists()
    onnx_as_ts, ts_as_onnx = tmp_path / "onnx.ts", tmp_path / "ts.onnx"
    onnx_as_ts.write_bytes(onnx_path.read_bytes())
    ts_as_onnx.write_bytes(ts_path.read_bytes())
    cases = ((onnx_as_ts, "not a TorchScript file: it is an ONNX model.*use a .onnx name"),
             (ts_as_onnx, "not an ONNX model: it is a TorchScript file.*use a .ts name"),
             (checkpoint, "is a PyTorch checkpoint, not an exported model: use predict.py --checkpoint"))
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "a.png"), np.zeros((40, 40), np.uint8))
    for path, message in cases:
        with pytest.raises(UserError, match=message):
            predict.main(["--model", str(path), "--images", str(images), "--out", str(tmp_path / "pred")])
    assert not (tmp_path / "pred").exists()
