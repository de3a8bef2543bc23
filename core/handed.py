"""A batch handed from a step to an asynchronous sink, with its acknowledgement.

The lake's collect (:func:`operators.collect.collect_batches`) emits each lane batch as a
:class:`Handed` list; the lake sink (:mod:`sinks.lake_group`) queues it for its table's writer
thread and calls :meth:`Handed.ack` once the Iceberg commit holding its rows succeeded. Until
then the collect keeps the batch in its recovery snapshot, and a resumed collect emits it again
before anything newer of its key; the lake's ledger skips the rows that did commit. So a crash
between the worker's hand-over and the commit loses nothing, and Bytewax may count the epoch
done as soon as the sink queued the batch.

The acknowledgement is an in-process flag on the very object the step emitted: a step and the
sink it feeds run on the same worker (a ``DynamicSink`` does not move items between workers).
Pickled (a worker crossing, a snapshot), a :class:`Handed` becomes a plain list: an
acknowledgement belongs to the process that made the object.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

__all__ = ["Handed"]

V = TypeVar("V")


class Handed(list[V]):
    """A list of items a step handed downstream; :attr:`acked` once its sink made it durable."""

    __slots__ = ("acked",)

    def __init__(self, items: Iterable[V] = ()) -> None:
        super().__init__(items)
        self.acked = False

    def ack(self) -> None:
        """The sink made every item durable (called from the sink's writer thread; a bool
        assignment, atomic under the GIL)."""
        self.acked = True

    def __reduce__(self) -> tuple[Any, ...]:
        return (list, (list(self),))
