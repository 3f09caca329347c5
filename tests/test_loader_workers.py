"""DataLoader workers' life cycle (Code/engine/data.py, Code/engine/worker_signals.py): they live in a process group
of their own (a group signal sent while one starts waits until it has left), still obey their parent's SIGTERM,
and the trainers shut them down themselves instead of leaving it to garbage collection. A terminal's group
signal that saves ``latest.pt``: tests/test_run_folder.py::test_group_signal_with_loader_workers_saves.
"""
import multiprocessing
import os
import signal
import subprocess
import sys

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from Code.engine.data import BatchStream
from Code.engine.worker_signals import isolate_worker
from Code.engine.run_folder import REPO_ROOT
from helpers import SMOKE_CONFIG, SUBPROCESS_ENV as ENV


class _Numbers(Dataset):
    def set_epoch(self, epoch):  # the stream's datasets are told the epoch (augmentation seeds)
        pass

    def __len__(self):
        return 8

    def __getitem__(self, index):
        return torch.tensor(index)


def _ignored_signals() -> set:
    """The signals this process ignores, read from the kernel (``SigIgn`` of /proc/self/status)."""
    line = next(l for l in open("/proc/self/status") if l.startswith("SigIgn:"))
    mask = int(line.split()[1], 16)
    return {number for number in range(1, 65) if mask >> (number - 1) & 1}


class _WorkerProcess(Dataset):
    """Reports, from inside the worker, its process group and the signals it ignores."""

    def __len__(self):
        return 1

    def __getitem__(self, index):
        return {"pgid": os.getpgid(0), "ignored": _ignored_signals()}


def _loader_workers():
    return [p for p in multiprocessing.active_children() if p.daemon]


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads the kernel's signal masks (Linux)")
def test_worker_leaves_the_process_group_and_obeys_sigterm():
    """Mutations checked: without ``os.setpgid`` the worker shares the test's process group (a terminal's Ctrl-C or
    ``kill -- -PGID`` would reach it); a worker that ignores SIGTERM (the fix this replaced) fails the second check,
    and ``terminate()`` could not stop it."""
    loader = DataLoader(_WorkerProcess(), batch_size=None, num_workers=1, worker_init_fn=isolate_worker)
    (seen,) = list(loader)
    assert seen["pgid"] != os.getpgid(0)
    assert signal.SIGTERM not in seen["ignored"]


def test_batch_stream_close_stops_its_workers():
    """An endless stream's workers never finish on their own; ``close()`` must stop them at once. Mutation checked:
    a ``close()`` that keeps the iterator leaves the worker alive here."""
    stream = BatchStream(_Numbers(), batch_size=2, seed=0, stream=0, num_workers=1)
    first = next(stream)
    assert _loader_workers(), "the stream should have started a worker"
    stream.close()
    assert not _loader_workers()
    again = next(stream)  # restarts at the batch it would have given next
    assert not torch.equal(first, again)
    stream.close()


def test_trainer_exits_without_garbage_collection(phantom_split, tmp_path):
    """seg_train.py with loader workers and the garbage collector off must still exit. A stream left open until
    interpreter exit met multiprocessing's exit handler, whose terminate() a SIGTERM-ignoring worker survived and
    whose join() then waited for ever: a CI run hung so when the collector had not freed the trainer in time.
    Mutation checked: with workers that ignore SIGTERM and no ``Trainer.close()`` this run hangs."""
    code = ("import gc, runpy, sys; gc.disable(); sys.path.insert(0, 'Code'); "
            "sys.argv = ['Code/seg_train.py'] + sys.argv[1:]; runpy.run_path('Code/seg_train.py', run_name='__main__')")
    cmd = [sys.executable, "-c", code, "--config", str(SMOKE_CONFIG), "--data",
           str(phantom_split), "--labels", "4", "--out", str(tmp_path / "run"), "--set", "data.num_workers=1"]
    try:
        done = subprocess.run(cmd, cwd=REPO_ROOT, env=ENV, capture_output=True, text=True, timeout=240)
    except subprocess.TimeoutExpired as hung:
        raise AssertionError(f"seg_train.py did not exit; stderr tail: {str(hung.stderr)[-1500:]}") from None
    assert done.returncode == 0, done.stderr[-2000:]
    assert "test metrics at the final step" in done.stdout


_SLOW_WORKER_START = """
import signal, sys, time
from Code.engine.worker_signals import GroupSafeDataLoader, isolate_worker
received = []
signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
def slow_start(worker_id):  # a worker forked but not yet out of the group, held there for 3 s
    print("forked", flush=True)
    time.sleep(3)
    isolate_worker(worker_id)
loader = GroupSafeDataLoader([0, 1, 2, 3], batch_size=None, num_workers=1, worker_init_fn=slow_start)
print(list(loader), received, flush=True)
"""


@pytest.mark.skipif(not hasattr(signal, "pthread_sigmask"), reason="POSIX signal masks")
def test_group_signal_between_fork_and_isolation_spares_the_worker():
    """A group SIGTERM that arrives after a worker is forked but before ``isolate_worker`` has moved it out of the
    group (evaluation forks workers every time; a CI run once died so) must reach the main process only. Mutation
    checked: a plain DataLoader here dies on "DataLoader worker ... exited unexpectedly"."""
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_WORKER_START], cwd=REPO_ROOT, env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    assert proc.stdout.readline().strip() == "forked"
    os.killpg(proc.pid, signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    assert out.strip() == f"[0, 1, 2, 3] [{int(signal.SIGTERM)}]"


_PARENT_STOPS_A_STARTING_WORKER = """
import multiprocessing, os, signal, time
from Code.engine.worker_signals import GroupSafeDataLoader, isolate_worker
def slow_start(worker_id):
    time.sleep(3)
    isolate_worker(worker_id)
batches = iter(GroupSafeDataLoader([0, 1], batch_size=None, num_workers=1, worker_init_fn=slow_start))
signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # else PyTorch's handler may raise on the death this test causes
time.sleep(1)
(worker,) = multiprocessing.active_children()
os.kill(worker.pid, signal.SIGTERM)
worker.join(30)
print("stopped" if worker.exitcode is not None else "still running", flush=True)
"""


@pytest.mark.skipif(not hasattr(signal, "sigwaitinfo"), reason="reads the sender of a pending signal (Linux)")
def test_parent_sigterm_before_isolation_still_stops_the_worker():
    """The pending signals a starting worker discards are the group's, not its parent's: a SIGTERM from the main
    process (a DataLoader's ``terminate()``) still stops it. Mutation checked: discarding every pending signal
    leaves the worker running."""
    done = subprocess.run([sys.executable, "-c", _PARENT_STOPS_A_STARTING_WORKER], cwd=REPO_ROOT, env=ENV,
                          capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "stopped", done.stderr[-2000:]
