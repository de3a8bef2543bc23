"""An ``igflow`` command's exit status from what it raised (shared by the CLI's entry point and
the processes :mod:`igflow.local_cluster` forks, which report errors as a lone command does)."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable

from core.errors import IgflowError

__all__ = ["reported"]


def reported(command: str, call: Callable[[], int]) -> int:
    """``call()``'s exit status, or an error's: 2 with its message for an
    :class:`~core.errors.IgflowError`, 1 with the trace and then the igflow cause Bytewax
    wrapped; anything else is raised."""
    try:
        return call()
    except IgflowError as exc:
        print(f"igflow {command}: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        # Bytewax wraps a step's exception in its own; say the cause plainly, after the trace.
        cause = _igflow_cause(exc)
        if cause is None:
            raise
        traceback.print_exception(exc)
        print(f"igflow {command}: {cause}", file=sys.stderr)
        return 1


def _igflow_cause(exc: BaseException) -> IgflowError | None:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, IgflowError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None
