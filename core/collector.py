"""The cyclic garbage collector, tuned for a running flow (``run.gc_oldest_threshold``).

A flow keeps many records alive at once: Bytewax's queues between steps, the lake's open
batches, drift's held records, dedupe's keys. CPython's collector traverses all of them on every
collection of its oldest generation, which by default runs after 10 collections of the middle
one. Measured on a lake-only run of 200,000 signals (``benchmarks/ingest.py --only w1 --against``,
3 rounds alternately, medians): 15.1 s wall and 14.3 CPU s with the defaults, 10.9 s and 10.4
CPU s with the start-up objects frozen out of the collector's reach and the oldest generation
collected after 1,000 middle ones; RSS ~0.7 GB either way.

The young generations are left as they are: they find short-lived cycles as soon as before.
"""

from __future__ import annotations

import gc

__all__ = ["tune_for_flow"]


def tune_for_flow(oldest_threshold: int) -> tuple[int, int, int]:
    """Freeze what start-up built (modules, the dataflow, the clients) into the permanent
    generation and collect the oldest generation after ``oldest_threshold`` collections of the
    middle one; ``0`` leaves the collector as the interpreter set it. Returns the thresholds in
    force."""
    if oldest_threshold:
        gc.collect()
        gc.freeze()
        young, middle, _oldest = gc.get_threshold()
        gc.set_threshold(young, middle, oldest_threshold)
    return gc.get_threshold()
