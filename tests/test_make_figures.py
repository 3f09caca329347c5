"""make_figures.py: each figure is written as a readable PNG; bad input is a one-line error."""
import cv2
import pytest
from helpers import load_script

from Code.errors import UserError

figures = load_script("make_figures")


def test_architecture_and_curves(tmp_path):
    arch = figures.draw_architecture(tmp_path / "arch.png")
    assert cv2.imread(str(arch)).shape[1] > 1000
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.csv").write_text("step,dice,accuracy\n50,0.4,0.6\n100,0.5,0.7\n")
    curves = figures.draw_curves([run], tmp_path / "curves.png")
    assert cv2.imread(str(curves)) is not None
    with pytest.raises(UserError, match="no metrics.csv"):
        figures.draw_curves([tmp_path / "missing"], tmp_path / "x.png")


def test_phantom_samples(phantom_raw, tmp_path):
    out = figures.draw_phantom(phantom_raw, tmp_path / "samples.png")
    assert cv2.imread(str(out)) is not None
