"""The data the trainers use when no data set is given: the built-in phantom, generated and split on first use.

    split_dir = ensure_phantom_split()          # data_cache/phantom_split (relative to the working directory)
    labeled = split_dir / "train" / str(DEFAULT_LABELS) / "labeled"

The phantom (DEFAULT_PHANTOM: 300 benign + 300 malignant images in ~220 cases, 256×256, seed 0) goes to
``<cache_dir>/phantom_raw``, its split (seed 0, test ratio 0.3, val ratio 0.1 → ~360 train images) to
``<cache_dir>/phantom_split`` with budgets LABEL_BUDGETS: 42 (~12 % of train, DEFAULT_LABELS), 104 (~29 %) and
340 (all but ~20). Both steps finish with a marker file (``phantom.json``, ``split.json``); a folder whose marker
is missing or records other settings (or another generator version) is regenerated. A file lock keeps concurrent callers from racing.
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path

from Code.DataProcess.make_phantom import DEFAULT_PHANTOM, GENERATOR, generate_phantom
from Code.DataProcess.splitting import split_dataset

DEFAULT_LABELS = 42
LABEL_BUDGETS = (42, 104, 340)
SPLIT_SEED = 0
TEST_RATIO = 0.3
VAL_RATIO = 0.1


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def _locked(lock_path: Path):
    """Exclusive lock on `lock_path` (POSIX flock; a no-op where fcntl is missing)."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        try:
            import fcntl
        except ImportError:  # Windows: no concurrent-run protection
            yield
            return
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _raw_is_current(raw: Path) -> bool:
    record = _read_json(raw / "phantom.json")
    return bool(record) and record.get("generator") == GENERATOR and all(
        record.get(k) == v for k, v in DEFAULT_PHANTOM.items())


def _split_is_current(split: Path, raw: Path) -> bool:
    record = _read_json(split / "split.json")
    if not record:
        return False
    args = record.get("arguments", {})
    return (args.get("root") == str(raw) and args.get("labels") == sorted(LABEL_BUDGETS)
            and args.get("seed") == SPLIT_SEED and args.get("test_ratio") == TEST_RATIO
            and args.get("val_ratio") == VAL_RATIO)


def ensure_phantom_split(cache_dir="data_cache") -> Path:
    """Return ``<cache_dir>/phantom_split``, generating the phantom and its split first if missing or stale."""
    cache = Path(cache_dir)
    raw, split = cache / "phantom_raw", cache / "phantom_split"
    with _locked(cache / ".phantom.lock"):
        raw_fresh = False
        if not _raw_is_current(raw):
            generate_phantom(raw, force=True, **DEFAULT_PHANTOM)
            raw_fresh = True
        if raw_fresh or not _split_is_current(split, raw):
            split_dataset("sztus", raw, split, list(LABEL_BUDGETS), seed=SPLIT_SEED, test_ratio=TEST_RATIO,
                          val_ratio=VAL_RATIO, force=True)
    return split
