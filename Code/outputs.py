"""Output folders that never overwrite what a user made without ``--force``."""
from __future__ import annotations

import shutil
from pathlib import Path

from Code.errors import UserError


def prepare_output_folder(out: Path, force: bool, replace: bool = True) -> Path:
    """Create ``out``. An existing non-empty folder is refused unless ``force``; with ``force`` it is deleted first
    (``replace=True``, for outputs that must not mix with older files) or written into (``replace=False``)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"output path {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise UserError(f"output folder {out} is not empty (add --force to replace it, or choose another --out)")
        if replace:
            shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return out
