"""Helpers of report.py (runs.py: reading runs; pairs.py: per-run and paired comparisons) and the figures of
evaluate.py and predict.py (figures.py)."""
