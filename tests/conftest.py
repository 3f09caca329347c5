"""Shared pytest fixtures. Session-scoped data is generated once per test run in a temporary folder.

Data fixtures:
- ``phantom_raw``:   a tiny phantom in the SZ-TUS raw layout (24 benign + 24 malignant images, 64×64);
- ``phantom_split``: that phantom split with budgets ``SPLIT_LABELS`` and a val/ part (returns the split folder);
- ``tiny_phantom_args`` / ``split_labels``: the arguments behind those two;
Helpers:
- ``run_script``:    run ``python Code/<...>.py args`` from the repo root, returns the CompletedProcess;
- ``assert_one_line_error``: check a failed CLI run's one-line ``error: ...`` message;
- ``single_thread``: one intra-op torch thread for a module (``pytestmark = pytest.mark.usefixtures(...)``).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY_PHANTOM = {"n_benign": 24, "n_malignant": 24, "size": 64, "seed": 3}
SPLIT_LABELS = (4, 10)
VAL_RATIO = 0.25


@pytest.fixture(scope="module")
def single_thread():
    """Tiny tensors: one intra-op thread is fastest and immune to oversubscription on a shared 2-core machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_phantom_args() -> dict:
    """The generate_phantom arguments of ``phantom_raw``."""
    return dict(TINY_PHANTOM)


@pytest.fixture(scope="session")
def phantom_raw(tmp_path_factory) -> Path:
    from Code.DataProcess.make_phantom import generate_phantom
    out = tmp_path_factory.mktemp("phantom") / "raw"
    generate_phantom(out, **TINY_PHANTOM)
    return out


@pytest.fixture(scope="session")
def phantom_split(phantom_raw, tmp_path_factory) -> Path:
    from Code.DataProcess.splitting import split_dataset
    out = tmp_path_factory.mktemp("phantom_split") / "split"
    split_dataset("sztus", phantom_raw, out, list(SPLIT_LABELS), seed=0, val_ratio=VAL_RATIO)
    return out


@pytest.fixture(scope="session")
def split_labels() -> tuple:
    """The label budgets of ``phantom_split``."""
    return SPLIT_LABELS


@pytest.fixture(scope="session")
def run_script():
    """run_script("Code/DataProcess/data_split.py", "--dataset", ...) → subprocess.CompletedProcess (text)."""
    def run(script: str, *args: str) -> subprocess.CompletedProcess:
        env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
        return subprocess.run([sys.executable, str(REPO_ROOT / script), *map(str, args)], cwd=REPO_ROOT,
                              capture_output=True, text=True, env=env, timeout=300)
    return run


@pytest.fixture(scope="session")
def assert_one_line_error():
    """assert_one_line_error(result, *fragments): a CLI failure as run_cli reports it (exit code != 0, one
    ``error: ...`` line on stderr containing every fragment, no traceback)."""
    def check(result: subprocess.CompletedProcess, *fragments: str) -> None:
        assert result.returncode != 0, result.stdout
        lines = result.stderr.strip().splitlines()
        assert "Traceback" not in result.stderr, result.stderr
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
        for fragment in fragments:
            assert fragment in lines[0], (fragment, lines[0])
    return check
