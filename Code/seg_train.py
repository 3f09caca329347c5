"""Train Hermes for lesion segmentation (saliency on, best checkpoint by lesion Dice).

    python Code/seg_train.py                                   # built-in phantom, CPU-sized
    python Code/seg_train.py --config configs/busi/144.yaml --data SPLIT --labels 144
    torchrun --nproc_per_node=2 Code/seg_train.py --config ...  # several GPUs

``--help`` lists every option; ``--set section.key=value`` overrides any config key.
"""
import _bootstrap  # noqa: F401

from Code.engine.cli import main
from Code.errors import run_cli

if __name__ == "__main__":
    run_cli(lambda argv: main(argv, task="seg"))
