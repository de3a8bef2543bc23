"""Tenant runs for tests (:mod:`operators.batching`): records cut into runs of random sizes.

The keyed steps take runs ``(tenant, [record, ...])``; a test feeds them records through
:func:`run_cut` (an engine batch cut into runs at random points, each key's records in order)
and compares against the per-record form (:func:`single_runs`: a run per record).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TypeVar

import bytewax.operators as op
from bytewax.dataflow import Stream
from bytewax.operators import KeyedStream

from operators.batching import RunCut, Runs, runs_on, tenant_runs

X = TypeVar("X")


def cut_runs(
    batch: list[X], key: Callable[[X], str], rng: random.Random, max_run: int = 5
) -> list[tuple[str, list[X]]]:
    """``batch``'s records as runs of 1 to ``max_run`` records of one key, each key's records
    in order; runs of different keys interleave at random."""
    pending = [(k, run) for k, run in tenant_runs(batch, key)]
    pieces: list[list[tuple[str, list[X]]]] = []
    for k, run in pending:
        cut: list[tuple[str, list[X]]] = []
        at = 0
        while at < len(run):
            size = rng.randint(1, max_run)
            cut.append((k, run[at : at + size]))
            at += size
        pieces.append(cut)
    out: list[tuple[str, list[X]]] = []
    while pieces:
        i = rng.randrange(len(pieces))
        out.append(pieces[i].pop(0))
        if not pieces[i]:
            pieces.pop(i)
    return out


def run_cut(key: Callable[[X], str], seed: int, max_run: int = 5) -> RunCut[X]:
    """A cut of each engine batch into random runs (:func:`cut_runs`), seeded."""
    rng = random.Random(seed)

    def cut(batch: list[X]) -> list[tuple[str, list[X]]]:
        return cut_runs(batch, key, rng, max_run)

    return cut


def single_runs(key: Callable[[X], str]) -> RunCut[X]:
    """The per-record form: each record its own run."""

    def cut(batch: list[X]) -> list[tuple[str, list[X]]]:
        return [(key(x), [x]) for x in batch]

    return cut


def random_runs(
    step_id: str, up: Stream[X], key: Callable[[X], str], seed: int, max_run: int = 5
) -> Runs[X]:
    """``up`` as runs keyed by ``key``, cut at random (:func:`run_cut`)."""
    return runs_on(step_id, up, key, run_cut(key, seed, max_run))


def _pairs(batch: list[tuple[str, list[X]]]) -> list[tuple[str, X]]:
    return [(k, x) for k, run in batch for x in run]


def pairs(step_id: str, up: Runs[X]) -> KeyedStream[X]:
    """``up``'s runs as ``(key, record)`` pairs, in order (what a test checks per record)."""
    return op.flat_map_batch(step_id, up, _pairs)
