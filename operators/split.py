"""Split a stream of two kinds of item into one stream of each, typed.

Steps emit ``A | B`` (a decoded signal or a reject, a passed signal or a quarantined batch) and
then divide the two. Bytewax's ``branch`` types its ``falses`` as the input type (a predicate
can only narrow what passes), so every step did the split with two ``type: ignore``; here it is
written once. The step is ``op.branch(step_id, ...)`` exactly, so step ids (and recovery
snapshots) are unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import bytewax.operators as op
from bytewax.dataflow import Stream
from bytewax.operators import KeyedStream

__all__ = ["split", "split_keyed"]

A = TypeVar("A")
B = TypeVar("B")
X = TypeVar("X")


def split(
    step_id: str, up: Stream[A | B], first: type[A], second: type[B]
) -> tuple[Stream[A], Stream[B]]:
    """``up``'s items that are a ``first``, and the rest (each a ``second``)."""
    return _split(step_id, up, lambda item: isinstance(item, first))


def split_keyed(
    step_id: str, up: KeyedStream[A | B], first: type[A], second: type[B]
) -> tuple[KeyedStream[A], KeyedStream[B]]:
    """``up``'s ``(key, value)`` pairs whose value is a ``first``, and the rest (a ``second``),
    still keyed."""
    return _split(step_id, up, lambda kv: isinstance(kv[1], first))


def _split(
    step_id: str, up: Stream[X], is_first: Callable[[X], bool]
) -> tuple[Stream[Any], Stream[Any]]:
    branch = op.branch(step_id, up, is_first)
    # The one cast: the callers' signatures say that ``up`` holds items of exactly two kinds
    # and ``is_first`` is an isinstance test of the first, so ``trues`` holds only the first
    # kind and ``falses`` only the second; no Python type can say "X less A" for the falses.
    return cast("tuple[Stream[Any], Stream[Any]]", (branch.trues, branch.falses))
