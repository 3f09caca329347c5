"""Self-supervised pre-training (Code/pretrain.py): train images only, outputs, exact resume, the encoder file and
its checks, one-line errors, torchrun. Tiny encoder (tu-test_resnet), 64×64, CPU, a few steps."""
import csv
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from Code.errors import UserError
from helpers import SUBPROCESS_ENV as ENV

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "configs" / "pretrain_smoke.yaml")

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def split_with_val(phantom_split):
    """The tiny phantom split of conftest (budgets 4 and 10) with its val/ part."""
    assert (phantom_split / "val" / "labeled.txt").is_file()
    return phantom_split


@pytest.fixture(scope="module")
def smoke_run(split_with_val, tmp_path_factory):
    """One uninterrupted 6-step run of configs/pretrain_smoke.yaml on ``split_with_val``: ``(run folder, process)``."""
    run = tmp_path_factory.mktemp("pretrain_run") / "run"
    return run, pretrain(split_with_val, run)


def pretrain(split, out, *extra, check=True):
    cmd = [sys.executable, str(ROOT / "Code" / "pretrain.py"), "--config", SMOKE, "--data", str(split),
           "--out", str(out), *extra]
    proc = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def listed_train_images(split):
    names = set()
    for budget in (split / "train").iterdir():
        names |= {line.split()[0] for line in (budget / "labeled" / "labeled.txt").read_text().splitlines() if line}
        names |= {line.strip() for line in (budget / "unlabeled" / "unlabeled.txt").read_text().splitlines() if line}
    return names


def test_sources_are_the_train_images_only(split_with_val):
    """Mutations checked: val/ images added to the pre-training set; the unlabeled lists skipped."""
    from Code.pretraining.config import load_pretrain_config
    from Code.pretraining.data import resolve_pretrain_sources

    for labels in (None, 4):
        config = load_pretrain_config(SMOKE, [{"data": {"split": str(split_with_val), "labels": labels}}])
        sources = resolve_pretrain_sources(config)
        names = [p.name for p in sources.images]
        assert len(names) == len(set(names))
        assert set(names) == listed_train_images(split_with_val)  # the budgets partition the same train images
        for path in sources.images:
            assert path.relative_to(split_with_val).parts[0] == "train"
        held_out = {line.split()[0] for part in ("val", "test")
                    for line in (split_with_val / part / "labeled.txt").read_text().splitlines() if line}
        assert not held_out & set(names)
        assert sources.val == split_with_val / "val"
        assert sources.knn_bank == split_with_val / "train" / "4" / "labeled"


def test_views_are_seeded_and_differ():
    """Mutation checked: both views drawn from one geometry (the second view equals the first)."""
    import numpy as np
    from Code.pretraining.data import TwoViewDataset

    dataset = TwoViewDataset.__new__(TwoViewDataset)  # no files needed: one synthetic image
    dataset.paths, dataset.size, dataset.in_channels, dataset.seed, dataset.epoch = [Path("x")], 32, 1, 5, 0
    from Code.data.transforms import resolve_aug
    dataset.aug = resolve_aug({"scale": [1.0, 2.0], "translate": 0.2})
    dataset._images = [np.random.default_rng(0).integers(0, 255, (40, 48), dtype=np.uint8)]
    a1, a2, index = dataset[0]
    b1, b2, _ = dataset[0]
    assert index.item() == 0 and a1.shape == (1, 32, 32)
    assert torch.equal(a1, b1) and torch.equal(a2, b2)
    assert not torch.equal(a1, a2)
    dataset.set_epoch(1)
    assert not torch.equal(dataset[0][0], a1)


@pytest.mark.slow
def test_pretrain_writes_everything_and_the_encoder_loads(smoke_run):
    """Mutations checked: the key encoder exported instead of the trained query encoder (weights differ from
    latest.pt's model); the k-NN monitor not run (no metrics.csv)."""
    run, proc = smoke_run
    assert "encoder written to" in proc.stdout and "k-NN on val (step 6)" in proc.stdout
    with (run / "metrics.csv").open() as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["step", "val_knn_accuracy", "val_knn_balanced_accuracy"] and [r[0] for r in rows[1:]] == ["0", "3", "6"]
    assert all(0.0 <= float(v) <= 1.0 for r in rows[1:] for v in r[1:])

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    assert {"loss/infonce", "lr/encoder", "health/embed_std", "health/instance_acc",
            "val/knn_accuracy", "val/knn_balanced_accuracy"} <= set(acc.Tags()["scalars"])
    assert [e.step for e in acc.Scalars("loss/infonce")] == [1, 2, 3, 4, 5, 6]
    assert all(torch.isfinite(torch.tensor(e.value)) for e in acc.Scalars("loss/infonce"))

    exported = torch.load(run / "encoder.pth", weights_only=True)
    assert exported["encoder_name"] == "tu-test_resnet" and exported["in_channels"] == 1
    assert exported["step"] == 6 and exported["objective"] == "mocov2"
    latest = torch.load(run / "checkpoints" / "latest.pt", weights_only=False)
    for key, value in exported["state_dict"].items():
        assert torch.equal(value, latest["model"][f"encoder.{key}"]), key

    from Code.models import HermesNet
    net = HermesNet(encoder_name="tu-test_resnet", encoder_weights=str(run / "encoder.pth"), in_channels=1,
                    decoder_channels=[32, 16, 16, 8, 8], pixel_embed_dim=32, image_embed_dim=16, consist_dim=16)
    for key, value in exported["state_dict"].items():
        assert torch.equal(net.encoder.state_dict()[key], value), key



