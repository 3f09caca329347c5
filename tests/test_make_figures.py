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
    (run / "metrics.csv").write_text("step,val_dice,val_accuracy\n50,0.4,0.6\n100,0.5,0.7\n")
    old = tmp_path / "old"  # a run with test curves (eval.test_curves, or made before the test was sealed)
    old.mkdir()
    (old / "metrics.csv").write_text("step,dice,accuracy,val_dice,val_accuracy\n50,0.4,0.6,0.3,0.5\n")
    curves = figures.draw_curves([run, old], tmp_path / "curves.png")
    assert cv2.imread(str(curves)) is not None
    with pytest.raises(UserError, match="no metrics.csv"):
        figures.draw_curves([tmp_path / "missing"], tmp_path / "x.png")


def test_phantom_samples(phantom_raw, tmp_path):
    out = figures.draw_phantom(phantom_raw, tmp_path / "samples.png")
    assert cv2.imread(str(out)) is not None


def test_pretrain_curves_from_curve_csv_or_tensorboard(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    saved = tmp_path / "saved"
    saved.mkdir()
    (saved / "curve.csv").write_text("step,val/knn_accuracy,loss/infonce,health/embed_std\n0,0.6,,\n"
                                     "10,,5.0,0.7\n20,0.7,4.5,0.9\n")
    assert figures._pretrain_scalars(saved) == {"loss/infonce": {10: 5.0, 20: 4.5},
                                                "health/embed_std": {10: 0.7, 20: 0.9},
                                                "val/knn_accuracy": {0: 0.6, 20: 0.7}}
    live = tmp_path / "live"
    with SummaryWriter(live / "tensorboard") as writer:
        for step, loss in ((10, 5.5), (20, 5.25)):
            writer.add_scalar("loss/infonce", loss, step)
    assert figures._pretrain_scalars(live)["loss/infonce"] == {10: 5.5, 20: 5.25}
    out = figures.draw_pretrain_curves([saved, saved / "curve.csv", live], tmp_path / "pre.png")
    assert cv2.imread(str(out)).shape[1] > 1000
    with pytest.raises(UserError, match="no curve.csv or tensorboard/ in"):
        figures.draw_pretrain_curves([tmp_path / "missing"], tmp_path / "x.png")


def test_output_file_rule(tmp_path, run_main, assert_one_line_error):
    """README "Outputs and --force": an existing figure needs --force, a file that is not a matplotlib figure or
    that the figure reads is never replaced. Mutation checked: the input check dropped (metrics.csv is then
    refused only as not a figure, without naming the input)."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.csv").write_text("step,dice,accuracy\n50,0.4,0.6\n100,0.5,0.7\n")
    assert_one_line_error(run_main(figures.main, "curves", run, "--out", run / "metrics.csv", "--force"),
                          "an input of this command")
    assert (run / "metrics.csv").read_text().startswith("step,dice")
    out = tmp_path / "curves.png"
    assert run_main(figures.main, "curves", run, "--out", out).returncode == 0
    assert_one_line_error(run_main(figures.main, "curves", run, "--out", out), "add --force")
    assert run_main(figures.main, "curves", run, "--out", out, "--force").returncode == 0
    photo = tmp_path / "photo.png"
    cv2.imwrite(str(photo), cv2.imread(str(out))[:20, :20])  # a PNG that matplotlib did not write
    assert_one_line_error(run_main(figures.main, "architecture", "--out", photo, "--force"),
                          "is not a figure drawn by matplotlib")


def test_each_curves_subcommand_refuses_the_other_kind_of_run(tmp_path):
    """Issue 21: 'curves' on a pretrain.py run died on KeyError 'dice'; 'pretrain-curves' on a training run wrote an
    empty figure (exit 0). Mutations checked: without check_run_kind the first call ends in a columns error that
    does not name the run kind and the second writes a PNG; without the no-curves check an empty tensorboard/ gives
    an empty figure."""
    from torch.utils.tensorboard import SummaryWriter

    pretrain_run, train_run, empty = tmp_path / "pre", tmp_path / "seg", tmp_path / "empty"
    for run, task, header in ((pretrain_run, "pretrain", "step,val_knn_accuracy\n0,0.5\n"),
                              (train_run, "seg", "step,dice,accuracy\n3,0.4,0.6\n")):
        run.mkdir()
        (run / "config.yaml").write_text(f"task: {task}\nmethod: x\n")
        (run / "metrics.csv").write_text(header)
        with SummaryWriter(run / "tensorboard") as writer:
            writer.add_scalar("loss/total" if task == "seg" else "loss/infonce", 1.0, 1)
    with pytest.raises(UserError, match=r"is a pre-training run \(pretrain.py\).*make_figures.py pretrain-curves"):
        figures.draw_curves([pretrain_run], tmp_path / "a.png")
    with pytest.raises(UserError, match=r"is a training run \(seg_train.py\).*make_figures.py curves"):
        figures.draw_pretrain_curves([train_run], tmp_path / "b.png")
    (empty / "tensorboard").mkdir(parents=True)
    with pytest.raises(UserError, match="none of the pre-training curves"):
        figures.draw_pretrain_curves([empty], tmp_path / "c.png")
    assert not any((tmp_path / name).exists() for name in ("a.png", "b.png", "c.png"))
