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

from collections.abc import Callable
from typing import Any, TypeVar

import bytewax.operators as op
from bytewax.dataflow import Stream
from bytewax.operators import KeyedStream

from core import _native

__all__ = ["split", "split_runs"]

A = TypeVar("A")
B = TypeVar("B")


def _kind_of(first: type[Any]) -> Callable[[list[Any], bool], list[Any]]:
    """``kind(items, want)``: the items of a list that are (``want``) or are not ``first``s, in
    order, in a new list: in C (``core._native.kind_of``: 2-3 against 15-20 ns an item, session 30)
    for a plain class, else the comprehension (a class with its own ``__instancecheck__``)."""

    def python(items: list[Any], want: bool) -> list[Any]:
        return [x for x in items if isinstance(x, first) == want]

    if type(first) is not type:
        return python

    def native(items: list[Any], want: bool) -> list[Any]:
        return (
            _native.kind_of(items, first, want) if isinstance(items, list) else python(items, want)
        )

    return native


def split(
    step_id: str, up: Stream[A | B], first: type[A], second: type[B]
) -> tuple[Stream[A], Stream[B]]:
    """``up``'s items that are a ``first``, and the rest (each a ``second``)."""
    kind = _kind_of(first)

    def firsts(batch: list[A | B]) -> list[A]:
        return kind(batch, True)

    def seconds(batch: list[A | B]) -> list[B]:
        return kind(batch, False)

    return (
        op.flat_map_batch(f"{step_id}_{first.__name__}", up, firsts),
        op.flat_map_batch(f"{step_id}_{second.__name__}", up, seconds),
    )


def split_runs(
    step_id: str, up: KeyedStream[list[A | B]], first: type[A], second: type[B]
) -> tuple[KeyedStream[list[A]], Stream[B]]:
    """``up``'s runs with only their ``first`` items (still runs, keyed; a run left empty is
    not emitted), and the other items, each a ``second``, unkeyed one by one, in order."""

    kind = _kind_of(first)

    def firsts(batch: list[tuple[str, list[A | B]]]) -> list[tuple[str, list[A]]]:
        out: list[tuple[str, list[A]]] = []
        for k, run in batch:
            kept = kind(run, True)
            if kept:
                out.append((k, kept))
        return out

    def seconds(batch: list[tuple[str, list[A | B]]]) -> list[B]:
        out: list[B] = []
        for _, run in batch:
            out += kind(run, False)
        return out

    return (
        op.flat_map_batch(f"{step_id}_{first.__name__}", up, firsts),
        op.flat_map_batch(f"{step_id}_{second.__name__}", up, seconds),
    )
