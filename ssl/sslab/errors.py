"""User-facing errors: a mistake in a config, the data, a checkpoint or a launch.

A :class:`SslabError` message is one line, ``<what was wrong, with the value>; <the way out>``.
Entry points print it as ``sslab: error: <message>`` on stderr and exit with status 2, without a
traceback, once per run: only the process of rank 0 prints, the others exit silently with the same
status. Anything else (a bug of ours) keeps its traceback. ``SSLAB_DEBUG=1`` or ``--debug`` shows
the traceback of a user error too.

The handler is a ``sys.excepthook`` installed when ``sslab`` is imported (:func:`install_handler`),
so it covers every entry point (recipes run as scripts, ``torchrun``/``accelerate launch`` workers,
every ``python -m sslab.*`` command), including a mistake in a recipe's ``Config(...)`` call that
happens before any of our code runs.
"""

from __future__ import annotations

import atexit
import os
import sys

EXIT_STATUS = 2  # argparse's status for a usage error


class SslabError(ValueError):
    """A user's mistake, caught before compute where possible; the message stands alone on one line."""


def debug_requested(argv: list[str] | None = None) -> bool:
    """True when ``SSLAB_DEBUG`` is set (not 0/false) or ``--debug`` is on the command line."""
    env = os.environ.get("SSLAB_DEBUG", "").strip().lower()
    return env not in ("", "0", "false", "no", "off") or "--debug" in (sys.argv if argv is None else argv)


def is_rank_zero() -> bool:
    """Whether this process prints for the run (``RANK`` is set by torchrun and accelerate launch)."""
    return os.environ.get("RANK", "0") in ("", "0")


def one_line(exc: BaseException) -> str:
    """The message of a user error as one line.

    A DataLoader worker's error comes back re-raised with the worker's traceback in its message;
    its last line is the original message.
    """
    text = str(exc).strip()
    if "\n" in text:
        last = text.splitlines()[-1].strip()
        # "sslab.data.image_folder.BadImageError: cannot decode ..." -> the message itself
        head, sep, rest = last.partition(": ")
        text = rest if sep and head.split(".")[-1] == type(exc).__name__ else last
    return text


def report(exc: BaseException, file=None) -> None:
    """Print ``sslab: error: <message>`` for rank 0 (other ranks stay silent)."""
    if is_rank_zero():
        print(f"sslab: error: {one_line(exc)}", file=file or sys.stderr, flush=True)


def _hook(exc_type, exc, tb) -> None:
    if not issubclass(exc_type, SslabError) or debug_requested():
        _previous_hook(exc_type, exc, tb)
        return
    report(exc)
    # The interpreter would exit with status 1 after an uncaught exception; a usage error is 2.
    # Run the exit handlers (loggers, process groups) first, as a normal exit would.
    try:
        sys.stdout.flush()
        atexit._run_exitfuncs()
    finally:
        sys.stderr.flush()
        os._exit(EXIT_STATUS)


_previous_hook = sys.excepthook


def install_handler() -> None:
    """Make an uncaught :class:`SslabError` print one line and exit 2 (once; keeps a custom hook alone)."""
    global _previous_hook
    if sys.excepthook is _hook:
        return
    if sys.excepthook is not sys.__excepthook__:  # IPython, a debugger, ...: do not take over
        return
    _previous_hook = sys.excepthook
    sys.excepthook = _hook
