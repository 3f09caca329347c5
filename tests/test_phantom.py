"""Built-in phantom: layout, determinism, case/frame naming, refusal of a non-empty --out, basic B-mode physics."""
from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from Code.DataProcess.make_phantom import generate_phantom, plan_cases
from Code.errors import UserError

NAME = re.compile(r"^PH-(\d{4})-(\d)\.png$")


def _tree_bytes(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_and_formats(phantom_raw, tiny_phantom_args):
    tiny = tiny_phantom_args
    size = tiny["size"]
    for cls, count in (("benign", tiny["n_benign"]), ("malignant", tiny["n_malignant"])):
        images = sorted((phantom_raw / cls / "image").iterdir())
        masks = sorted((phantom_raw / cls / "mask").iterdir())
        assert len(images) == count and [p.name for p in images] == [p.name for p in masks]
        for image_path, mask_path in zip(images, masks):
            assert NAME.match(image_path.name), image_path.name
            image = cv2.imread(str(image_path), cv2.IMREAD_UNCHANGED)
            mask = cv2.imread(str(mask_path), cv2.IMREAD_UNCHANGED)
            assert image.dtype == np.uint8 and image.shape == (size, size)
            assert mask.dtype == np.uint8 and mask.shape == (size, size)
            assert set(np.unique(mask)) == {0, 255}, mask_path  # exactly one non-empty lesion
    record = json.loads((phantom_raw / "phantom.json").read_text())
    assert record["seed"] == tiny["seed"] and record["size"] == size


def test_cases_have_several_frames_and_unique_ids(phantom_raw):
    cases = {}
    for cls in ("benign", "malignant"):
        for path in (phantom_raw / cls / "image").iterdir():
            case, _ = NAME.match(path.name).groups()
            cases.setdefault(case, set()).add(cls)
    assert all(len(classes) == 1 for classes in cases.values()), "a case id appears in both classes"
    frames = plan_cases(24, 24, seed=3)
    assert sum(n for _, _, n in frames) == 48 and max(n for _, _, n in frames) >= 2
    assert len({case_id for case_id, _, _ in frames}) == len(frames)


def test_same_arguments_give_identical_bytes(tmp_path):
    args = dict(n_benign=5, n_malignant=4, size=48, seed=11)
    generate_phantom(tmp_path / "a", **args)
    generate_phantom(tmp_path / "b", **args)
    assert _tree_bytes(tmp_path / "a") == _tree_bytes(tmp_path / "b")
    generate_phantom(tmp_path / "c", **dict(args, seed=12))
    assert _tree_bytes(tmp_path / "a") != _tree_bytes(tmp_path / "c")


def test_frames_of_a_case_share_the_lesion_but_not_the_speckle(phantom_raw):
    by_case = {}
    for path in sorted((phantom_raw / "benign" / "image").iterdir()):
        by_case.setdefault(NAME.match(path.name).group(1), []).append(path)
    first, second = next(paths for paths in by_case.values() if len(paths) >= 2)[:2]
    mask_a = cv2.imread(str(first.parent.parent / "mask" / first.name), 0) > 0
    mask_b = cv2.imread(str(second.parent.parent / "mask" / second.name), 0) > 0
    overlap = (mask_a & mask_b).sum() / max((mask_a | mask_b).sum(), 1)
    assert overlap > 0.2, "frames of one case should image the same lesion"
    assert not np.array_equal(cv2.imread(str(first), 0), cv2.imread(str(second), 0))


def test_lesions_are_hypoechoic_on_average(phantom_raw):
    inside, around = [], []
    for cls in ("benign", "malignant"):
        for path in sorted((phantom_raw / cls / "image").iterdir()):
            image = cv2.imread(str(path), 0).astype(np.float64)
            mask = cv2.imread(str(phantom_raw / cls / "mask" / path.name), 0) > 0
            ring = cv2.dilate(mask.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool) & ~mask
            inside.append(image[mask].mean())
            around.append(image[ring].mean())
    assert np.mean(inside) < np.mean(around) - 5


def test_force_replaces_only_its_own_output(tmp_path, run_script, run_main, assert_one_line_error):
    """The output rule (Code/outputs.py). Mutation checked: --force deleting any non-empty folder (the old rule)
    lets keep.txt go."""
    from Code.DataProcess import make_phantom

    args = ["--n-benign", 2, "--n-malignant", 2, "--size", 32]
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("x")
    for extra in ([], ["--force"]):
        assert_one_line_error(run_main(make_phantom.main, "--out", mine, *args, *extra), "not an output of",
                              "found: keep.txt")
    assert [p.name for p in mine.iterdir()] == ["keep.txt"]
    out = tmp_path / "raw"
    assert run_main(make_phantom.main, "--out", out, *args).returncode == 0
    (out / "benign" / "image" / "stale.png").write_bytes(b"old")
    assert_one_line_error(run_main(make_phantom.main, "--out", out, *args), "not empty", "add --force")
    result = run_script("Code/DataProcess/make_phantom.py", "--out", out, *args, "--force")
    assert result.returncode == 0, result.stderr
    assert "images/s" in result.stdout
    images = list((out / "benign" / "image").iterdir())
    assert len(images) == 2 and "stale.png" not in [p.name for p in images]


def test_bad_arguments_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="--size"):
        generate_phantom(tmp_path / "x", n_benign=1, n_malignant=1, size=8)
    with pytest.raises(UserError, match="n-benign"):
        generate_phantom(tmp_path / "y", n_benign=0, n_malignant=0)


def test_malignant_share_makes_an_imbalanced_variant(tmp_path):
    """--malignant-share 0.25 with 6 benign gives 2 malignant (3:1). Mutation checked: share read as a ratio."""
    import json as _json

    from Code.DataProcess.make_phantom import main as phantom_main
    from Code.errors import UserError

    assert phantom_main(["--out", str(tmp_path / "p"), "--n-benign", "6", "--malignant-share", "0.25",
                         "--size", "32"]) == 0
    record = _json.loads((tmp_path / "p" / "phantom.json").read_text())
    assert (record["n_benign"], record["n_malignant"]) == (6, 2)
    with pytest.raises(UserError, match="malignant-share"):
        phantom_main(["--out", str(tmp_path / "q"), "--malignant-share", "1.5"])
