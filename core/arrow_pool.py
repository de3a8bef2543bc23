"""Which allocator Arrow's buffers come from in an ``igflow`` process (``run.arrow_memory_pool``).

pyarrow's wheels default to mimalloc. Measured on a lake-only ``igflow run`` of 200,000 signals
(session 27, docs/performance.md "Session 27", 4 alternating rounds each): with jemalloc the
process took 6.1 s and 6.8 CPU s (1.0 of them in the kernel) and peaked at 550 MB RSS, against
7.2 s, 8.3 CPU s (2.1) and 617 MB with mimalloc. The lake writer builds, encodes and drops tens
of MB of Arrow buffers per append, and mimalloc hands those pages back to the kernel, and faults
them in again, more eagerly. So the flow's commands pick jemalloc by default.

Arrow reads its choice once, from ``ARROW_DEFAULT_MEMORY_POOL``, when pyarrow is imported; its
C++ code (Parquet writes, compute kernels) allocates from that pool whatever pyarrow's
``set_memory_pool`` says later (measured: that call alone changed nothing). So
:func:`choose_pool` sets the variable, and must run before anything imports pyarrow:
``igflow.cli.main`` calls it for every command, before the command runs. A variable already set
(by whoever started the process) wins, and a child process inherits the choice. A pyarrow built
without the pool named warns on standard error and keeps its default.
"""

from __future__ import annotations

import logging
import os
import sys

__all__ = ["POOLS", "choose_pool"]

log = logging.getLogger(__name__)

#: The pools a flow can ask for, by Arrow's names for them.
POOLS = ("jemalloc", "mimalloc", "system")
_VARIABLE = "ARROW_DEFAULT_MEMORY_POOL"


def choose_pool(name: str) -> str | None:
    """Make ``name`` (one of :data:`POOLS`) Arrow's pool in this process, unless
    ``ARROW_DEFAULT_MEMORY_POOL`` names one already; returns the pool Arrow will use, or
    ``None`` (and says why at debug level) if pyarrow was imported before: its pool is chosen
    then. Not a warning: a process that imported pyarrow before calling ``igflow.cli.main`` (a
    test, a program embedding the commands) chose its pool itself, and the commands' own
    order is held by ``tests/unit/test_arrow_pool.py`` (the pool they get is the setting's)."""
    if "pyarrow" in sys.modules:
        log.debug(
            "Arrow's memory pool was chosen before run.arrow_memory_pool (%s) could be",
            name,
            extra={"op": "run.arrow_pool"},
        )
        return None
    return os.environ.setdefault(_VARIABLE, name)
