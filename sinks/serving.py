"""What the serving sinks share: a Bytewax partition that writes off the worker's critical path.

Each store module (``sinks/redis.py``, ``sinks/graph.py``, ``sinks/postgres.py``) owns its writer
(connect, one idempotent batch write, close) and says which errors are transient. Its sink is a
:class:`ServingSink`, a Bytewax ``FixedPartitionedSink`` of one partition per store, fed items
keyed by tenant (:func:`serve`). The partition (:class:`PipelinedPartition`) hands every
``write_batch`` to a :class:`~sinks.store_pipeline.StorePipeline`: one writer thread takes the
items in order, in chunks of at most ``stores.batch_size``, and writes each with
:func:`~core.retry.write_with_retry` under the ``stores.retry_*`` policy; a chunk that still
fails goes to the DLQ topic (``SINK_UNAVAILABLE``) and the flow goes on.

The worker waits only when a store holds ``stores.max_in_flight`` batches unacknowledged
(backpressure with bounded memory). The partition's recovery snapshot is what it holds
unacknowledged, written again first on resume (the writes are idempotent), so a crash loses
nothing that was in flight. A clean end (``close``) drains the pipeline before it returns.

A sink takes the stores section (:class:`~core.settings.StoreSettings`) and the DLQ it
dead-letters to (:class:`~sinks.dlq.DeadLetterTarget`), not the whole settings.
"""

from __future__ import annotations

import functools
import hashlib
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

import bytewax.operators as op
from bytewax.operators import KeyedStream
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from core import tracing
from core.records import ScoreChange, Tagged
from core.retry import RetryPolicy, write_with_retry
from core.settings import StoreSettings
from sinks.dlq import DeadLetterTarget, SinkDeadLetters
from sinks.store_pipeline import StorePipeline
from tenancy.sealed_state import SealedState, StateSeal, open_sealed

__all__ = [
    "PipelinedPartition",
    "SealedSink",
    "ServingSink",
    "StoreWriter",
    "retry_policy",
    "serve",
    "tenant_and_score_lanes",
    "tenant_of",
]

T = TypeVar("T")
T_contra = TypeVar("T_contra", contravariant=True)

#: The partitions of every serving sink: one writer (thread, connection) per store. A tenant
#: always maps to the same partition, which keeps its items in order.
_PARTS = ["0"]


class StoreWriter(Protocol[T_contra]):
    """One store's writer: an idempotent batch write."""

    def write(self, batch: Sequence[T_contra]) -> None: ...


def tenant_of(item: Tagged | ScoreChange) -> str:
    """The tenant a serving store's item belongs to (the key that keeps its order)."""
    return item.tenant_id if isinstance(item, ScoreChange) else item.signal.tenant_id


def serve(
    step_id: str,
    up: KeyedStream[list[T]],
    sink: ServingSink[T],
    seal: StateSeal | None = None,
) -> None:
    """Write ``up``'s items (runs of score changes or tagged signals, keyed by their tenant) to
    ``sink``, each item keyed by its run's tenant; with ``seal``, the partitions' snapshots (the
    items not yet acknowledged) are sealed per tenant (:class:`SealedSink`)."""
    # A batch at a time, the key taken from the run (no per-item key function); stateless, so
    # no snapshot names it.
    keyed = op.flat_map_batch(f"{step_id}_by_tenant", up, _keyed)
    op.output(step_id, keyed, SealedSink(sink, seal))


def _keyed(batch: list[tuple[str, list[Any]]]) -> list[tuple[str, Any]]:
    """``(tenant, item)`` for each item of each run of a batch, in order."""
    return [(tenant, item) for tenant, run in batch for item in run]


