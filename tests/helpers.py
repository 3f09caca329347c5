"""Helpers shared by test modules (pytest puts this folder on sys.path: ``from helpers import ...``)."""
import importlib
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def load_script(name):
    """Import ``Code/<name>.py`` in-process (cheaper than a subprocess for the secondary checks)."""
    sys.path.insert(0, str(REPO_ROOT / "Code"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(REPO_ROOT / "Code"))
