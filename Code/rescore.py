"""Re-score a finished training run with other evaluation settings into a new run folder (no training).

    python Code/rescore.py runs/cls/supervised --out runs/cls/supervised_em --set eval.prior_correction=pool

The trained model's test (and val) probabilities are corrected to the unlabeled pool's class prior, estimated by EM
on the pool (never on val or test); the new folder reads in ``report.py`` as one more row. Only ``eval.*`` keys may
change. Details: Code/engine/rescore.py; README "Prior-aware pseudo-labels".
"""
import _bootstrap  # noqa: F401

from Code.engine.rescore import main
from Code.errors import run_cli

if __name__ == "__main__":
    run_cli(main)