class SealedSink(FixedPartitionedSink[T, Any]):
    """``inner`` with each partition's resume state opened and its snapshots sealed per tenant
    (:mod:`tenancy.sealed_state`; the step id the column, the partition the row); with no
    ``seal`` (``seal.enabled`` off) snapshots stay plain and a sealed one refuses to resume."""

    def __init__(self, inner: FixedPartitionedSink[T, Any], seal: StateSeal | None) -> None:
        self._inner = inner
        self._seal = seal

    def list_parts(self) -> list[str]:
        return self._inner.list_parts()

    def part_fn(self, item_key: str) -> int:
        return self._inner.part_fn(item_key)

    def build_part(
        self, step_id: str, for_part: str, resume_state: Any | None
    ) -> StatefulSinkPartition[T, Any]:
        if isinstance(resume_state, SealedState):
            sealer = None if self._seal is None else self._seal.sealer
            resume_state = open_sealed(sealer, step_id, resume_state, for_part)
        part = self._inner.build_part(step_id, for_part, resume_state)
        if self._seal is None:
            return part
        return _SealedPartition(part, self._seal, step_id, for_part)


class _SealedPartition(StatefulSinkPartition[T, Any]):
    """A partition whose snapshot is sealed (:class:`SealedSink`)."""

    def __init__(
        self, inner: StatefulSinkPartition[T, Any], seal: StateSeal, step: str, key: str
    ) -> None:
        self._inner = inner
        self._seal = seal
        self._step = step
        self._key = key

    def write_batch(self, values: list[T]) -> None:
        self._inner.write_batch(values)

    def snapshot(self) -> Any:
        return self._seal.seal(self._step, self._key, self._inner.snapshot())

    def close(self) -> None:
        self._inner.close()


def retry_policy(stores: StoreSettings) -> RetryPolicy:
    """The ``stores.retry_*`` policy of one batch write."""
    return RetryPolicy(stores.retry_attempts, stores.retry_base_seconds, stores.retry_cap_seconds)


class ServingSink(FixedPartitionedSink[T, list[T]]):
    """A serving store's Bytewax sink: what it is built from. Each store's subclass builds its
    writer into a :class:`PipelinedPartition` (``build_part``), resumed from the partition's
    snapshot: the items it held unacknowledged."""

    def __init__(self, stores: StoreSettings, dead_letters: DeadLetterTarget) -> None:
        self._stores = stores
        self._dead_letters = dead_letters

    def list_parts(self) -> list[str]:
        return list(_PARTS)