@pytest.mark.slow
def test_resume_gives_the_same_weights_queue_and_metrics(split_with_val, smoke_run, tmp_path):
    """Mutations checked: the queue not saved/restored; the view stream restarted from batch 0 on resume."""
    (whole, _), parts = smoke_run, tmp_path / "parts"
    stopped = pretrain(split_with_val, parts, "--stop-after", "2")
    assert "stopped at step 2" in stopped.stdout and not (parts / "encoder.pth").exists()
    resumed = pretrain(split_with_val, parts)
    assert "from step 2" in resumed.stderr
    a = torch.load(whole / "checkpoints" / "latest.pt", weights_only=False)
    b = torch.load(parts / "checkpoints" / "latest.pt", weights_only=False)
    assert a["step"] == b["step"] == 6
    for part in ("model", "key_model", "queue"):
        for key, value in a[part].items():
            assert torch.equal(value, b[part][key]), (part, key)
    assert (whole / "metrics.csv").read_text() == (parts / "metrics.csv").read_text()
    ea, eb = (torch.load(r / "encoder.pth", weights_only=True)["state_dict"] for r in (whole, parts))
    assert all(torch.equal(ea[k], eb[k]) for k in ea)


@pytest.mark.slow
def test_test_images_are_never_read(split_with_val, tmp_path, capsys):
    """With test/ deleted (and no val/) pre-training runs to the end and skips the k-NN monitor (in-process).
    Mutation checked: a resolve step that requires test/labeled.txt (as the trainers' resolve_split does)."""
    from Code.pretraining.cli import main

    split = tmp_path / "split"
    shutil.copytree(split_with_val, split)
    shutil.rmtree(split / "test")
    shutil.rmtree(split / "val")
    run = tmp_path / "run"
    assert main(["--config", SMOKE, "--data", str(split), "--out", str(run), "--iters", "2",
                 "--set", "pretrain.deterministic=false"]) == 0
    assert "the split has no val/" in capsys.readouterr().err and (run / "encoder.pth").is_file()
    assert not (run / "metrics.csv").exists()


def test_encoder_file_for_another_encoder_or_channels_is_refused(tmp_path):
    """Mutation checked: the recorded encoder name / in_channels ignored (the file would load or fail with a
    shape message that does not say why)."""
    from Code.models.encoders import build_encoder

    source = build_encoder("tu-test_resnet", 1, None)
    path = tmp_path / "encoder.pth"
    torch.save({"state_dict": source.state_dict(), "encoder_name": "tu-test_resnet", "in_channels": 1}, path)
    loaded = build_encoder("tu-test_resnet", 1, str(path))
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in loaded.state_dict().items())
    torch.save({"state_dict": source.state_dict(), "encoder_name": "resnet18", "in_channels": 1}, path)
    with pytest.raises(UserError, match=r"made for encoder 'resnet18' with 1 input.*'tu-test_resnet' with 1"):
        build_encoder("tu-test_resnet", 1, str(path))
    torch.save({"state_dict": source.state_dict(), "encoder_name": "tu-test_resnet", "in_channels": 1}, path)
    with pytest.raises(UserError, match=r"made for encoder 'tu-test_resnet' with 1 input.*with 3"):
        build_encoder("tu-test_resnet", 3, str(path))


