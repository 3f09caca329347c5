"""data_split.py --add-labels (issue #24): a new budget train/<N+k>/ from an annotation round — the round trip
(earlier budgets, test and val byte-identical, the pool reduced, split.json's round), its refusals, and (slow) the
trainer and suggest.py on the new budget. Each test works on a copy of the session's phantom split."""
import csv
import hashlib
import json
import shutil

import cv2
import numpy as np
import pytest

from helpers import load_script

data_split = load_script("DataProcess.data_split")


def _tree(folder):
    """{relative path: sha256} of every file below ``folder``."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def split(phantom_split, tmp_path):
    copy = tmp_path / "split"
    shutil.copytree(phantom_split, copy)
    return copy


def _truth(split, labels=4):
    lines = (split / "train" / str(labels) / "unlabeled" / "truth.txt").read_text().split("\n")
    return [line.split() for line in lines if line]


def _write_csv(path, rows):
    """rows: (image, mask, label); the masks are copied next to the CSV (relative paths)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["rank", "image", "mask", "label"])
        writer.writerows([(i, *row) for i, row in enumerate(rows, start=1)])
    return path


def _round(split, tmp_path, count=4, relabel=None):
    """A CSV adding the first ``count`` pool images with their truth masks (copied under masks/) and labels."""
    rows = []
    (tmp_path / "ann" / "masks").mkdir(parents=True, exist_ok=True)
    for image, mask, label in _truth(split)[:count]:
        shutil.copyfile(split / "train/4/unlabeled/mask" / mask, tmp_path / "ann" / "masks" / mask)
        rows.append((image, f"masks/{mask}", relabel or ("benign", "malignant")[int(label)]))
    return _write_csv(tmp_path / "ann" / "round.csv", rows)


def _add(run_main, split, csv_file, *extra, labels="4"):
    return run_main(data_split.main, "--add-labels", csv_file, "--out", split, "--labels", labels, *extra)


def test_round_trip(run_main, split, tmp_path):
    before, record_before = _tree(split), json.loads((split / "split.json").read_text())
    csv_file = _round(split, tmp_path)
    added = [row[0] for row in _truth(split)[:4]]
    result = _add(run_main, split, csv_file)
    assert result.returncode == 0, result.stderr
    after = _tree(split)
    assert {k: v for k, v in after.items() if not k.startswith("train/8/") and k != "split.json"} == \
        {k: v for k, v in before.items() if k != "split.json"}
    labeled = (split / "train/8/labeled/labeled.txt").read_text().split("\n")
    old = (split / "train/4/labeled/labeled.txt").read_text().split("\n")
    assert {line.split()[0] for line in labeled if line} == {line.split()[0] for line in old if line} | set(added)
    pool = (split / "train/8/unlabeled/unlabeled.txt").read_text().split()
    assert pool == [n for n in (split / "train/4/unlabeled/unlabeled.txt").read_text().split() if n not in added]
    assert sorted(p.name for p in (split / "train/8/unlabeled/image").iterdir()) == sorted(pool)
    for name in added:  # bytes of the pool image; the annotator's mask as 0/255
        assert (split / "train/8/labeled/image" / name).read_bytes() == (split / "train/4/unlabeled/image" /
                                                                       name).read_bytes()
        mask = cv2.imread(str(split / "train/8/labeled/mask" / name), cv2.IMREAD_GRAYSCALE)
        truth = cv2.imread(str(split / "train/4/unlabeled/mask" / name), cv2.IMREAD_GRAYSCALE)
        assert np.array_equal(mask > 0, truth > 0) and set(np.unique(mask)) <= {0, 255}
    record = json.loads((split / "split.json").read_text())
    assert record["rounds"] == [{"budget": 8, "from": 4, "csv": str(csv_file), "added": [
        {"image": row[0], "label": int(row[2]), "mask": f"masks/{row[1]}"} for row in _truth(split)[:4]]}]
    assert record["counts"]["train/8/labeled"]["total"] == 8 and record["counts"]["train/8/unlabeled"]["total"] == 14
    assert {k: v for k, v in record.items() if k not in ("rounds", "counts")} == \
        {k: v for k, v in record_before.items() if k != "counts"}
    assert all(record["counts"][k] == v for k, v in record_before["counts"].items())


