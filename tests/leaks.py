"""The native paths' leak check: memory a workload leaves traced once it has run."""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable, Sequence

__all__ = ["traced_growth"]


def traced_growth(
    run: Callable[[int], object],
    rounds: Sequence[int],
    settle: Callable[[], object] = gc.collect,
) -> int:
    """Bytes traced after ``run(n)`` that were not before it, for the last ``n`` of ``rounds``:
    the earlier runs fill the interpreter's free lists and the code's bounded caches, which are
    no leak. ``settle`` runs before and after each (a collection; a test may clear caches too).
    """
    tracemalloc.start()
    try:
        grown = 0
        for n in rounds:
            settle()
            before = tracemalloc.get_traced_memory()[0]
            run(n)
            settle()
            grown = tracemalloc.get_traced_memory()[0] - before
        return grown
    finally:
        tracemalloc.stop()