def test_errors_are_one_line(split_with_val, tmp_path, run_main, assert_one_line_error):
    """Through run_cli once (the one-line format), then each bad setting's message."""
    from Code.pretraining.cli import main

    assert_one_line_error(run_main(main, "--config", SMOKE, "--data", tmp_path / "missing", "--out", tmp_path / "r1"),
                          "not found")
    cases = [(["--set", "pretrain.nope=1"], "pretrain.nope"),
             (["--set", "pretrain.queue_size=1000"], "queue_size.*train images"),
             (["--set", "pretrain.batch=5"], "bn_splits"),
             (["--set", "views.scale=[2, 1]"], "views.scale"),
             (["--set", "pretrain.optimizer=lars"], "pretrain.optimizer"),
             (["--labels", "7"], "budget 7")]
    for number, (extra, message) in enumerate(cases):
        with pytest.raises(UserError, match=message):
            main(["--config", SMOKE, "--data", str(split_with_val), "--out", str(tmp_path / f"case{number}"), *extra])


@pytest.mark.slow
def test_torchrun_two_processes(split_with_val, tmp_path):
    """Two CPU processes (gloo): keys of both ranks enter the queue, rank 0 writes the outputs."""
    run = tmp_path / "ddp"
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--standalone", "--nproc_per_node=2", str(ROOT / "Code" / "pretrain.py"), "--config",
           SMOKE, "--data", str(split_with_val), "--out", str(run), "--iters", "2",
           "--set", "pretrain.batch=2", "pretrain.bn_splits=1"]
    proc = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = torch.load(run / "checkpoints" / "latest.pt", weights_only=False)
    assert len(state["rng"]) == 2 and not any(k.startswith("module.") for k in state["model"])
    ids = state["queue"]["ids"].tolist()
    assert sorted(i for i in ids if i >= 0) == sorted(set(i for i in ids if i >= 0)) and sum(i >= 0 for i in ids) == 8
    assert (run / "encoder.pth").is_file()


@pytest.mark.slow
def test_run_folder_rules(split_with_val, smoke_run, tmp_path):
    """Mutations checked: another config silently continued (the diff check dropped); a foreign folder written into."""
    from Code.pretraining.cli import main

    run, _ = smoke_run
    config_before = (run / "config.yaml").read_text()
    with pytest.raises(UserError, match="different config.*pretrain.lr"):
        main(["--config", SMOKE, "--data", str(split_with_val), "--out", str(run), "--set", "pretrain.lr=0.5"])
    assert (run / "config.yaml").read_text() == config_before
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    for extra in ([], ["--force"]):
        with pytest.raises(UserError, match="not a Hermes run folder"):
            main(["--config", SMOKE, "--data", str(split_with_val), "--out", str(foreign), *extra])
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    seg_state = {"model": {}, "config": {"task": "seg"}, "step": 3}
    torch.save(seg_state, tmp_path / "seg.pt")
    with pytest.raises(UserError, match="seg_train.py, not of pretrain.py"):
        main(["--config", SMOKE, "--data", str(split_with_val), "--out", str(tmp_path / "new"),
              "--resume", str(tmp_path / "seg.pt")])


def fake_pretrain_run(folder, split, step, **pretrain):
    """A pre-training run folder as the trainer leaves it (config.yaml, checkpoints/latest.pt at ``step``)."""
    from Code.common.checkpoint import save_checkpoint
    from Code.engine.config import dump_config
    from Code.pretraining.config import load_pretrain_config

    config = load_pretrain_config(SMOKE, [{"data": {"split": str(split)}, "pretrain": pretrain}])
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(dump_config(config))
    save_checkpoint(folder / "checkpoints" / "latest.pt", {"model": {}, "config": config, "step": step})
    return config


def test_iters_extends_a_run_as_the_trainers_do(tmp_path):
    """Issue 21: plain ``--iters`` was refused and ``--resume auto --iters 8`` silently kept 6. Mutations checked:
    pretrain.py keeping its own rules (no iteration key: both refused / ignored); the schedule note dropped."""
    from Code.pretraining.cli import build_parser, explicit_keys, resolve_config
    from Code.pretraining.run_dir import prepare_pretrain_dir

    def prepare(run, *argv):
        args = build_parser().parse_args(["--config", SMOKE, "--data", str(tmp_path / "split"), "--out", str(run),
                                          *argv])
        return prepare_pretrain_dir(run, resolve_config(args), args.resume, args.force, explicit_keys(args))

    run = tmp_path / "run"
    fake_pretrain_run(run, tmp_path / "split", step=6)
    plan = prepare(run, "--iters", "10")
    assert plan.config["pretrain"]["iters"] == 10 and plan.checkpoint == run / "checkpoints" / "latest.pt"
    (note,) = [n for n in plan.notes if "extending" in n]
    assert "from 6 to 10 iterations at step 6" in note and "cosine" in note and "0.000 → 0.500" in note
    fake_pretrain_run(run, tmp_path / "split", step=6)
    plan = prepare(run, "--resume", "auto", "--iters", "8")
    assert plan.config["pretrain"]["iters"] == 8
    with pytest.raises(UserError, match="already at step 6"):
        prepare(run, "--iters", "5")
    with pytest.raises(UserError, match=r"different config \(differs in: .*pretrain.lr .*only --iters may change"):
        prepare(run, "--set", "pretrain.lr=0.5")


