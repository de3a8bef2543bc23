"""Writer errors raised on a worker, counted per process: which a closing sink must not raise.

The lake's writer thread (:class:`~sinks.lake_group.GroupCommit`) and each serving store's
(:class:`~sinks.store_pipeline.StorePipeline`) raise their error on the worker, from its next
call (a submit, a put, a snapshot, ``close``). Bytewax 0.21 closes a sink partition in its
``Drop``: once one error is raised, the worker unwinds and closes every other sink, and a
``close`` that raised there too was a panic within a panic, which aborts the process (SIGABRT,
no traceback). That happened with two writers failing at once (two stores down together), and
with two failures both first seen by ``close`` at the end of a bounded run.

So each raise on a worker is counted here, and a sink that closes after a raise it did not make
(the count passed the one it saw when it was built) leaves its own error unraised: its writer
thread logged it when it stopped, and the flow is failing with the first. The count is a
process's, not a flow's: a flow built after another failed starts from the count it sees.
"""

from __future__ import annotations

import threading

__all__ = ["raised", "raised_on_worker"]

_lock = threading.Lock()
_raised = 0


def raised_on_worker() -> None:
    """Count one writer error raised on a worker (just before raising it)."""
    global _raised
    with _lock:
        _raised += 1


def raised() -> int:
    """The writer errors raised on this process's workers so far."""
    with _lock:
        return _raised
