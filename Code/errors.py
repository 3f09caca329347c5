"""User-facing errors and the command-line wrapper that turns them into one-line messages.

Any bad input (a missing file, a malformed list, an unknown setting) raises :class:`UserError` with a message that
names the file or the setting. Entry scripts wrap their ``main`` with :func:`run_cli`, which prints
``error: <message>`` on one line to stderr and exits with status 2 instead of showing a traceback.
"""
from __future__ import annotations

import sys
from typing import Callable, Optional, Sequence


class UserError(Exception):
    """A problem with the user's input or settings; its message is shown as one line, without a traceback."""


def run_cli(main: Callable[[Optional[Sequence[str]]], Optional[int]], argv: Optional[Sequence[str]] = None) -> None:
    """Call ``main(argv)``; exit with its return code, or print a :class:`UserError` as one line and exit 2."""
    try:
        code = main(argv)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:  # output piped into e.g. `head`, which closed early
        sys.stderr.close()
        sys.exit(141)
    sys.exit(int(code or 0))