def test_refusals(run_main, assert_one_line_error, split, tmp_path):
    before = _tree(split)
    pool, test_name = _truth(split), (split / "test/labeled.txt").read_text().split()[0]
    labeled_name = (split / "train/4/labeled/labeled.txt").read_text().split()[0]
    (tmp_path / "m").mkdir()
    good = tmp_path / "m" / "good.png"
    cv2.imwrite(str(good), cv2.imread(str(split / "train/4/unlabeled/mask" / pool[0][1]), cv2.IMREAD_GRAYSCALE))
    cv2.imwrite(str(tmp_path / "m" / "small.png"), np.zeros((8, 8), np.uint8))
    cases = [([(test_name, "good.png", 0)], ("is in test",)),
             ([(labeled_name, "good.png", 0)], ("already labeled",)),
             ([("PH-9999-1.png", "good.png", 0)], ("not in the unlabeled pool",)),
             ([(pool[0][0], "good.png", 0), (pool[0][0], "good.png", 0)], ("listed twice", "line 3")),
             ([(pool[0][0], "good.png", "cancer")], ("unknown label 'cancer'",)),
             ([(pool[0][0], "gone.png", 1)], ("gone.png not found",)),
             ([(pool[0][0], "small.png", 1)], ("8x8",))]
    for rows, fragments in cases:
        assert_one_line_error(_add(run_main, split, _write_csv(tmp_path / "m" / "r.csv", rows)), *fragments)
    csv_file = _write_csv(tmp_path / "m" / "r.csv", [(pool[0][0], "good.png", 1)])
    assert_one_line_error(_add(run_main, split, csv_file, labels="6"), "no budget train/6/")
    assert_one_line_error(_add(run_main, split, csv_file, "--dataset", "sztus"), "--dataset", "does not apply")
    assert_one_line_error(run_main(data_split.main, "--add-labels", csv_file, "--out", split, "--labels", 4, 10),
                          "one source budget")
    assert_one_line_error(run_main(data_split.main, "--out", split, "--labels", 4), "needs --dataset and --root")
    assert _tree(split) == before  # nothing written by a refused round
    six = _write_csv(tmp_path / "m" / "six.csv", [(row[0], "good.png", 0) for row in pool[:6]])
    assert_one_line_error(_add(run_main, split, six, "--force"), "train/10 exists", "not written by --add-labels")
    assert _tree(split) == before


def test_an_earlier_round_is_replaced_only_with_force(run_main, assert_one_line_error, split, tmp_path):
    csv_file = _round(split, tmp_path)
    assert _add(run_main, split, csv_file).returncode == 0
    first = _tree(split)
    assert_one_line_error(_add(run_main, split, csv_file), "add --force")
    assert _tree(split) == first
    relabeled = _round(split, tmp_path, relabel="malignant")
    assert _add(run_main, split, relabeled, "--force").returncode == 0
    labels = [line.split()[2] for line in (split / "train/8/labeled/labeled.txt").read_text().split("\n") if line]
    assert labels.count("1") == 2 + 4  # the 2 malignant of budget 4 and the 4 relabeled images
    record = json.loads((split / "split.json").read_text())
    assert [r["budget"] for r in record["rounds"]] == [8] and {a["label"] for a in record["rounds"][0]["added"]} == {1}
    def unchanged(tree):
        return {k: v for k, v in tree.items() if not k.startswith("train/8/") and k != "split.json"}
    assert unchanged(_tree(split)) == unchanged(first)


@pytest.mark.slow
def test_trainer_and_suggest_run_on_the_new_budget(run_main, split, tmp_path):
    """The full loop on the phantom: a round → seg_train.py --labels 8 (2 iterations) → suggest.py --labels 8."""
    from Code.engine.cli import main as train_main
    from helpers import SMOKE_CONFIG

    assert _add(run_main, split, _round(split, tmp_path)).returncode == 0
    run = tmp_path / "run"
    trained = run_main(lambda argv: train_main(argv, task="seg"), "--config", SMOKE_CONFIG, "--data", split,
                       "--labels", "8", "--out", run, "--set", "train.iters=2", "eval.every=2")
    assert trained.returncode == 0, trained.stderr[-2000:]
    suggest = load_script("suggest")
    result = run_main(suggest.main, "--checkpoint", run / "checkpoints" / "best.pt", "--data", split, "--labels", 8,
                      "--k", 2, "--out", tmp_path / "s", "--device", "cpu")
    assert result.returncode == 0, result.stderr
