"""Train Hermes for benign/malignant classification (inter-task attention on, best checkpoint by accuracy).

    python Code/cls_train.py                                   # built-in phantom, CPU-sized
    python Code/cls_train.py --config configs/sztus/120.yaml --data SPLIT --labels 120
    torchrun --nproc_per_node=2 Code/cls_train.py --config ...  # several GPUs

``--help`` lists every option; ``--set section.key=value`` overrides any config key.
"""
import _bootstrap  # noqa: F401

from Code.engine.cli import main
from Code.errors import run_cli

if __name__ == "__main__":
    run_cli(lambda argv: main(argv, task="cls"))
