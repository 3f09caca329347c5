"""Inputs a new user hit (issue 9 §2): masks not stored as 0/255 (defect 8), a 0-byte image given to predict.py
(defect 10), evaluate.py pointed at a train part (defect 12)."""
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from Code.data.image_io import binarize_mask, load_gray
from Code.DataProcess.raw_readers import RawItem
from Code.DataProcess.splitting import format_summary, merged_mask_png, split_dataset
from Code.errors import UserError
from helpers import load_script

evaluate, predict = load_script("evaluate"), load_script("predict")


def test_binarize_mask_rules():
    """Defect 8. Mutation checked: the old rule (> 127 whenever max > 1) makes the 0/100 and 0/2 masks empty."""
    lesion = np.zeros((8, 8), np.uint8)
    lesion[2:5, 3:6] = 1
    for value in (1, 2, 100, 255):
        assert np.array_equal(binarize_mask(lesion * value), lesion), value
    jpeg_like = lesion * 250 + np.uint8(3) * (1 - lesion)  # background noise 3, lesion 250…
    jpeg_like[0, 0] = 1
    assert np.array_equal(binarize_mask(jpeg_like), lesion)
    assert not binarize_mask(np.zeros((4, 4), np.uint8)).any()
    label_map = lesion.copy()
    label_map[6, 6] = 2
    with pytest.raises(UserError, match=r"m\.png: ambiguous mask with values 0, 1, 2"):
        binarize_mask(label_map, "m.png")


def test_split_keeps_masks_stored_as_0_100_and_reports_empty_masks(phantom_raw, tmp_path):
    """Defect 8 through data_split. Mutation checked: with the old rule the 0/100 mask is written empty and the
    summary counts 1 empty benign mask."""
    raw = tmp_path / "raw"
    shutil.copytree(phantom_raw, raw)
    mask_path = sorted((raw / "benign" / "mask").iterdir())[0]
    original = cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE) > 127
    cv2.imwrite(str(mask_path), original.astype(np.uint8) * 100)
    empty_path = sorted((raw / "malignant" / "mask").iterdir())[0]
    cv2.imwrite(str(empty_path), np.zeros_like(original, np.uint8))
    record = split_dataset("sztus", raw, tmp_path / "split", [4], seed=0)
    item = RawItem(sorted((raw / "benign" / "image").iterdir())[0], (mask_path,), 0, "g", "benign")
    png = cv2.imdecode(np.frombuffer(merged_mask_png(item), np.uint8), cv2.IMREAD_GRAYSCALE)
    assert np.array_equal(png, original.astype(np.uint8) * 255)
    assert record["empty_masks"] == {"benign": {"empty": 0, "total": 24}, "malignant": {"empty": 1, "total": 24}}
    assert "empty masks (no lesion pixel): benign 0 of 24 (0.0 %), malignant 1 of 24 (4.2 %)" in format_summary(record)
    label_map = original.astype(np.uint8)
    label_map[0, 0] = 2
    cv2.imwrite(str(mask_path), label_map)
    with pytest.raises(UserError, match=f"mask {mask_path}: ambiguous mask with values 0, 1, 2"):
        split_dataset("sztus", raw, tmp_path / "split2", [4], seed=0)


