"""Active learning: which unlabeled images an annotator should label next (``Code/suggest.py``).

- :mod:`Code.active.strategies`: per-image scores from the model's outputs and the four selection strategies;
- :mod:`Code.active.scoring`: one batched pass of a saved model over a budget's unlabeled pool;
- :mod:`Code.active.split_check`: refuses a checkpoint trained on another split or budget;
- :mod:`Code.active.sheet`: the contact sheet of the chosen images.
"""
