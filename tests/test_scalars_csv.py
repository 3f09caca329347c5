"""Code/reporting/scalars.py: TensorBoard scalars → one CSV, checked against values written here."""
import csv

import pytest
from torch.utils.tensorboard import SummaryWriter

from Code.errors import UserError
from Code.reporting.scalars import main, read_scalars, read_scalars_csv, write_scalars_csv


@pytest.fixture
def tb_dir(tmp_path):
    folder = tmp_path / "tensorboard"
    writer = SummaryWriter(str(folder))
    for step in (10, 20, 30, 40):
        writer.add_scalar("loss/infonce", 5.0 - step / 100, step)
    writer.add_scalar("val/knn_accuracy", 0.7, 0)
    writer.add_scalar("val/knn_accuracy", 0.75, 20)
    writer.close()
    return folder


def _read(path):
    with open(path) as handle:
        return list(csv.DictReader(handle))


def test_union_of_steps_with_gaps_left_empty(tb_dir, tmp_path):
    out = tmp_path / "curve.csv"
    assert write_scalars_csv(tb_dir, out) == 5
    rows = _read(out)
    assert [r["step"] for r in rows] == ["0", "10", "20", "30", "40"]
    assert rows[0]["loss/infonce"] == "" and float(rows[0]["val/knn_accuracy"]) == pytest.approx(0.7)
    assert float(rows[2]["loss/infonce"]) == pytest.approx(4.8) and float(rows[2]["val/knn_accuracy"]) == pytest.approx(0.75)
    assert rows[3]["val/knn_accuracy"] == ""


def test_chosen_tags_and_every(tb_dir, tmp_path):
    out = tmp_path / "curve.csv"
    assert write_scalars_csv(tb_dir, out, tags=["loss/infonce"], every=2) == 2
    rows = _read(out)
    assert list(rows[0]) == ["step", "loss/infonce"]
    assert [(r["step"], round(float(r["loss/infonce"]), 4)) for r in rows] == [("20", 4.8), ("40", 4.6)]


def test_unknown_tag_and_folder_are_one_line_errors(tb_dir, tmp_path, capsys):
    with pytest.raises(UserError, match="no scalar tag loss/nope"):
        write_scalars_csv(tb_dir, tmp_path / "x.csv", tags=["loss/nope"])
    assert main([str(tmp_path / "missing"), str(tmp_path / "x.csv")]) == 2
    assert "not a TensorBoard folder" in capsys.readouterr().err


def test_read_back_gives_the_tensorboard_values(tb_dir, tmp_path):
    out = tmp_path / "curve.csv"
    write_scalars_csv(tb_dir, out)
    back, logged = read_scalars_csv(out), read_scalars(tb_dir)
    assert {tag: sorted(v) for tag, v in back.items()} == {"loss/infonce": [10, 20, 30, 40], "val/knn_accuracy": [0, 20]}
    assert all(back[tag][step] == pytest.approx(logged[tag][step]) for tag in logged for step in logged[tag])
    (tmp_path / "bad.csv").write_text("step,loss/infonce\nten,5.0\n")
    with pytest.raises(UserError, match="bad.csv: not a scalars table"):
        read_scalars_csv(tmp_path / "bad.csv")
