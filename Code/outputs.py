"""The one output rule of every Hermes script that writes (README "Outputs and --force").

Folders (:func:`prepare_output_folder`): ``--out`` is either new or empty (created, with the marker file
``.hermes-output.json`` = ``{"script": "<name>"}`` written first), or an earlier output of the *same* script —
recognised by that marker, or for folders written before markers existed by the script's own unambiguous layout
(:data:`LEGACY`). Such a folder is refused without ``--force`` ("add --force to replace it") and deleted **as a
whole** and written afresh with it. Anything else is refused even with ``--force``, with what was found and why:

- a folder without this script's marker (no marker, another script's marker: the user's files, a git clone, …);
- a folder that is or contains an input of the command, the repository, the current working directory or the
  user's home, or that lies inside an input folder.

The trainers' run folders use the same check (:func:`check_replaceable`) with their own ownership test
(``config.yaml`` of a run, Code/engine/run_folder.py), since ``config.yaml`` is their marker.

Files (:func:`prepare_output_file`): never the same file as an input, nor inside an input folder; an existing file
is replaced only with ``--force`` and only if it is of the kind the script writes (e.g. an exported model, never a
training checkpoint); :func:`write_atomically` then replaces it in one rename.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterable, List, Optional, Tuple, Union

from Code.errors import UserError

MARKER = ".hermes-output.json"
REPO_ROOT = Path(__file__).resolve().parents[1]
FORCE_HELP = "replace this script's own earlier output at --out, as a whole (README: Outputs and --force)"
PathLike = Union[str, Path]
Inputs = Iterable[Tuple[Optional[PathLike], str]]  # (path, how the user named it, e.g. "--root data/raw")


# ------------------------------------------------------------------------------------------ markers and legacy
def read_marker(folder: Path) -> Optional[str]:
    """The script named by ``folder``'s marker file, else None."""
    try:
        record = json.loads((Path(folder) / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return record.get("script") if isinstance(record, dict) and isinstance(record.get("script"), str) else None


def write_marker(folder: Path, script: str) -> None:
    (Path(folder) / MARKER).write_text(json.dumps({"hermes_output": 1, "script": script}) + "\n")


def _only(folder: Path, allowed: Iterable[str]) -> bool:
    """``folder`` holds nothing but entries named in ``allowed`` (and the marker)."""
    names = set(allowed) | {MARKER}
    return all(entry.name in names for entry in folder.iterdir())


def _json(path: Path) -> dict:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _first_line(path: Path) -> str:
    try:
        with path.open(errors="replace") as handle:
            return handle.readline()
    except OSError:
        return ""


def _legacy_split(folder: Path) -> bool:
    return (_only(folder, ("split.json", "test", "val", "train"))
            and str(_json(folder / "split.json").get("format", "")).startswith("hermes-split"))


def _legacy_phantom(folder: Path) -> bool:
    if not _only(folder, ("phantom.json", "benign", "malignant")):
        return False
    if "generator" in _json(folder / "phantom.json"):
        return True
    files = [p for p in folder.rglob("*") if p.is_file() and p.name != MARKER]  # an interrupted generation
    return bool(files) and all(p.match("*/image/PH-*.png") or p.match("*/mask/PH-*.png") for p in files)


EVALUATE_ARTEFACTS = ("metrics.json", "per_image.csv", "overlays", "entropy", "confusion_matrix.png", "roc.png",
                      "reliability.png", "risk_coverage.png", "risk_coverage.csv", "review.md")


def _legacy_evaluate(folder: Path) -> bool:
    record = _json(folder / "metrics.json")
    return _only(folder, EVALUATE_ARTEFACTS) and "checkpoint" in record and "n_images" in record


def _legacy_predict(folder: Path) -> bool:
    return (_only(folder, ("predictions.csv", "masks", "overlays", "entropy"))
            and _first_line(folder / "predictions.csv").startswith("file,pred_class"))


# what each script wrote before markers existed (README "Outputs and --force")
LEGACY = {"data_split.py": _legacy_split, "make_phantom.py": _legacy_phantom, "evaluate.py": _legacy_evaluate,
          "predict.py": _legacy_predict}


# ------------------------------------------------------------------------------------------ protected places
def _places(inputs: Inputs) -> List[Tuple[Path, str, bool]]:
    """(resolved path, description, is an input) of everything ``--force`` must never delete."""
    places = [(Path(p).resolve(), f"{label} (an input of this command)", True) for p, label in inputs if p]
    places.append((REPO_ROOT, f"the repository {REPO_ROOT}", False))
    places.append((Path.cwd().resolve(), "the current working directory", False))
    places.append((Path.home().resolve(), "your home folder", False))
    return places


def refuse_protected(out: Path, inputs: Inputs) -> None:
    """UserError when the folder ``out`` is or contains an input, the repository, the working directory or the
    home folder, or lies inside an input folder: such a folder is never deleted, not even with ``--force``."""
    target = Path(out).resolve()
    for path, what, is_input in _places(inputs):
        if path == target:
            relation = "is"
        elif target in path.parents:
            relation = "contains"
        elif is_input and path in target.parents:
            relation = "is inside"
        else:
            continue
        raise UserError(f"--out {out} {relation} {what}, so it is never replaced (not even with --force); "
                        "choose another --out")


def _found(folder: Path, limit: int = 4) -> str:
    names = sorted(e.name + ("/" if e.is_dir() else "") for e in folder.iterdir())
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def check_replaceable(out: Path, script: str, inputs: Inputs = (), owned: Optional[bool] = None,
                      own_kind: Optional[str] = None) -> None:
    """UserError unless ``--force`` may delete the existing, non-empty folder ``out`` as a whole: it is not
    protected (:func:`refuse_protected`) and it is this script's own output (``owned``, default: its marker or
    its legacy layout). ``own_kind`` names what the script recognises, for the message."""
    out = Path(out)
    refuse_protected(out, inputs)
    if out.is_symlink():
        raise UserError(f"--out {out} is a symbolic link; {script} never replaces it: choose another --out")
    owner = read_marker(out)
    if owned is None:
        legacy = LEGACY.get(script)
        owned = owner == script or (owner is None and legacy is not None and legacy(out))
    if owned:
        return
    if owner is not None and owner != script:
        raise UserError(f"--out {out} holds the output of {owner} (its {MARKER}); {script} never replaces it, not "
                        "even with --force: choose another --out")
    kind = own_kind or f"an output of {script} (no {MARKER})"
    raise UserError(f"--out {out} is not empty and is not {kind}; found: {_found(out)}. {script} writes only into "
                    "a new or empty folder, and --force replaces only its own earlier output: choose another --out")


# ------------------------------------------------------------------------------------------ the two entry points
def prepare_output_folder(out: PathLike, script: str, force: bool, inputs: Inputs = ()) -> Path:
    """Create ``out`` for ``script`` (new or empty), or replace it as a whole when it is this script's earlier
    output and ``force``; refuse everything else (module docstring). Returns ``out`` with its marker written."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a folder; choose another --out")
    entries = [e.name for e in out.iterdir()] if out.is_dir() else []
    if entries and not (entries == [MARKER] and read_marker(out) == script):
        check_replaceable(out, script, inputs)
        if not force:
            raise UserError(f"--out {out} is not empty: it holds an earlier output of {script}; add --force to "
                            "replace it, or choose another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    write_marker(out, script)
    return out


def prepare_output_file(path: PathLike, script: str, force: bool, inputs: Inputs = (),
                        kind: Optional[Callable[[Path], bool]] = None, kind_name: str = "a file it writes",
                        flag: str = "--out", alternative: Optional[str] = None) -> Path:
    """Check the output file ``path``: not an input (nor inside an input folder); an existing file only with
    ``force`` and only when ``kind(path)`` says it is of the kind ``script`` writes. Write it with
    :func:`write_atomically`."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{flag} {path} is a folder; name the file to write")
    target = path.resolve()
    for given, label in inputs:
        if not given:
            continue
        source = Path(given).resolve()
        same = source == target or (path.exists() and source.exists() and os.path.samefile(source, path))
        if same or (source.is_dir() and source in target.parents):
            raise UserError(f"{flag} {path} {'is' if same else 'is inside'} {label}, an input of this command; "
                            f"{script} never writes over its inputs: choose another {flag}")
    if path.exists() or path.is_symlink():
        if kind is not None and not (path.is_file() and kind(path)):
            raise UserError(f"{flag} {path} exists and is not {kind_name}, the kind of file {script} writes; it is "
                            f"never replaced, not even with --force: choose another {flag}")
        if not force:
            raise UserError(f"{flag} {path} exists (add --force to replace it, or "
                            f"{alternative or f'choose another {flag}'})")
    return path


def write_atomically(path: PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file in ``path``'s folder (same suffix, so writers that infer the format
    from it work), then rename it onto ``path``; the file gets the mode of the user's umask."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def matplotlib_file(path: Path) -> bool:
    """A figure saved by matplotlib (PNG, PDF or SVG: its name in the first 8 KB)."""
    with Path(path).open("rb") as handle:
        return b"matplotlib" in handle.read(8192).lower()


def text_file_starting(prefix: str) -> Callable[[Path], bool]:
    """A kind test: a text file whose first line starts with ``prefix``."""
    return lambda path: _first_line(Path(path)).startswith(prefix)
