"""The mode of a file written atomically: what ``open()`` would have given it under the user's umask.

Atomic writes go through ``tempfile.mkstemp``, which creates the temporary file with mode 0600 whatever the umask;
renamed into place it would keep that mode. Before the rename the writers set :func:`user_file_mode`, i.e.
``0o666 & ~umask`` (0644 under the usual umask 022, 0664 under 002, 0640 under 027).
"""
from __future__ import annotations

import os


def current_umask() -> int:
    """The process's umask, read from ``/proc/self/status`` where it is there (Linux ≥ 4.7), so that no other
    thread ever runs under a changed umask; elsewhere by setting and restoring it."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def user_file_mode() -> int:
    """``0o666 & ~umask``: the permission bits a new regular file gets from ``open()``."""
    return 0o666 & ~current_umask()
