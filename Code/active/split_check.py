"""Refuse a checkpoint that was not trained on ``--data``'s budget ``--labels N``.

A checkpoint's config names its split (``data.split``; null = the built-in phantom, ``data_cache/phantom_split``)
and its budget (``data.labels``). It belongs to ``--data``/``--labels N`` when its budget is N and its split's
``train/N/labeled/labeled.txt`` and ``test/labeled.txt`` hold exactly the same lines as ``--data``'s (the same
folder, or a copy of it): a checkpoint of another split, another draw or another budget is refused with one line,
since its "unlabeled" pool is not this one (it may have trained on these images, or never seen this labeled set).
A checkpoint whose split folder cannot be found (relative to the working folder or the repository) is refused
too: the match cannot be checked.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

from Code.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SPLIT = "data_cache/phantom_split"  # where engine/data.py makes the built-in phantom's split


def checkpoint_split(config: Dict[str, Any]) -> Optional[Path]:
    """The split folder of a checkpoint's config, looked up as given, then under the working folder and the
    repository; None when it is not found."""
    given = (config.get("data") or {}).get("split") or DEFAULT_SPLIT
    candidates = [Path(given)] if Path(given).is_absolute() else [Path.cwd() / given, ROOT / given]
    return next((c for c in candidates if (c / "train").is_dir()), None)


def _lines(path: Path) -> Optional[list]:
    try:
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError):
        return None


def check_checkpoint_split(config: Dict[str, Any], checkpoint: Path, data: Path, labels: int) -> None:
    """UserError unless the checkpoint of ``config`` was trained on ``data``/train/``labels`` (module docstring)."""
    from Code.DataProcess.default_data import DEFAULT_LABELS

    given = (config.get("data") or {}).get("split")
    trained = (config.get("data") or {}).get("labels")
    trained = DEFAULT_LABELS if trained is None and given is None else trained
    if trained is not None and int(trained) != labels:
        raise UserError(f"{checkpoint} was trained on label budget {trained} (its config data.labels), not on "
                        f"--labels {labels}: use that budget's checkpoint, or --labels {trained}")
    split = checkpoint_split(config)
    if split is None:
        raise UserError(f"{checkpoint} was trained on the split {given or DEFAULT_SPLIT} (its config data.split), "
                        f"which is not found, so it cannot be checked against --data {data}")
    for rel in (Path("train") / str(labels) / "labeled" / "labeled.txt", Path("test") / "labeled.txt"):
        ours, theirs = _lines(data / rel), _lines(split / rel)
        if ours is None or theirs != ours:
            raise UserError(f"{checkpoint} was trained on another split: {split / rel} (its config data.split "
                            f"{given or DEFAULT_SPLIT}) differs from {data / rel}; use a checkpoint trained on "
                            f"--data {data} --labels {labels}")
