"""Self-supervised pre-training of the encoder (MoCo v2) on a split's train images; writes RUN/encoder.pth.

    python Code/pretrain.py                                        # built-in phantom, CPU-sized
    python Code/pretrain.py --data SPLIT --out RUN [--labels N] [--iters K]
    python Code/seg_train.py --data SPLIT --labels N --set model.encoder_weights=RUN/encoder.pth
    torchrun --nproc_per_node=2 Code/pretrain.py --data SPLIT ...   # several GPUs

``--help`` lists every option; ``--set section.key=value`` overrides any key of configs/pretrain.yaml.
"""
import _bootstrap  # noqa: F401

from Code.errors import run_cli
from Code.pretraining.cli import main

if __name__ == "__main__":
    run_cli(main)
