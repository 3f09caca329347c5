"""Helpers of report.py: reading runs (runs.py) and the per-run and paired comparisons (pairs.py)."""
