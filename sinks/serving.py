"""What the serving sinks share: a Bytewax partition that writes in chunks, each with retries.

Each store module (``sinks/redis.py``, ``sinks/graph.py``, ``sinks/postgres.py``) owns its writer
(connect, one idempotent batch write, close) and says which errors are transient; this partition
cuts every ``write_batch`` into chunks of ``stores.batch_size`` items and writes each with
:func:`~core.retry.write_with_retry` under the ``stores.retry_*`` policy. A chunk that still
fails goes to the DLQ topic (``SINK_UNAVAILABLE``) and the flow goes on.

A sink takes the stores section (:class:`~core.settings.StoreSettings`) and the DLQ it
dead-letters to (:class:`~sinks.dlq.DeadLetterTarget`), not the whole settings.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

from bytewax.outputs import DynamicSink, StatelessSinkPartition

from core.retry import RetryPolicy, write_with_retry
from core.settings import StoreSettings
from sinks.dlq import DeadLetterTarget, SinkDeadLetters

__all__ = ["RetryingPartition", "ServingSink", "StoreWriter", "retry_policy"]

T = TypeVar("T")
T_contra = TypeVar("T_contra", contravariant=True)


class StoreWriter(Protocol[T_contra]):
    """One store's writer: an idempotent batch write."""

    def write(self, batch: Sequence[T_contra]) -> None: ...


class ServingSink(DynamicSink[T]):
    """A serving store's Bytewax sink: what it is built from. Each store's subclass builds its
    writer into a :class:`RetryingPartition` per worker."""

    def __init__(self, stores: StoreSettings, dead_letters: DeadLetterTarget) -> None:
        self._stores = stores
        self._dead_letters = dead_letters


def retry_policy(stores: StoreSettings) -> RetryPolicy:
    """The ``stores.retry_*`` policy of one batch write."""
    return RetryPolicy(stores.retry_attempts, stores.retry_base_seconds, stores.retry_cap_seconds)


class RetryingPartition(StatelessSinkPartition[T]):
    """Writes each batch in chunks, each with retries, then dead-letters what still fails.

    ``prepare`` (optional) turns the items of one ``write_batch`` into the rows to write: it may
    collapse them (Postgres keeps each tenant's newest change) or hand items no retry can help
    to the dead-letter callback it is given (the graph's unstorable strings).
    """

    def __init__(
        self,
        sink: str,
        writer: StoreWriter[T],
        stores: StoreSettings,
        dead_letters: DeadLetterTarget,
        *,
        transient: Callable[[BaseException], bool],
        prepare: Callable[[list[T], SinkDeadLetters], list[T]] | None = None,
        close: Callable[[], None] | None = None,
    ) -> None:
        self._sink = sink
        self._writer = writer
        self._batch_size = max(1, stores.batch_size)
        self._transient = transient
        self._prepare = prepare
        self._close = close
        self._dead_letter = dead_letters.for_sink(sink)
        self._policy = retry_policy(stores)

    def write_batch(self, items: list[T]) -> None:
        if self._prepare is not None:
            items = self._prepare(items, self._dead_letter)
        for start in range(0, len(items), self._batch_size):
            write_with_retry(
                self._sink,
                items[start : start + self._batch_size],
                self._writer.write,
                transient=self._transient,
                dead_letter=self._dead_letter,
                policy=self._policy,
            )

    def close(self) -> None:
        if self._close is not None:
            self._close()