def test_16_bit_masks_and_images_are_read_by_their_real_range(tmp_path):
    """Issue 21: a 16-bit PNG mask holding 0/1 became empty (decoded as value >> 8), a 16-bit image of 12-bit
    values was squashed to 0-15. Mutations checked: decoding with IMREAD_GRAYSCALE (8-bit) makes the 0/1 mask
    empty and the 12-bit image dark; scaling every 16-bit image by 65535 makes it dark; a fixed threshold of 127
    on 16-bit anti-aliased masks marks the edge pixels as lesion."""
    from Code.data.image_io import decode_gray, load_mask

    lesion = np.zeros((16, 20), np.uint8)
    lesion[3:9, 4:12] = 1
    cv2.imwrite(str(tmp_path / "mask01.png"), lesion.astype(np.uint16))
    assert decode_gray(tmp_path / "mask01.png").dtype == np.uint16
    assert np.array_equal(load_mask(tmp_path / "mask01.png"), lesion)
    soft = lesion.astype(np.uint16) * 65535
    soft[2, 4:12] = 20000  # an anti-aliased edge below half the 16-bit range: background
    cv2.imwrite(str(tmp_path / "soft.png"), soft)
    assert np.array_equal(load_mask(tmp_path / "soft.png"), lesion)
    twelve = (np.arange(16 * 20, dtype=np.uint16).reshape(16, 20) * 12) % 4096
    twelve[0, 0] = 4095
    cv2.imwrite(str(tmp_path / "image12.png"), twelve)
    assert np.array_equal(load_gray(tmp_path / "image12.png"), np.rint(twelve * (255 / 4095)).astype(np.uint8))
    eight = (twelve % 256).astype(np.uint16)  # 8-bit values stored in a 16-bit file keep their values
    cv2.imwrite(str(tmp_path / "image8in16.png"), eight)
    assert np.array_equal(load_gray(tmp_path / "image8in16.png"), eight.astype(np.uint8))
    image = tmp_path / "image.png"
    cv2.imwrite(str(image), (twelve // 16).astype(np.uint8))
    item = RawItem(image, (tmp_path / "mask01.png",), 1, "g", "malignant")
    png = cv2.imdecode(np.frombuffer(merged_mask_png(item), np.uint8), cv2.IMREAD_GRAYSCALE)
    assert np.array_equal(png, lesion * 255)  # data_split writes the 16-bit mask's lesion, not an empty mask


def test_empty_image_file_is_named(tmp_path, capsys):
    """Defect 10. Mutation checked: without the 0-byte check, predict reports OpenCV's '!buf.empty()' assertion
    without the file name."""
    empty = tmp_path / "scan 0.png"
    empty.write_bytes(b"")
    with pytest.raises(UserError, match=r"cannot read image .*scan 0\.png: the file is empty \(0 bytes\)"):
        load_gray(empty)
    failures = []
    paths, _, _ = predict.read_batch([empty], 64, 1, failures)
    assert paths == [] and failures == [(str(empty), f"cannot read image {empty}: the file is empty (0 bytes)")]
    assert capsys.readouterr().err.strip() == f"error: cannot read image {empty}: the file is empty (0 bytes)"


def test_evaluate_warns_when_the_images_are_training_images(phantom_split, tmp_path, capsys):
    """Defect 12. Mutations checked: without training_images_warning evaluate.py prints no warning; with the part
    lookup removed the test part is flagged too."""
    from Code.engine.builders import build_model
    from Code.common.checkpoint import save_checkpoint
    from Code.engine.config import load_config

    config = load_config(str(Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"))
    config["model"]["encoder_weights"] = None
    checkpoint = tmp_path / "run" / "checkpoints" / "best.pt"
    save_checkpoint(checkpoint, {"model": build_model(config).state_dict(), "config": config, "step": 1})
    train_part = phantom_split / "train" / "4" / "labeled"
    assert evaluate.main(["--checkpoint", str(checkpoint), "--data", str(train_part), "--out", str(tmp_path / "e"),
                          "--no-overlays"]) == 0
    err = capsys.readouterr().err
    assert f"warning: 4 of the 4 images in {train_part.resolve()} belong to the train part" in err
    assert "not a held-out score" in json.loads((tmp_path / "e" / "metrics.json").read_text())["warning"]
    assert evaluate.training_images_warning(phantom_split / "test") is None
    loose = tmp_path / "copy" / "train" / "labeled"  # no split.json above: judged by the path
    shutil.copytree(train_part, loose)
    assert "looks like a train part" in evaluate.training_images_warning(loose)
