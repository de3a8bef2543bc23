"""The single exception type of the dev stack tooling."""

from __future__ import annotations


class StackError(RuntimeError):
    """A stack operation failed; ``str(exc)`` is a complete, user-facing explanation.

    The CLI prints the message and exits 1 without a traceback, so messages must name the
    service involved and say what the user can do about it.
    """
