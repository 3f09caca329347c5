"""The one output rule (Code/outputs.py): the data-loss cases of issue #21 for data_split.py, and the rule itself.

Each data_split case ran ``--force`` against a folder the old rule deleted; each now ends in a one-line refusal
that says what was found, and the folder is left as it was. Mutations checked: see each test's docstring.
"""
import csv
import json
import shutil
from pathlib import Path

import pytest

from Code.DataProcess import data_split
from Code.errors import UserError
from Code.outputs import (MARKER, prepare_output_file, prepare_output_folder, read_marker, text_file_starting,
                          write_atomically)

ARGS = ["--dataset", "sztus", "--labels", 4, "--val-ratio", 0.25, "--seed", 0]


def _snapshot(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def raw(phantom_raw, tmp_path) -> Path:
    """A private copy of the phantom raw folder: a broken guard must not delete the session's data."""
    return Path(shutil.copytree(phantom_raw, tmp_path / "raw"))


def _split(run_main, raw, out, *extra):
    return run_main(data_split.main, *ARGS, "--root", raw, "--out", out, *extra)


def test_split_force_refuses_the_image_folder_inside_root(raw, run_main, assert_one_line_error):
    """Issue #21: --out = the source image folder inside --root was deleted (then the split failed on the missing
    images). Mutation checked: refuse_protected without the "is inside an input" case no longer names --root (the
    folder is then still refused, as one data_split.py did not write)."""
    images = raw / "benign" / "image"
    before = _snapshot(images)
    assert_one_line_error(_split(run_main, raw, images, "--force"), "is inside --root", "not even with --force")
    assert _snapshot(images) == before


def test_split_force_refuses_the_folder_holding_the_csv(raw, tmp_path, run_main, assert_one_line_error):
    """Issue #21: the folder holding the input CSV was deleted (exit 0)."""
    lists = tmp_path / "lists"
    lists.mkdir()
    rows = [(p.relative_to(raw).as_posix(), (p.parent.parent / "mask" / p.name).relative_to(raw).as_posix(),
             p.parent.parent.name) for p in sorted(raw.glob("*/image/*.png"))]
    with (lists / "list.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([("image", "mask", "label"), *rows])
    (lists / "notes.txt").write_text("mine")
    before = _snapshot(lists)
    result = run_main(data_split.main, "--dataset", "csv", "--root", raw, "--csv", lists / "list.csv", "--labels", 4,
                      "--out", lists, "--force")
    assert_one_line_error(result, "contains --csv", "an input of this command")
    assert _snapshot(lists) == before


def test_split_force_refuses_the_extra_unlabeled_folder(raw, tmp_path, run_main, assert_one_line_error):
    """Issue #21: the --extra-unlabeled folder was deleted."""
    extra = tmp_path / "extra"
    extra.mkdir()
    shutil.copyfile(next(raw.glob("benign/mask/*.png")), extra / "scan1.png")
    before = _snapshot(extra)
    assert_one_line_error(_split(run_main, raw, extra, "--extra-unlabeled", extra, "--force"),
                          "is --extra-unlabeled")
    assert _snapshot(extra) == before


def test_split_force_refuses_folders_it_did_not_write(raw, tmp_path, run_main, assert_one_line_error, monkeypatch):
    """Issue #21: a folder holding two splits and a user file, a git clone and ``--out .`` were deleted (exit 0).
    Mutation checked: check_replaceable treating every folder as owned deletes all three."""
    splits = tmp_path / "splits"
    for name in ("a", "b"):
        assert _split(run_main, raw, splits / name).returncode == 0
    (splits / "notes.txt").write_text("mine")
    clone = tmp_path / "clone"
    (clone / ".git").mkdir(parents=True)
    (clone / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (clone / "README.md").write_text("a project")
    work = tmp_path / "work"
    work.mkdir()
    (work / "thesis.tex").write_text("mine")
    for folder, found in ((splits, "found: a/, b/, notes.txt"), (clone, "found: .git/, README.md")):
        before = _snapshot(folder)
        for extra in ([], ["--force"]):
            assert_one_line_error(_split(run_main, raw, folder, *extra), "is not an output of data_split.py",
                                  found, "choose another --out")
        assert _snapshot(folder) == before
    monkeypatch.chdir(work)
    assert_one_line_error(_split(run_main, raw, ".", "--force"), "is the current working directory")
    assert _snapshot(work) == {"thesis.tex": b"mine"}


def test_split_force_replaces_its_own_split_as_a_whole(raw, tmp_path, run_main, assert_one_line_error):
    """Its own earlier split (marker) is replaced as a whole; one of another script (the phantom) is not; a split
    written before markers existed (no marker, a split's layout) is still replaceable."""
    out = tmp_path / "split"
    assert _split(run_main, raw, out).returncode == 0
    assert read_marker(out) == "data_split.py"
    (out / "test" / "stale.png").write_bytes(b"old")
    assert_one_line_error(_split(run_main, raw, out), "holds an earlier output of data_split.py", "add --force")
    assert _split(run_main, raw, out, "--force").returncode == 0 and not (out / "test" / "stale.png").exists()
    (out / MARKER).unlink()  # as written before markers existed
    assert _split(run_main, raw, out, "--force").returncode == 0 and read_marker(out) == "data_split.py"
    phantom = tmp_path / "phantom"
    shutil.copytree(raw, phantom)
    (phantom / MARKER).write_text(json.dumps({"script": "make_phantom.py"}))
    assert_one_line_error(_split(run_main, raw, phantom, "--force"), "holds the output of make_phantom.py")


def test_folder_rule(tmp_path):
    """The rule itself: empty → marker; a folder with only its own marker counts as empty; the repository is never
    replaced. Mutation checked: dropping the repository from the protected places lets it through."""
    out = prepare_output_folder(tmp_path / "new" / "out", "demo.py", force=False)
    assert read_marker(out) == "demo.py" and [p.name for p in out.iterdir()] == [MARKER]
    assert prepare_output_folder(out, "demo.py", force=False) == out  # nothing but its marker: still empty
    (out / "result.txt").write_text("1")
    with pytest.raises(UserError, match="add --force"):
        prepare_output_folder(out, "demo.py", force=False)
    with pytest.raises(UserError, match="holds the output of demo.py"):
        prepare_output_folder(out, "other.py", force=True)
    prepare_output_folder(out, "demo.py", force=True)
    assert [p.name for p in out.iterdir()] == [MARKER]
    repo = Path(__file__).resolve().parents[1]
    with pytest.raises(UserError, match="the repository"):
        prepare_output_folder(repo, "demo.py", force=True, inputs=[])
    with pytest.raises(UserError, match="is not a folder"):
        prepare_output_folder(out / MARKER, "demo.py", force=True)


def test_file_rule(tmp_path):
    """A file output: never an input (same path, hard link, inside an input folder); an existing one only with
    --force and only of the script's kind; written atomically. Mutation checked: the kind test skipped replaces
    a file the script never wrote."""
    source = tmp_path / "data" / "in.txt"
    source.parent.mkdir()
    source.write_text("input")
    (tmp_path / "link.txt").hardlink_to(source)
    kind = text_file_starting("# Report")
    for path, message in ((source, "is --in"), (tmp_path / "link.txt", "is --in"),
                          (source.parent / "new.txt", "is inside --data")):
        with pytest.raises(UserError, match=message):
            prepare_output_file(path, "demo.py", True, [(source, "--in"), (source.parent, "--data")], kind)
    out = tmp_path / "report.md"
    assert prepare_output_file(out, "demo.py", False, [], kind) == out  # new: fine
    out.write_text("my notes")
    with pytest.raises(UserError, match="never replaced, not even with --force"):
        prepare_output_file(out, "demo.py", True, [], kind, "a report of demo.py")
    out.write_text("# Report\n")
    with pytest.raises(UserError, match="add --force"):
        prepare_output_file(out, "demo.py", False, [], kind)
    prepare_output_file(out, "demo.py", True, [], kind)
    with pytest.raises(RuntimeError):
        write_atomically(out, lambda tmp: (tmp.write_text("half"), (_ for _ in ()).throw(RuntimeError("disk"))))
    assert out.read_text() == "# Report\n" and sorted(p.name for p in tmp_path.iterdir()) == \
        ["data", "link.txt", "report.md"]
    write_atomically(out, lambda tmp: tmp.write_text("# Report\nnew\n"))
    assert out.read_text() == "# Report\nnew\n"
