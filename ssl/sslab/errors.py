"""User-facing errors: a mistake in a config, the data, a checkpoint or a launch.

A :class:`SslabError` message is one line, ``<what was wrong, with the value>; <the way out>``.
Entry points print it as ``sslab: error: <message>`` on stderr and exit non-zero, without a
traceback; anything else (a bug of ours) keeps its traceback.
"""

from __future__ import annotations


class SslabError(ValueError):
    """A user's mistake, caught before compute where possible; the message stands alone on one line."""
