"""Shared pytest fixtures. Session-scoped data is generated once per test run in a temporary folder.

Data fixtures:
- ``phantom_raw``:   a tiny phantom in the SZ-TUS raw layout (24 benign + 24 malignant images, 64×64);
- ``phantom_split``: that phantom split with budgets ``SPLIT_LABELS`` and a val/ part (returns the split folder);
- ``tiny_phantom_args`` / ``split_labels``: the arguments behind those two;
- ``busi_layout``:   a tiny synthetic ``Dataset_BUSI_with_GT`` (names with spaces, ``_mask_1`` multi-masks,
  ``normal/``) and ``BUSI_LAYOUT``, what it holds; the real BUSI copy is found by ``helpers.busi_root()``
  (environment variable ``HERMES_BUSI_ROOT``);
Helpers:
- ``run_script``:    run ``python Code/<...>.py args`` from the repo root (one thread), returns the CompletedProcess;
- ``run_main``:      run a script's ``main`` in-process as its ``__main__`` block does (``run_cli``), returns a
  CompletedProcess-like result: the cheap way to test CLI error paths, where a subprocess adds nothing;
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


# The synthetic BUSI download: class folder → {image number: number of mask files}; 2 and 3 masks are multi-lesion.
BUSI_LAYOUT = {"benign": {1: 1, 2: 2, 3: 1, 10: 3, 11: 1, 12: 1, 13: 1, 14: 1},
               "malignant": {1: 1, 2: 1, 3: 2, 4: 1, 5: 1, 6: 1, 7: 1, 8: 1},
               "normal": {1: 1, 2: 1, 3: 1}}


def busi_lesion(cls: str, number: int, mask_index: int, shape=(40, 56)):
    """The {0, 1} lesion of mask file ``mask_index`` of image ``<cls> (<number>)``: a rectangle whose place
    depends on both (normal images: empty)."""
    import numpy as np

    mask = np.zeros(shape, np.uint8)
    if cls != "normal":
        top, left = 2 + 9 * mask_index, 3 + (number * 5) % 30
        mask[top:top + 7, left:left + 12] = 1
    return mask


@pytest.fixture(scope="session")
def busi_layout(tmp_path_factory) -> Path:
    """``<tmp>/BUSI/Dataset_BUSI_with_GT/{benign,malignant,normal}/`` as downloaded: ``benign (N).png`` with
    ``benign (N)_mask.png`` and, for multi-lesion images, ``_mask_1.png``, ``_mask_2.png``; 40×56 grayscale images
    (each unique), 0/255 masks from :func:`busi_lesion`. Returns the folder holding ``Dataset_BUSI_with_GT``."""
    import cv2
    import numpy as np

    root = tmp_path_factory.mktemp("busi") / "BUSI"
    rng = np.random.default_rng(5)
    for cls, images in BUSI_LAYOUT.items():
        folder = root / "Dataset_BUSI_with_GT" / cls
        folder.mkdir(parents=True)
        for number, n_masks in images.items():
            cv2.imwrite(str(folder / f"{cls} ({number}).png"), rng.integers(0, 256, (40, 56), dtype=np.uint8))
            for k in range(n_masks):
                suffix = "_mask" if k == 0 else f"_mask_{k}"
                cv2.imwrite(str(folder / f"{cls} ({number}){suffix}.png"), busi_lesion(cls, number, k) * 255)
    return root


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


@pytest.fixture
def run_main(capsys):
    """run_main(module.main, "--flag", value, ...) → CompletedProcess(args, exit status, stdout, stderr), in-process:
    ``run_cli`` turns a UserError into one ``error:`` line on stderr and exit status 2, exactly as in the script."""
    from Code.errors import run_cli

    def run(main, *args) -> subprocess.CompletedProcess:
        argv = [str(a) for a in args]
        capsys.readouterr()
        try:
            run_cli(main, argv)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(argv, code, out, err)
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
