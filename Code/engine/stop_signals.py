"""SIGINT / SIGTERM during training: save ``latest.pt`` after the current step, then stop with exit status 130.

One implementation for every training entry (``seg_train.py``, ``cls_train.py``, ``pretrain.py``): the trainer
has a ``stop_requested`` flag that its loop checks after each step (then it saves and returns ``stopped``). The
handlers are installed explicitly for both signals, so a SIGINT also stops a run started in the background by a
non-interactive shell (``python Code/pretrain.py ... &`` in a script): such a job inherits SIGINT *ignored*, and
Python leaves an ignored SIGINT ignored. A second Ctrl-C interrupts at once. Single-process runs only: under
torchrun the ranks would not stop at the same step (torchrun forwards the signal and the ranks exit).
DataLoader workers are kept out of the terminal's signals by Code/engine/worker_signals.py.
"""
from __future__ import annotations

import signal
import sys
from contextlib import contextmanager
from typing import Any, Dict, Iterator

STOPPED = 130  # exit status of a run stopped on request (as a shell reports a SIGINT)


def install_stop_handlers(trainer) -> dict:
    """Make SIGINT and SIGTERM set ``trainer.stop_requested``; returns the previous handlers."""
    def request_stop(signum, _frame):
        trainer.stop_requested = True
        signal.signal(signal.SIGINT, signal.default_int_handler)
        print(f"\n{signal.Signals(signum).name}: saving latest.pt after this step (Ctrl-C again to abort)",
              file=sys.stderr, flush=True)

    return {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}


@contextmanager
def stop_on_signals(trainer, enabled: bool = True) -> Iterator[None]:
    """The handlers of :func:`install_stop_handlers` for the ``with`` body (none when not ``enabled``: under
    torchrun), the previous ones restored afterwards."""
    previous = install_stop_handlers(trainer) if enabled else {}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            if handler is not None:  # None: a handler not set from Python, which cannot be put back
                signal.signal(sig, handler)


def exit_status(result: Dict[str, Any], trainer) -> int:
    """130 when the run stopped because a signal asked it to (``--stop-after`` is a normal end: 0)."""
    return STOPPED if result.get("stopped") and getattr(trainer, "stop_requested", False) else 0