@pytest.mark.slow
def test_extended_run_continues_to_the_new_end(split_with_val, smoke_run, tmp_path):
    """A finished 6-step run extended with ``--iters 8`` trains steps 7 and 8 and rewrites encoder.pth."""
    from Code.pretraining.cli import main

    run = tmp_path / "run"
    shutil.copytree(smoke_run[0], run)
    assert main(["--config", SMOKE, "--data", str(split_with_val), "--out", str(run), "--iters", "8"]) == 0
    assert torch.load(run / "encoder.pth", weights_only=True)["step"] == 8
    assert torch.load(run / "checkpoints" / "latest.pt", weights_only=False)["scheduler"]["last_epoch"] == 8


@pytest.mark.slow
def test_background_sigint_saves_after_the_step_and_exits_130(split_with_val, tmp_path):
    """Ctrl-C lost the steps since the last checkpoint, and a SIGINT to a background job (started by a
    non-interactive shell with ``&``: SIGINT ignored) did nothing. The run here starts with SIGINT ignored, as such a
    job, and has no checkpoint before step 100000. Mutations checked: no stop handlers in pretrain.py (the signal is
    ignored: it runs on, 'did not stop'); the trainer's loop not checking ``stop_requested`` (never stops)."""
    run = tmp_path / "run"
    cmd = [sys.executable, str(ROOT / "Code" / "pretrain.py"), "--config", SMOKE, "--data", str(split_with_val),
           "--out", str(run), "--iters", "100000", "--set", "monitor.every=100000"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        for line in proc.stderr:  # the handlers are installed before this line is printed
            if line.startswith("pre-training ") or not line:
                break
        time.sleep(2)
        proc.send_signal(signal.SIGINT)
        try:  # one step and a checkpoint: seconds; an ignored signal would leave it running for hours
            out, err = proc.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            raise AssertionError("pretrain.py did not stop within 180 s of a SIGINT") from None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err[-2000:]
    step = torch.load(run / "checkpoints" / "latest.pt", weights_only=False)["step"]
    assert 0 < step < 100000 and f"stopped at step {step}" in out and "--resume auto" in out
    assert not (run / "encoder.pth").exists()


def test_encoder_weights_from_a_training_or_pretraining_checkpoint(phantom_split, tmp_path, capsys):
    """Issue 21: ``model.encoder_weights=RUN/checkpoints/best.pt`` printed PyTorch's multi-line weights-only text.
    A checkpoint of seg_train.py/cls_train.py or pretrain.py gives its encoder (checked like encoder.pth); a file
    that does not load with ``weights_only=True`` is one line. Mutations checked: the checkpoint branch removed
    ("does not fit the encoder: unexpected keys"); the numpy RNG globals not allowed (the trainer's checkpoint is
    refused); the recorded-encoder check skipped for checkpoints (a shape message instead of 'made for')."""
    from Code.engine.builders import build_model
    from Code.common.checkpoint import save_checkpoint
    from Code.engine.runtime import rng_state
    from Code.models.encoders import build_encoder
    from Code.pretraining.config import load_pretrain_config
    from Code.pretraining.moco import ProjectionBranch
    from helpers import smoke_config

    config = smoke_config(phantom_split)
    trained = build_model(config)
    pretrained = ProjectionBranch("tu-test_resnet", 1, 32, 16, 2)
    pre_config = load_pretrain_config(SMOKE)
    for name, model, cfg in (("best.pt", trained, config), ("latest.pt", pretrained, pre_config)):
        path = tmp_path / name  # as the trainers save it: numpy RNG state included
        save_checkpoint(path, {"step": 3, "config": cfg, "model": model.state_dict(), "rng": [rng_state()]})
        loaded = build_encoder("tu-test_resnet", 1, str(path))
        for key, value in loaded.state_dict().items():
            assert torch.equal(value, model.encoder.state_dict()[key]), (name, key)
        assert f"taking the encoder of {path}" in capsys.readouterr().err
        with pytest.raises(UserError, match=r"made for encoder 'tu-test_resnet' with 1 input.*with 3"):
            build_encoder("tu-test_resnet", 3, str(path))

    unsafe = tmp_path / "pickled.pt"
    torch.save({"model": {}, "hook": print}, unsafe)
    with pytest.raises(UserError) as refused:
        build_encoder("tu-test_resnet", 1, str(unsafe))
    message = str(refused.value)
    assert "\n" not in message and "weights_only=False" not in message and str(unsafe) in message
