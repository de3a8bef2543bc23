"""An ``igflow`` command's exit status from what it raised (shared by the CLI's entry point and
the processes :mod:`igflow.local_cluster` forks, which report errors as a lone command does)."""

from __future__ import annotations

import signal
import sys
import traceback
from collections.abc import Callable

from core.errors import IgflowError, in_chain

__all__ = ["reported"]


def reported(command: str, call: Callable[[], int]) -> int:
    """``call()``'s exit status, or an error's: 2 with its message for an
    :class:`~core.errors.IgflowError`, 1 with the trace and then the igflow cause Bytewax
    wrapped, 128 + the signal's number for a stop by SIGINT or SIGTERM (a line, no trace);
    anything else is raised."""
    try:
        return call()
    except KeyboardInterrupt as exc:
        # A signal stopped it (core.shutdown's handler names it; a bare Ctrl-C names nothing).
        name = str(exc.args[0]) if exc.args else "SIGINT"
        signum = signal.Signals.__members__.get(name, signal.SIGINT)
        print(f"igflow {command}: stopped by {signum.name}", file=sys.stderr)
        return 128 + signum
    except IgflowError as exc:
        print(f"igflow {command}: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        # Bytewax wraps a step's exception in its own; say the cause plainly, after the trace.
        cause = in_chain(exc, IgflowError)
        if cause is None:
            raise
        traceback.print_exception(exc)
        print(f"igflow {command}: {cause}", file=sys.stderr)
        return 1
