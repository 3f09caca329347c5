"""Code.data: list readers, image I/O, SplitDataset modes, reproducible augmentation, weak/strong alignment."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from Code.data import (DEFAULT_AUG, SplitDataset, denormalize, load_gray, preprocess, read_labeled_list,
                       read_unlabeled_list, resolve_aug, write_labeled_list)
from Code.errors import UserError

SIZE = 48


@pytest.mark.parametrize("text, fragment", [
    ("a.png b.png 0\nc.png d.png\n", "line 2: expected"),
    ("a.png b.png zero\n", "line 1: class id 'zero' is not an integer"),
    ("a.png b.png 0\n\nx y.png m.png 1\n", "line 3: expected"),
    ("a.png b.png 2\n", "line 1: class id 2 is not 0"),
    ("\n\n", "is empty"),
])
def test_labeled_list_errors(tmp_path, text, fragment):
    path = tmp_path / "labeled.txt"
    path.write_text(text)
    with pytest.raises(UserError, match=fragment) as info:
        read_labeled_list(path)
    assert str(path) in str(info.value)


def test_list_round_trip_and_unlabeled_errors(tmp_path):
    write_labeled_list(tmp_path / "labeled.txt", [("a.png", "a.png", 0), ("b.png", "b.png", 1)])
    assert (tmp_path / "labeled.txt").read_text() == "a.png a.png 0\nb.png b.png 1\n"
    assert read_labeled_list(tmp_path / "labeled.txt") == [("a.png", "a.png", 0), ("b.png", "b.png", 1)]
    with pytest.raises(UserError, match="whitespace"):
        write_labeled_list(tmp_path / "x.txt", [("a b.png", "m.png", 0)])
    (tmp_path / "unlabeled.txt").write_text("u1.png\nu 2.png\n")
    with pytest.raises(UserError, match="line 2"):
        read_unlabeled_list(tmp_path / "unlabeled.txt")
    with pytest.raises(UserError, match="not found"):
        read_unlabeled_list(tmp_path / "missing.txt")


def test_load_gray_and_preprocess(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"garbage")
    with pytest.raises(UserError, match="bad.png"):
        load_gray(bad)
    color = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    x = preprocess(color, 32, in_channels=3)
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    gray = preprocess(cv2.cvtColor(color, cv2.COLOR_BGR2GRAY), 32, in_channels=1)
    back = denormalize(gray)
    assert back.shape == (1, 32, 32) and 0.0 <= float(back.min()) and float(back.max()) <= 1.0
    expected = cv2.resize(cv2.cvtColor(color, cv2.COLOR_BGR2GRAY), (32, 32), interpolation=cv2.INTER_AREA)
    assert torch.allclose(back[0] * 255, torch.from_numpy(expected).float(), atol=1e-3)


def test_modes_shapes_dtypes_ranges(phantom_split):
    train = phantom_split / "train" / "4"
    image, mask, label = SplitDataset(train / "labeled", "labeled", size=SIZE)[0]
    assert image.shape == (1, SIZE, SIZE) and image.dtype == torch.float32
    assert mask.shape == (SIZE, SIZE) and mask.dtype == torch.int64 and set(mask.unique().tolist()) <= {0, 1}
    assert label.shape == () and label.dtype == torch.int64 and int(label) in (0, 1)
    weak, strong = SplitDataset(train / "unlabeled", "unlabeled", size=SIZE, in_channels=3)[1]
    assert weak.shape == strong.shape == (3, SIZE, SIZE) and weak.dtype == strong.dtype == torch.float32
    assert torch.isfinite(strong).all() and -3 < float(weak.min()) and float(weak.max()) < 3
    image, mask, label, name = SplitDataset(phantom_split / "test", "eval", size=SIZE)[2]
    assert isinstance(name, str) and name.endswith(".png") and mask.max() == 1
    assert torch.equal(image, preprocess(load_gray(phantom_split / "test" / "image" / name), SIZE, 1))


def test_same_seed_epoch_index_same_tensors(phantom_split):
    part = phantom_split / "train" / "4" / "unlabeled"
    a, b = SplitDataset(part, "unlabeled", size=SIZE, seed=7), SplitDataset(part, "unlabeled", size=SIZE, seed=7)
    a.set_epoch(3), b.set_epoch(3)
    assert all(torch.equal(x, y) for x, y in zip(a[5], b[5]))
    b.set_epoch(4)
    assert not torch.equal(a[5][0], b[5][0])
    loader = torch.utils.data.DataLoader(a, batch_size=4, num_workers=1)
    weak, strong = next(iter(loader))
    assert torch.equal(weak[2], a[2][0]) and torch.equal(strong[2], a[2][1])


def test_photometric_off_gives_identical_views(phantom_split):
    part = phantom_split / "train" / "4" / "unlabeled"
    data = SplitDataset(part, "unlabeled", size=SIZE, aug={"photometric": False})
    for index in range(4):
        weak, strong = data[index]
        assert torch.equal(weak, strong)


def test_strong_view_keeps_the_geometry(phantom_split):
    """With only pointwise monotone ops (brightness/contrast, gamma), strong = f(weak) with f non-decreasing:
    sorting pixels by weak value leaves strong sorted, so no pixel moved."""
    part = phantom_split / "train" / "4" / "unlabeled"
    data = SplitDataset(part, "unlabeled", size=SIZE, aug={"color_p": 1.0, "gamma_p": 1.0, "gain_p": 0.0,
                                                         "speckle_p": 0.0, "blur_p": 0.0, "contrast": 0.2})
    for index in range(4):
        weak, strong = (v.flatten().numpy() for v in data[index])
        order = np.argsort(weak, kind="stable")
        assert np.all(np.diff(strong[order]) >= -1e-5)
        assert not np.allclose(weak, strong)
    full = SplitDataset(part, "unlabeled", size=SIZE, aug={"speckle_p": 1.0, "blur_p": 1.0})
    weak, strong = (v.flatten().numpy() for v in full[0])
    shifted = SplitDataset(part, "unlabeled", size=SIZE, seed=99)[0][0].flatten().numpy()
    assert np.corrcoef(weak, strong)[0, 1] > np.corrcoef(weak, shifted)[0, 1] + 0.2


def test_labeled_mask_follows_the_image(tmp_path):
    """An image that IS its mask (white disc on black) stays equal to its mask after the random geometry."""
    part = tmp_path / "part"
    (part / "image").mkdir(parents=True)
    (part / "mask").mkdir()
    disc = np.zeros((90, 70), np.uint8)
    cv2.ellipse(disc, (40, 35), (18, 25), 0, 0, 360, 255, -1)
    cv2.imwrite(str(part / "image" / "d.png"), disc)
    cv2.imwrite(str(part / "mask" / "d.png"), disc)
    write_labeled_list(part / "labeled.txt", [("d.png", "d.png", 1)])
    data = SplitDataset(part, "labeled", size=64, aug={"rotate": 30.0, "translate": 0.15})
    for epoch in range(4):
        data.set_epoch(epoch)
        image, mask, _ = data[0]
        bright = denormalize(image)[0] > 0.5
        assert (bright != mask.bool()).float().mean() < 0.02


def test_aug_settings_are_checked():
    with pytest.raises(UserError, match="valid keys: .*speckle_p"):
        resolve_aug({"specle_p": 0.5})
    with pytest.raises(UserError, match="probability"):
        resolve_aug({"hflip": 2})
    with pytest.raises(UserError, match="range"):
        resolve_aug({"gamma": [1.5, 0.5]})
    assert resolve_aug(None) == resolve_aug({}) and set(resolve_aug({})) == set(DEFAULT_AUG)


def test_dataset_errors(phantom_split, tmp_path):
    with pytest.raises(UserError, match="mode"):
        SplitDataset(phantom_split / "test", "train")
    with pytest.raises(UserError, match="not found"):
        SplitDataset(tmp_path / "nothing", "eval")
    (tmp_path / "p").mkdir()
    write_labeled_list(tmp_path / "p" / "labeled.txt", [("gone.png", "gone.png", 0)])
    with pytest.raises(UserError, match="gone.png not found"):
        SplitDataset(tmp_path / "p", "labeled")


@pytest.mark.parametrize("mode, part", [("labeled", "train/4/labeled"), ("unlabeled", "train/4/unlabeled"),
                                        ("eval", "test")])
def test_cache_does_not_change_outputs(phantom_split, mode, part):
    cached = SplitDataset(phantom_split / part, mode, size=SIZE, seed=2)
    direct = SplitDataset(phantom_split / part, mode, size=SIZE, seed=2, cache=False)
    for index in (0, len(cached) - 1):
        for a, b in zip(cached[index], direct[index]):
            assert torch.equal(a, b) if torch.is_tensor(a) else a == b


def test_truth_is_all_or_nothing_with_a_note(phantom_split, tmp_path):
    """A pool with images that have no truth (unlabeled-only rows, --extra-unlabeled) carries none and says why;
    an empty truth.txt is read as 'no truth', not refused (issue 21). Mutations checked: treating a partial
    truth.txt as complete fails on the missing entry (KeyError); refusing an empty truth.txt fails the last part."""
    import shutil

    part = tmp_path / "unlabeled"
    shutil.copytree(phantom_split / "train" / "4" / "unlabeled", part)
    full = SplitDataset(part, "unlabeled", size=SIZE, truth=True)
    assert full.has_truth and full.truth_note is None and len(full[0]) == 4
    names = read_unlabeled_list(part / "unlabeled.txt")
    shutil.copyfile(part / "image" / names[0], part / "image" / "extra.png")
    (part / "unlabeled.txt").write_text("\n".join([*names, "extra.png"]) + "\n")
    partial = SplitDataset(part, "unlabeled", size=SIZE, truth=True)
    assert not partial.has_truth and len(partial[0]) == 2
    assert partial.truth_note == f"1 of the {len(names) + 1} unlabeled images in {part} have no truth in truth.txt " \
                                 "(unlabeled-only images)"
    (part / "truth.txt").write_text("")
    empty = SplitDataset(part, "unlabeled", size=SIZE, truth=True)
    assert not empty.has_truth and empty.truth_note.startswith(f"{len(names) + 1} of the {len(names) + 1}")
    assert SplitDataset(part, "unlabeled", size=SIZE).truth_note is None  # diagnostics not asked for
