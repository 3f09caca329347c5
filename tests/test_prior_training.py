"""The bounded pool prior in a training run on the imbalanced phantom (``make_phantom.py --malignant-share``):
``cls_train.py --method fixmatch --set ssl.prior_aware=true ssl.class_ratio=pool`` logs ``cls_pool_prior_1`` at
every step; it must stay within ``ssl.prior_max_shift`` of the labeled prior. Whether the old estimator collapses
where the new one does not is shown on a simulated feedback loop (tests/test_pool_prior.py): a few tens of smoke
steps do not reach the collapse of issue #23."""
import pytest

from Code.data.lists import read_labeled_list
from helpers import SMOKE_CONFIG

ITERS = 24


@pytest.fixture(scope="module")
def imbalanced_split(tmp_path_factory):
    """A 3:1 benign:malignant phantom (30 + 10 images, 64×64; a seed whose cases allow it), split with a 4-label
    budget (2 + 2: labeled lists are balanced) and a val part."""
    from Code.DataProcess.make_phantom import generate_phantom
    from Code.DataProcess.splitting import split_dataset

    root = tmp_path_factory.mktemp("imbalanced")
    generate_phantom(root / "raw", n_benign=30, n_malignant=10, size=64, seed=1)
    split_dataset("sztus", root / "raw", root / "split", [4], seed=0, val_ratio=0.25)
    return root / "split"


def odds(p):
    return p / (1.0 - p)


def test_logged_pool_prior_stays_within_the_bound(imbalanced_split, tmp_path, run_main):
    """A tight bound (odds × [0.8, 1.25]: π(1) in [4/9, 5/9]) that the unbounded EM over a 16-image window leaves.
    Mutations checked: FixMatch building PoolPrior without prior_max_shift (unbounded); bound_prior clamping at
    ±log k instead of ±log(k)/2."""
    shift = 1.25
    from Code.engine.cli import main
    from Code.reporting.scalars import read_scalars

    run = tmp_path / "run"
    proc = run_main(lambda argv: main(argv, task="cls"), "--config", str(SMOKE_CONFIG), "--data", imbalanced_split,
                    "--labels", "4", "--out", run, "--method", "fixmatch", "--set", "ssl.prior_aware=true",
                    "ssl.class_ratio=pool", f"ssl.prior_max_shift={shift}", "ssl.prior_window=16",
                    f"train.iters={ITERS}", f"eval.every={ITERS}", "log.image_every=0")
    assert proc.returncode == 0, proc.stderr[-2000:]
    labels = [label for _, _, label in read_labeled_list(imbalanced_split / "train" / "4" / "labeled" / "labeled.txt")]
    source = sum(labels) / len(labels)
    pool = [label for _, _, label in read_labeled_list(imbalanced_split / "train" / "4" / "unlabeled" / "truth.txt")]
    assert source == 0.5 and sum(pool) / len(pool) < 0.3  # balanced labeled list, imbalanced pool
    shares = read_scalars(run / "tensorboard", ["ssl/cls_pool_prior_1"])["ssl/cls_pool_prior_1"]
    assert sorted(shares) == list(range(1, ITERS + 1))
    for share in shares.values():
        ratio = odds(share) / odds(source)
        assert 1 / shift - 1e-4 <= ratio <= shift + 1e-4
        assert 0.05 < share < 0.95
