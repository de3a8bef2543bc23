"""dedupe: drop re-sent signals on the idempotency key ``(tenant_id, source, signal_id, ts)``.

Contract, per tenant (the step is keyed by ``tenant_id``; each tenant has one
:class:`TenantDedupe`):

- The tenant's event time ``W`` is the newest ``signal.ts`` it has seen; its *horizon* is
  ``W - ttl`` and never moves back.
- A record with ``ts`` before the horizon is ``LATE``: its key may already be forgotten, so it
  cannot be checked and does not land. It leaves on ``late`` as :class:`~core.records.Rejected`
  with ``TOO_LATE``. This is what makes "a duplicate never lands twice" hold even after its key
  was evicted: every copy of an evicted key is itself before the horizon.
- A key already held is a ``DUPLICATE``: dropped and counted (``igflow_duplicates_total``,
  ``ingest_dedupe_rate``).
- Otherwise the record is ``NEW``: its key is held until it falls behind the horizon, and the
  record goes on, on ``unique``.

Every input comes out exactly once: on ``unique``, on ``late``, or counted as a duplicate. The
records of one tenant keep their order. Memory is bounded by the keys whose ``ts`` lies inside
the TTL (``igflow_dedupe_keys``); eviction pops a heap ordered by ``ts``, ``O(log n)`` per record.
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import heapq
import sys
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from operator import attrgetter
from typing import Any

from bytewax.dataflow import Stream, operator
from bytewax.operators import StatefulBatchLogic

from core import _native, metrics, tracing
from core.reasons import ReasonCode
from core.records import Decoded, RawRecord, Rejected, Signal
from core.settings import DedupeSettings
from operators.batching import Runs, stateful_runs_at
from operators.split import split_runs

__all__ = ["DedupeOut", "TenantDedupe", "Verdict", "dedupe", "dedupe_batch", "late_reject"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

#: A held key: ``(ts in microseconds since the epoch, source, signal_id)``. The tenant is implied
#: by the state that holds it; ``ts`` comes first so the same tuple orders the eviction heap.
_Key = tuple[int, str, str]


def _micros(ts: datetime) -> int:
    """Microseconds since the epoch of a timezone-aware ``ts`` (exact integer arithmetic)."""
    return (ts - _EPOCH) // _MICROSECOND


def _micros_of_seconds(seconds: float) -> int:
    return round(seconds * 1_000_000)


class Verdict(enum.Enum):
    """What :meth:`TenantDedupe.check` decided for one record."""

    NEW = "new"
    DUPLICATE = "duplicate"
    LATE = "late"


class TenantDedupe:
    """The idempotency keys of one tenant inside its TTL (engine independent).

    ``ttl_seconds`` is event time: a key is held while ``ts >= W - ttl``, ``W`` being the newest
    ``ts`` seen. Times are kept as integer microseconds, so the horizon is exact. About 230
    bytes per held key (``benchmarks/dedupe_memory.py``). Survives ``copy.deepcopy`` and
    ``pickle`` (Bytewax snapshots it for recovery); a pickle stores the heap only and the key
    index is rebuilt from it.
    """

    __slots__ = ("_duplicates", "_heap", "_horizon", "_keys", "_newest", "_seen", "_tenant", "_ttl")

    def __init__(self, ttl_seconds: float) -> None:
        if ttl_seconds < 0:
            msg = f"ttl_seconds must be >= 0, got {ttl_seconds}"
            raise ValueError(msg)
        self._ttl = _micros_of_seconds(ttl_seconds)
        self._tenant: str | None = None
        #: ``W`` and the horizon, microseconds; ``None`` before the first record.
        self._newest: int | None = None
        self._horizon: int | None = None
        # A dict, not a set: after many deletions a set rebuilds at 4x its size, a dict at 3x
        # and compacted, so a dict's footprint stays in one size class at a steady key count.
        self._keys: dict[_Key, None] = {}
        #: The same tuples as ``_keys``, as a min-heap: the oldest ``ts`` is evicted first.
        self._heap: list[_Key] = []
        self._seen = 0
        self._duplicates = 0

    @property
    def ttl_seconds(self) -> float:
        return self._ttl / 1_000_000

    @property
    def seen(self) -> int:
        """Records checked (new, duplicate and late)."""
        return self._seen

    @property
    def duplicates(self) -> int:
        """Records found to be duplicates."""
        return self._duplicates

    @property
    def dedupe_rate(self) -> float:
        """``duplicates / seen`` (0.0 before the first record)."""
        return self._duplicates / self._seen if self._seen else 0.0

    @property
    def horizon(self) -> datetime | None:
        """The oldest ``ts`` still checked (``W - ttl``); ``None`` before the first record."""
        return None if self._horizon is None else _EPOCH + self._horizon * _MICROSECOND

    def __len__(self) -> int:
        """Keys held."""
        return len(self._keys)

    def set_ttl(self, ttl_seconds: float) -> None:
        """Change the TTL (a new setting on resume). The horizon still never moves back, so a
        longer TTL takes effect as event time advances and no evicted key is checked again."""
        if ttl_seconds < 0:
            msg = f"ttl_seconds must be >= 0, got {ttl_seconds}"
            raise ValueError(msg)
        self._ttl = _micros_of_seconds(ttl_seconds)
        if self._newest is not None:
            self._advance(self._newest)

    def check(self, item: Decoded) -> Verdict:
        """Decide one record of this tenant and remember its key if it is new."""
        signal = item.signal
        if self._tenant is None:
            self._tenant = signal.tenant_id
        elif signal.tenant_id != self._tenant:
            msg = "a TenantDedupe holds one tenant's keys; key the stream by tenant_id"
            raise ValueError(msg)
        ts = _micros(signal.ts)
        self._seen += 1
        if self._newest is None or ts > self._newest:
            self._newest = ts
            self._advance(ts)
        assert self._horizon is not None
        if ts < self._horizon:
            return Verdict.LATE
        key = (ts, signal.source, signal.signal_id)
        if key in self._keys:
            self._duplicates += 1
            return Verdict.DUPLICATE
        # Sources are few: one shared string each instead of one per held key.
        key = (ts, sys.intern(signal.source), signal.signal_id)
        self._keys[key] = None
        heapq.heappush(self._heap, key)
        return Verdict.NEW

    def _advance(self, newest: int) -> None:
        horizon = newest - self._ttl
        if self._horizon is not None and horizon <= self._horizon:
            return
        self._horizon = horizon
        heap, keys = self._heap, self._keys
        while heap and heap[0][0] < horizon:
            del keys[heapq.heappop(heap)]

    def __deepcopy__(self, memo: dict[int, Any]) -> TenantDedupe:
        # Keys are tuples of ints and strings: immutable, so copying the containers is a deep
        # copy, at C speed (Bytewax snapshots every epoch).
        other = TenantDedupe.__new__(TenantDedupe)
        other._ttl = self._ttl
        other._tenant = self._tenant
        other._newest = self._newest
        other._horizon = self._horizon
        other._keys = self._keys.copy()
        other._heap = self._heap.copy()
        other._seen = self._seen
        other._duplicates = self._duplicates
        return other

    def __getstate__(self) -> dict[str, Any]:
        return {
            "ttl": self._ttl,
            "tenant": self._tenant,
            "newest": self._newest,
            "horizon": self._horizon,
            "heap": self._heap,
            "seen": self._seen,
            "duplicates": self._duplicates,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._ttl = state["ttl"]
        self._tenant = state["tenant"]
        self._newest = state["newest"]
        self._horizon = state["horizon"]
        self._heap = state["heap"]
        self._keys = dict.fromkeys(self._heap)
        self._seen = state["seen"]
        self._duplicates = state["duplicates"]


def late_reject(item: Decoded, state: TenantDedupe) -> Rejected:
    """The ``TOO_LATE`` reject of ``item``: its original record, and how far behind it was."""
    raw = item.raw
    if raw is None:
        p = item.provenance
        raw = RawRecord(
            p.topic, p.kafka_partition, p.kafka_offset, None, None, item.kafka_timestamp_ms
        )
    horizon = state.horizon
    behind = "" if horizon is None else f"{(horizon - item.signal.ts).total_seconds():g} s "
    detail = f"event time {behind}before the dedupe horizon (TTL {state.ttl_seconds:g} s)"
    return Rejected(
        ReasonCode.TOO_LATE,
        detail,
        raw,
        stage="dedupe",
        tenant_id=item.signal.tenant_id,
        schema_version=item.provenance.schema_version,
    )


class _TenantMetrics:
    """Labelled metric children, looked up once per tenant (``labels()`` takes a lock)."""

    def __init__(self, tenant: str) -> None:
        self.duplicates = metrics.DUPLICATES.labels(tenant)
        self.rate = metrics.DEDUPE_RATE.labels(tenant)
        self.keys = metrics.DEDUPE_KEYS.labels(tenant)
        self.late = metrics.REJECTED.labels("dedupe", ReasonCode.TOO_LATE.value, tenant)


@dataclasses.dataclass(frozen=True)
class DedupeOut:
    """The two streams out of :func:`dedupe`."""

    #: New records, keyed by tenant, in their input order.
    unique: Runs[Decoded]
    #: ``TOO_LATE`` rejects, for the DLQ.
    late: Stream[Rejected]


def dedupe_batch(
    state: TenantDedupe, items: Iterable[Decoded]
) -> tuple[list[Decoded | Rejected], int, int]:
    """Check ``items`` in order against ``state``: the new records and the ``TOO_LATE`` rejects
    in input order, and how many were duplicates and late.

    The batch entry point (one call per engine batch); :meth:`TenantDedupe.check` and
    :func:`late_reject` per record are its reference, and for any split of an input into
    batches the outputs are the same (``tests/unit/test_batch_equivalence.py``). A reject is
    built when its record is checked: its detail names the horizon at that record, not at the
    end of the batch. Computed in C (``core/_native.c`` ``dedupe_run``: :func:`_dedupe_columns`,
    its reference, in C) for a batch of plain records, else by :func:`_dedupe_columns` (the
    check unrolled over the batch) unless the batch holds a traced record or another tenant's.
    """
    items = items if isinstance(items, list) else list(items)
    fast = _dedupe_native(state, items)
    if fast is None:
        fast = _dedupe_columns(state, items)
    if fast is not None:
        return fast
    return _dedupe_records(state, items)


#: What ``dedupe_run`` reads a record with: ``Decoded``'s ``signal`` and ``trace``, ``Signal``'s
#: ``tenant_id``, ``ts``, ``source`` and ``signal_id`` (member descriptors of the exact classes).
_NATIVE_SLOTS = (
    Decoded.__dict__["signal"],
    Decoded.__dict__["trace"],
    Signal.__dict__["tenant_id"],
    Signal.__dict__["ts"],
    Signal.__dict__["source"],
    Signal.__dict__["signal_id"],
)


def _dedupe_native(
    state: TenantDedupe, items: list[Decoded]
) -> tuple[list[Decoded | Rejected], int, int] | None:
    """:func:`_dedupe_columns` in C (``core/_native.c`` ``dedupe_run``), the same steps in the
    same order and the same state after it; ``None`` (nothing changed) for a batch it leaves to
    the Python paths: anything but plain records of one tenant with ``str`` fields, a time that
    ``_micros`` does not convert, a state out of 62 bits. A ``ts`` in ``datetime.UTC`` (the
    decoder's) is converted from its fields, any other through :func:`_micros`."""
    return _native.dedupe_run(state, items, _micros, late_reject, Decoded, Signal, _NATIVE_SLOTS)


def _dedupe_records(
    state: TenantDedupe, items: Iterable[Decoded]
) -> tuple[list[Decoded | Rejected], int, int]:
    """:func:`dedupe_batch` record by record through :meth:`TenantDedupe.check` (the reference;
    also the path of a batch with a traced record)."""
    out: list[Decoded | Rejected] = []
    duplicates = late = 0
    check = state.check
    for item in items:
        start = 0 if item.trace is None else time.time_ns()
        verdict = check(item)
        if start:
            tracing.record_stage(
                "dedupe",
                item,
                start,
                outcome=verdict.value,
                error=ReasonCode.TOO_LATE.value if verdict is Verdict.LATE else None,
            )
        if verdict is Verdict.NEW:
            out.append(item)
        elif verdict is Verdict.DUPLICATE:
            duplicates += 1
        else:
            late += 1
            out.append(late_reject(item, state))
    return out, duplicates, late


def _dedupe_columns(
    state: TenantDedupe, items: list[Decoded]
) -> tuple[list[Decoded | Rejected], int, int] | None:
    """:func:`dedupe_batch` with :meth:`TenantDedupe.check` unrolled over the batch: the tenant
    checked once, the event times converted in one pass, the state's fields in locals. The same
    decisions in the same order, and the same state after it. The reference of the C path
    (:func:`_dedupe_native`), which does these steps in this order. ``None`` (nothing changed) for a
    batch it leaves to the reference: a traced record, another tenant's record, a time that
    does not convert (the reference raises at that record, as it always did)."""
    if not items:
        return [], 0, 0
    signals = list(map(_SIGNAL, items))
    tenants = set(map(_TENANT_ID, signals))
    if len(tenants) != 1 or (state._tenant is not None and state._tenant not in tenants):
        return None
    if set(map(_TRACE, items)) != {None}:
        return None
    try:
        micros = [(ts - _EPOCH) // _MICROSECOND for ts in map(_TS, signals)]
    except (TypeError, OverflowError):
        return None
    if state._tenant is None:
        state._tenant = signals[0].tenant_id
    out: list[Decoded | Rejected] = []
    append = out.append
    duplicates = late = 0
    newest, horizon, ttl = state._newest, state._horizon, state._ttl
    keys, heap = state._keys, state._heap
    heappush, heappop, intern = heapq.heappush, heapq.heappop, sys.intern
    for item, signal, ts in zip(items, signals, micros, strict=True):
        if newest is None or ts > newest:
            newest = state._newest = ts
            # TenantDedupe._advance
            edge = ts - ttl
            if horizon is None or edge > horizon:
                horizon = state._horizon = edge
                while heap and heap[0][0] < edge:
                    del keys[heappop(heap)]
        assert horizon is not None
        if ts < horizon:
            late += 1
            append(late_reject(item, state))
            continue
        key = (ts, signal.source, signal.signal_id)
        if key in keys:
            duplicates += 1
            continue
        key = (ts, intern(signal.source), signal.signal_id)
        keys[key] = None
        heappush(heap, key)
        append(item)
    state._seen += len(items)
    state._duplicates += duplicates
    return out, duplicates, late


_SIGNAL = attrgetter("signal")
_TENANT_ID = attrgetter("tenant_id")
_TS = attrgetter("ts")
_TRACE = attrgetter("trace")


class _DedupeLogic(StatefulBatchLogic[Decoded, Decoded | Rejected, TenantDedupe]):
    """Bytewax glue: each batch of one tenant's records through :func:`dedupe_batch`, the
    tenant's metrics updated once per batch."""

    def __init__(self, state: TenantDedupe, children: dict[str, _TenantMetrics]) -> None:
        self.state = state
        self.children = children

    def on_batch(self, values: list[Decoded]) -> tuple[Iterable[Decoded | Rejected], bool]:
        state = self.state
        out, duplicates, late = dedupe_batch(state, values)
        tenant = values[0].signal.tenant_id
        m = self.children.get(tenant)
        if m is None:
            m = self.children[tenant] = _TenantMetrics(tenant)
        m.rate.set(state.dedupe_rate)
        m.keys.set(len(state))
        if duplicates:
            m.duplicates.inc(duplicates)
        if late:
            m.late.inc(late)
        return out, StatefulBatchLogic.RETAIN

    def snapshot(self) -> TenantDedupe:
        return copy.deepcopy(self.state)


@operator
def _check(
    step_id: str,
    up: Runs[Decoded],
    builder: Callable[[TenantDedupe | None], _DedupeLogic],
) -> Runs[Decoded | Rejected]:
    # The ids op.stateful_flat_map("check", ...) gave its inner steps.
    return stateful_runs_at("stateful", up, builder)


@operator
def dedupe(step_id: str, up: Runs[Decoded], settings: DedupeSettings) -> DedupeOut:
    """Suppress duplicates per tenant; ``up``: runs keyed by ``tenant_id`` (as ``unique``).

    New records continue on ``unique``; records before the tenant's horizon leave on ``late``;
    duplicates are dropped and counted. The TTL is ``settings.ttl_seconds`` of event time; a
    resumed state takes the current setting (see :meth:`TenantDedupe.set_ttl`). The stateful
    step keeps the id and the snapshot (a :class:`TenantDedupe`) of the per-item
    ``stateful_flat_map`` it replaced.
    """
    ttl = settings.ttl_seconds
    # As the state holds it (whole microseconds), so a resumed state is compared like for like.
    held_ttl = _micros_of_seconds(ttl) / 1_000_000
    children: dict[str, _TenantMetrics] = {}

    def builder(resume: TenantDedupe | None) -> _DedupeLogic:
        if resume is None:
            resume = TenantDedupe(ttl)
        elif resume.ttl_seconds != held_ttl:
            resume.set_ttl(ttl)
        return _DedupeLogic(resume, children)

    checked = _check("check", up, builder)
    unique, late = split_runs("split", checked, Decoded, Rejected)
    return DedupeOut(unique, late)
