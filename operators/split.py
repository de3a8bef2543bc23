"""Split a stream of two kinds of item into one stream of each, typed, a batch at a time.

Steps emit ``A | B`` (a decoded signal or a reject, a passed signal or a quarantined batch) and
then divide the two. Bytewax's ``branch`` calls its predicate once per item (and types its
``falses`` as the input type, so every step did the split with two ``type: ignore``). Here each
side is one ``op.flat_map_batch`` that keeps its kind of a whole engine batch in one list
comprehension: two Python calls per batch instead of one per item (issue 15, point 1). Both
sides see the same batches in the same order, so each keeps the input's order. Stateless: no
step id here is in a recovery snapshot.

:func:`split_runs` splits a stream of runs (:mod:`operators.batching`): each run of mixed
outputs gives one run of its ``first`` items (none if it has none) and its other items leave
the run world one by one (the rare paths: late records, quarantined batches, psi's rows).
"""

from __future__ import annotations

from typing import TypeVar, cast

import bytewax.operators as op
from bytewax.dataflow import Stream
from bytewax.operators import KeyedStream

__all__ = ["split", "split_runs"]

A = TypeVar("A")
B = TypeVar("B")


def split(
    step_id: str, up: Stream[A | B], first: type[A], second: type[B]
) -> tuple[Stream[A], Stream[B]]:
    """``up``'s items that are a ``first``, and the rest (each a ``second``)."""

    def firsts(batch: list[A | B]) -> list[A]:
        return [x for x in batch if isinstance(x, first)]

    def seconds(batch: list[A | B]) -> list[B]:
        return cast("list[B]", [x for x in batch if not isinstance(x, first)])

    return (
        op.flat_map_batch(f"{step_id}_{first.__name__}", up, firsts),
        op.flat_map_batch(f"{step_id}_{second.__name__}", up, seconds),
    )


def split_runs(
    step_id: str, up: KeyedStream[list[A | B]], first: type[A], second: type[B]
) -> tuple[KeyedStream[list[A]], Stream[B]]:
    """``up``'s runs with only their ``first`` items (still runs, keyed; a run left empty is
    not emitted), and the other items, each a ``second``, unkeyed one by one, in order."""

    def firsts(batch: list[tuple[str, list[A | B]]]) -> list[tuple[str, list[A]]]:
        out: list[tuple[str, list[A]]] = []
        for k, run in batch:
            kept = [x for x in run if isinstance(x, first)]
            if kept:
                out.append((k, kept))
        return out

    def seconds(batch: list[tuple[str, list[A | B]]]) -> list[B]:
        return cast("list[B]", [x for _, run in batch for x in run if not isinstance(x, first)])

    return (
        op.flat_map_batch(f"{step_id}_{first.__name__}", up, firsts),
        op.flat_map_batch(f"{step_id}_{second.__name__}", up, seconds),
    )