class PipelinedPartition(StatefulSinkPartition[T, list[T]]):
    """Hands each batch to a writer thread; snapshots what is not yet acknowledged.

    ``prepare`` (optional) turns the items of one chunk into the rows to write: it may collapse
    them (Postgres keeps each tenant's newest change) or hand items no retry can help to the
    dead-letter callback it is given (the graph's unstorable strings). ``resume``: the snapshot
    of the partition this one resumes, written before anything new.

    ``tenant_writers``: more writers (each its own connection), one lane each beside
    ``writer``'s, tenants spread over the lanes by a hash of their id (:func:`tenant_lanes`): a
    tenant's items all on one lane, in order, for a store whose writes a tenant's items order
    but no two tenants' (the graph: a tenant's signals lock its ``Tenant`` node); one lane's
    transaction runs on the server while another's is built or read back.

    ``scores``: one more writer (its own connection) for the score changes, written on a lane
    of their own after the tenant lanes (:class:`~sinks.store_pipeline.StorePipeline`), for a
    store whose writes order a tenant's score changes and its signals each by their own guard,
    never against each other (Redis: ``seq`` and the offset marks; the graph: ``seq`` and the
    ``MERGE`` keys). A change then waits only for the changes before it, not for the chunk of
    signals being written when it came (at 2,000 events/s under load, the change's wait for its
    write to start was p95 83-124 ms on Redis's shared lane, the signals' 8-15 ms). With
    ``tenant_writers`` too, the signals are spread over the tenant lanes and every change goes
    to the score lane.
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
        resume: list[T] | None = None,
        scores: StoreWriter[T] | None = None,
        tenant_writers: Sequence[StoreWriter[T]] = (),
    ) -> None:
        self._sink = sink
        self._transient = transient
        self._prepare = prepare
        self._close = close
        self._policy = retry_policy(stores)
        self._traced = tracing.enabled()
        # Each lane's writer thread has its own writer and dead-letter producer.
        write = functools.partial(self._write_chunk, writer, dead_letters.for_sink(sink))
        more = [*tenant_writers, *([scores] if scores is not None else [])]
        lanes = tuple(
            functools.partial(self._write_chunk, lane, dead_letters.for_sink(sink)) for lane in more
        )
        lane_of: Callable[[T], int] | None = None
        if scores is not None and tenant_writers:
            lane_of = tenant_and_score_lanes(1 + len(tenant_writers))
        elif scores is not None:
            lane_of = _score_lane
        elif tenant_writers:
            lane_of = tenant_lanes(1 + len(tenant_writers))
        self._pipeline = StorePipeline(
            sink,
            write,
            batch_size=max(1, stores.batch_size),
            max_in_flight=stores.max_in_flight,
            pending=resume or (),
            lanes=lanes,
            lane_of=lane_of,
        )

    def write_batch(self, values: list[T]) -> None:
        if self._traced:
            _put_spans(self._sink, values)
        self._pipeline.put(values)

    def snapshot(self) -> list[T]:
        return self._pipeline.unacknowledged()

    def close(self) -> None:
        try:
            self._pipeline.close()
        finally:
            if self._close is not None:
                self._close()

    def _write_chunk(
        self, writer: StoreWriter[T], dead_letter: SinkDeadLetters, items: list[T]
    ) -> None:
        # On a lane's writer thread: the writer, its connection and the dead-letter producer
        # are used by this thread only.
        if self._prepare is not None:
            items = self._prepare(items, dead_letter)
        write_with_retry(
            self._sink,
            items,
            writer.write,
            transient=self._transient,
            dead_letter=dead_letter,
            policy=self._policy,
        )


def tenant_lanes(lanes: int) -> Callable[[Any], int]:
    """The lane (of ``lanes``) of a signal's or a score change's tenant: a BLAKE2s digest of its
    id modulo ``lanes``, the same in every process (CRC-32's low bits put ``tenant-00`` …
    ``tenant-03`` all on one of two lanes), remembered per tenant."""

    @functools.lru_cache(maxsize=1 << 16)
    def of_tenant(tenant: str) -> int:
        digest = hashlib.blake2s(tenant.encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") % lanes

    def lane_of(item: Any) -> int:
        if type(item) is ScoreChange:
            return of_tenant(item.tenant_id)
        return of_tenant(item.decoded.signal.tenant_id)

    return lane_of


def tenant_and_score_lanes(lanes: int) -> Callable[[Any], int]:
    """The lane of an item with ``lanes`` tenant lanes and a score lane after them: ``lanes``
    for a score change, its tenant's (:func:`tenant_lanes`) for anything else."""
    of_tenant = tenant_lanes(lanes)

    def lane_of(item: Any) -> int:
        return lanes if type(item) is ScoreChange else of_tenant(item)

    return lane_of


def _score_lane(item: object) -> int:
    """The lane of an item with a score lane: 1 for a score change, 0 for anything else."""
    return 1 if type(item) is ScoreChange else 0


def _put_spans(sink: str, values: Sequence[object]) -> None:
    """A zero-length ``put <sink>`` span under each traced item handed to a store's pipeline:
    where a trace's time after the drift decision splits into the flow's (the steps and
    Bytewax's hand-over, up to here) and the store pipeline's (waiting for the writer thread,
    then ``write <sink>``), as ``benchmarks/latency.py`` reports it."""
    now = time.time_ns()
    for item in values:
        trace = tracing.trace_of(item)
        if trace is not None:
            attrs = tracing.item_attributes(item)
            attrs["igflow.sink"] = sink
            attrs["igflow.item"] = type(item).__name__
            tracing.stage_span(f"put {sink}", trace, attrs, now)
