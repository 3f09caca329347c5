"""Atomically written files (checkpoints, calibration files, exported models) get the mode the user's umask gives
any new file, not mkstemp's 0600 (issue #21)."""
import os
import stat

import pytest
import torch

from Code.inference.calibration import save_calibration
from Code.common.checkpoint import save_checkpoint
from Code.inference.export_graph import _atomic
from Code.common.file_mode import current_umask, user_file_mode


def _write_checkpoint(path):
    save_checkpoint(path, {"model": {"w": torch.zeros(2)}, "config": {}, "step": 1})


def _write_calibration(path):
    save_calibration(path, {"temperature": 1.5, "review_thresholds": None})


def _write_export(path):
    _atomic(path, lambda tmp: tmp.write_bytes(b"exported model"))


@pytest.fixture(params=[0o027, 0o002])
def umask(request):
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


@pytest.mark.parametrize("write", [_write_checkpoint, _write_calibration, _write_export])
def test_atomic_writes_follow_the_umask(tmp_path, umask, write):
    """0640 under umask 027, 0664 under 002; replacing an existing file gives it that mode too, and no temporary
    file is left. Mutations checked: dropping the chmod of save_checkpoint (0600) fails; user_file_mode returning
    0o666 & umask fails."""
    path = tmp_path / "out" / "file.bin"
    path.parent.mkdir()
    write(path)
    assert current_umask() == umask
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask == user_file_mode()
    os.chmod(path, 0o600)
    write(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert [p.name for p in path.parent.iterdir()] == ["file.bin"]
