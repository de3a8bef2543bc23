"""The cyclic garbage collector, tuned for a running flow (``run.gc_oldest_threshold``).

A flow keeps many records alive at once: Bytewax's queues between steps, the lake's open
batches, drift's held records, dedupe's keys. CPython's collector traverses all of them on every
collection of its oldest generation, which by default runs after 10 collections of the middle
one. Measured on a lake-only run of 200,000 signals (``benchmarks/ingest.py --only w1 --against``,
3 rounds alternately, medians): 15.1 s wall and 14.3 CPU s with the defaults, 10.9 s and 10.4
CPU s with the start-up objects frozen out of the collector's reach and the oldest generation
collected after 1,000 middle ones; RSS ~0.7 GB either way.

The young generations are left as they are: they find short-lived cycles as soon as before.

Start-up (a flow command's imports, its clients, the dataflow's build) runs with the collector
paused (:func:`starting`): it builds ~150,000 long-lived objects and ~5,400 in cycles, and the
collections it triggered found nothing to free (a full collection right after the imports freed
0 objects). :func:`tune_for_flow` then freezes what start-up built without collecting first: the
collection cost 30-75 ms and freed only those ~5,400 objects (a one-off few hundred KB kept
frozen). Measured on a 10-signal `igflow run` (the start-up alone), 3 runs each: 0.80 CPU s to
the end of start-up against 0.87 (paused, collected) and 0.89-0.93 (as before).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["starting", "tune_for_flow"]


@contextmanager
def starting() -> Iterator[None]:
    """The collector paused for a flow command's start-up: until :func:`tune_for_flow` turns it
    on in the block, or the block's end (a command that fails before its flow runs) restores it
    as it was."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def tune_for_flow(oldest_threshold: int) -> tuple[int, int, int]:
    """Freeze what start-up built (modules, the dataflow, the clients) into the permanent
    generation, uncollected, and collect the oldest generation after ``oldest_threshold``
    collections of the middle one; ``0`` leaves the thresholds as the interpreter set them and
    freezes nothing. Either way the collector is on afterwards (:func:`starting` paused it).
    Returns the thresholds in force."""
    if oldest_threshold:
        gc.freeze()
        young, middle, _oldest = gc.get_threshold()
        gc.set_threshold(young, middle, oldest_threshold)
    gc.enable()
    return gc.get_threshold()
