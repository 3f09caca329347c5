"""DataLoader workers and a terminal's group signals (Ctrl-C, ``kill -- -PGID``, a batch scheduler's SIGTERM).

Such a signal reaches every process of the foreground group. The main process answers it by saving ``latest.pt``
after the current step; a worker must not die of it first, or the main process fails on "DataLoader worker ...
exited unexpectedly" instead. So each worker leaves the group (:func:`isolate_worker`), and, because a worker is
forked (at every evaluation, for instance) before its ``worker_init_fn`` runs, :class:`GroupSafeDataLoader` forks
it with SIGINT and SIGTERM blocked: a group signal that arrives in between waits, pending, and
:func:`isolate_worker` discards it once the worker is in its own group. The main process's copy is delivered as
soon as the fork is done.
"""
from __future__ import annotations

import os
import signal
from contextlib import contextmanager
from typing import Iterator

from torch.utils.data import DataLoader

GROUP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM})
_CAN_MASK = hasattr(signal, "pthread_sigmask")


@contextmanager
def group_signals_blocked() -> Iterator[None]:
    """Block SIGINT and SIGTERM in this thread (and so in processes it forks) for the ``with`` body."""
    if not _CAN_MASK:
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, GROUP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _discard_pending_group_signals() -> bool:
    """Take the pending SIGINT / SIGTERM off this process; True when one was a SIGTERM from the parent (a
    DataLoader shutting its workers down), which the caller must raise again. Without ``sigwaitinfo`` (macOS) the
    sender is unknown and every pending one is discarded."""
    from_parent = False
    while pending := signal.sigpending() & GROUP_SIGNALS:
        if hasattr(signal, "sigwaitinfo"):
            info = signal.sigwaitinfo(pending)
            from_parent |= info.si_signo == signal.SIGTERM and info.si_pid == os.getppid()
        else:
            signal.sigwait(pending)
    return from_parent


def isolate_worker(_worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: the worker leaves the main process's process group.

    In a group of its own a worker never sees a terminal's signals, so they cannot kill the workers before the main
    process has saved ``latest.pt``; the ones that reached it before it left (blocked since the fork, see
    :class:`GroupSafeDataLoader`) are discarded here. SIGTERM sent to the worker by its parent keeps PyTorch's
    handling (exit): the DataLoader's ``terminate()``, and multiprocessing's at interpreter exit, still stop it. (A
    worker that ignored SIGTERM instead hung the exit for ever when its loader was still open there.) Workers also
    stop when the main process dies (PyTorch's watchdog)."""
    os.setpgid(0, 0)
    if not _CAN_MASK:
        return
    from_parent = _discard_pending_group_signals()
    signal.pthread_sigmask(signal.SIG_UNBLOCK, GROUP_SIGNALS)
    if from_parent:
        os.kill(os.getpid(), signal.SIGTERM)


class GroupSafeDataLoader(DataLoader):
    """A DataLoader whose workers start with SIGINT and SIGTERM blocked until :func:`isolate_worker` (pass it as
    ``worker_init_fn``) has moved them out of the terminal's process group."""

    def __iter__(self):
        with group_signals_blocked():
            return super().__iter__()
