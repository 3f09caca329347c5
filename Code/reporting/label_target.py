"""The issue's target test of the label simulation: ``make_figures.py label-curve ... --compare S@N B@M``.

Δ = metric(strategy S at N labels) − metric(strategy B at M labels) for one method (``--compare-method``), with
the paired bootstrap 95 % interval over test images pooled over draws (``Code/reporting/paired_stats.py``, as
report.py computes it): the runs of S@N and B@M of the same draw (simulation folder and seed, from ``rounds.csv``)
are paired image by image on their per-image test predictions (``final_metrics.json`` ``predictions``: the
``best`` CSV at the val-chosen step, ``final`` at the final step; ``Code/reporting/intervals.py``). All draws
present for both sides are pooled; a draw with only one side is left out (counted in ``draws``). The words are
``Interval.words``: "ahead" / "behind" only where the interval excludes 0, else "within noise".
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from Code.errors import UserError
from Code.reporting.intervals import predictions_file, paired_set
from Code.reporting.paired_stats import CI_METRICS, MIN_RESAMPLES, paired_interval

COLUMNS = ("method", "strategy", "labels", "baseline", "baseline_labels", "at", "metric", "delta", "low", "high",
           "words", "draws", "n_images")


def parse_side(text: str) -> Tuple[str, int]:
    """``entropy@144`` → (``entropy``, 144)."""
    strategy, _, labels = text.partition("@")
    if not strategy or not labels.isdigit():
        raise UserError(f"--compare {text!r}: write STRATEGY@LABELS, e.g. entropy@144 random@168")
    return strategy, int(labels)


def _runs(sims: Sequence[Path], method: str, strategy: str, labels: int) -> Dict[Tuple[str, str], Path]:
    """``{(simulation folder, seed): run folder}`` of one side, from the rounds.csv files."""
    from Code.reporting.label_curve import read_rounds

    found = {}
    for sim in sims:
        for row in read_rounds(sim):
            if (row["method"], row["strategy"], int(row["labels"])) == (method, strategy, labels):
                found[(str(Path(sim).resolve()), row["seed"])] = Path(sim) / row["run"]
    return found


def compare(sims: Sequence[Path], method: str, side: str, baseline: str, select: str,
            n_resamples: int = MIN_RESAMPLES, seed: int = 0) -> List[Dict]:
    """The rows of :data:`COLUMNS` (one per metric of ``CI_METRICS``, values in %) for ``side`` against
    ``baseline`` (``STRATEGY@LABELS`` each)."""
    (strategy, labels), (base, base_labels) = parse_side(side), parse_side(baseline)
    left, right = _runs(sims, method, strategy, labels), _runs(sims, method, base, base_labels)
    draws = sorted(set(left) & set(right))
    if not draws:
        raise UserError(f"--compare {side} {baseline}: no draw has finished {method} runs of both in "
                        f"{', '.join(map(str, sims))} ({len(left)} and {len(right)} runs found)")
    which = "best" if select == "best" else "final"
    files = []
    for draw in draws:
        pair = (predictions_file(left[draw], which), predictions_file(right[draw], which))
        if None in pair:
            run = left[draw] if pair[0] is None else right[draw]
            raise UserError(f"{run} has no per-image test predictions ({which}); --compare needs them")
        files.append(pair)
    data = paired_set(files)
    rows = []
    for metric in CI_METRICS:
        interval = paired_interval(data, metric, n_resamples, seed)
        rows.append(dict(zip(COLUMNS, (method, strategy, labels, base, base_labels, which, metric,
                                       round(100 * interval.delta, 4), round(100 * interval.low, 4),
                                       round(100 * interval.high, 4), interval.words,
                                       f"{len(draws)} of {len(set(left) | set(right))}", data.n_images))))
    return rows

