"""One lake append's items as Arrow columns: which ones the ledger lacks, in what row order.

The per-record part of an append (:class:`~sinks.iceberg.IcebergAppender`) runs here on Arrow
arrays instead of per item in Python. A batch becomes columns once (for the tables with a
column builder, ``TableDef.columns``, the data itself; for the others only the provenance, lane
and tenant of each item). Each row gets a key id for its (topic, partition, lane), so the
ledger is consulted once per distinct key, not per row; the filter, the row order, the marks the
batch raises, its content marks and its per-tenant counts are ``pyarrow.compute`` kernels.

:func:`select_rows` is the per-item reference (the code before): ``tests/unit/test_lake_batch.py``
proves both decide the same for any batch and ledger, and ``tests/unit/test_lake_golden.py`` that
the data files keep their bytes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Generic, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sinks.lake_tables import TableDef, lane, no_timestamp
from sinks.ledger_content import Marks
from sinks.ledger_format import Ledger
from tenancy.sealing import Sealer

__all__ = ["LakeBatch", "Selection", "select_rows"]

T = TypeVar("T")

#: A key id packs (lane, topic) above a partition offset into its low 32 bits (one int64).
_LOW = 1 << 32
_PARTITION_BIAS = 1 << 31


@dataclasses.dataclass(frozen=True, slots=True)
class Selection:
    """What :meth:`LakeBatch.select` decided for one ledger."""

    #: Indices into the batch of the items the ledger lacks, in row order: by (topic,
    #: partition, offset, lane), ties in delivery order.
    order: pa.Array
    #: The ledger after the append, and the lanes it raises (with their new marks).
    merged: Ledger
    raised: Ledger
    #: Per (topic, partition), the highest offset appended with its record's input hash.
    landed: Marks
    #: Every (topic, partition) of the batch, appended or not.
    seen: set[tuple[str, int]]
    #: Rows appended per tenant.
    per_tenant: dict[str, int]


def _array(column: Any) -> pa.Array:
    """One array of a (single- or multi-chunk) column."""
    if isinstance(column, pa.ChunkedArray):
        return column.combine_chunks()
    return column


def _ranks(values: Sequence[str]) -> pa.Array:
    """Each value's place in sorted order (Python's order: by code point, as UTF-8 bytes sort)."""
    rank = {v: r for r, v in enumerate(sorted(values))}
    return pa.array([rank[v] for v in values], pa.int64())


class LakeBatch(Generic[T]):
    """The items of one append, as columns (built once, whatever the attempts)."""

    def __init__(self, table: TableDef[T], items: Sequence[T], sealer: Sealer | None = None):
        self._def = table
        self._items = items
        self._sealer = sealer
        self._data: pa.Table | None = None
        if table.columnar(sealer):
            data = table.to_arrow(items)
            self._data = data
            topic = _array(data.column("kafka_topic"))
            self._partition = _array(data.column("kafka_partition"))
            self._offset = _array(data.column("kafka_offset"))
            self._hash = _array(data.column("input_hash"))
        else:
            provenance = [table.provenance(item) for item in items]
            topic = pa.array([p.topic for p in provenance], pa.string())
            self._partition = pa.array([p.kafka_partition for p in provenance], pa.int64())
            self._offset = pa.array([p.kafka_offset for p in provenance], pa.int64())
            self._hash = pa.array([p.input_hash for p in provenance], pa.string())
        if self._data is not None and table.lane_column is not None:
            stage, name = table.lane_column
            lanes = _array(self._data.column(name)).dictionary_encode(null_encoding="encode")
            self._lanes = [lane(stage, v) for v in lanes.dictionary.to_pylist()]
        else:
            lanes = pa.array(list(map(table.lane, items)), pa.string()).dictionary_encode()
            self._lanes = lanes.dictionary.to_pylist()
        self._lane_index = lanes.indices
        if self._data is not None and table.tenant_column is not None:
            self._tenant = _array(self._data.column(table.tenant_column))
        else:
            self._tenant = pa.array(list(map(table.tenant, items)), pa.string())
        topics = topic.dictionary_encode()
        self._topics: list[str] = topics.dictionary.to_pylist()
        self._topic_index = topics.indices
        # One int64 per row for its (topic, partition, lane), then a dense id per distinct one.
        high = pc.add(
            pc.multiply(self._lane_index.cast(pa.int64()), len(self._topics)),
            self._topic_index.cast(pa.int64()),
        )
        low = pc.add(self._partition.cast(pa.int64()), _PARTITION_BIAS)
        code = pc.add(pc.multiply(high, _LOW), low)
        keys = code.dictionary_encode()
        self._key_index = keys.indices
        self._keys: list[tuple[str, int, str]] = []
        for c in keys.dictionary.to_pylist():
            high_part, low = divmod(c, _LOW)
            lane_i, topic_i = divmod(high_part, len(self._topics))
            self._keys.append((self._topics[topic_i], low - _PARTITION_BIAS, self._lanes[lane_i]))

    @property
    def topics(self) -> list[str]:
        """The batch's topics, sorted."""
        return sorted(self._topics)

    def __len__(self) -> int:
        return len(self._items)

    def select(self, committed: Mapping[tuple[str, int, str], int]) -> Selection:
        """The items ``committed`` lacks (offset above their lane's mark), in row order, with
        what appending them does to the ledger (the per-item logic: :func:`select_rows`)."""
        seen = {key[:2] for key in self._keys}
        marks = pa.array([committed.get(key, -1) for key in self._keys], pa.int64())
        fresh = pc.indices_nonzero(pc.greater(self._offset, marks.take(self._key_index)))
        if len(fresh) == 0:
            empty = pa.array([], pa.uint64())
            return Selection(empty, dict(committed), {}, {}, seen, {})
        offsets = self._offset.take(fresh)
        order_keys = pa.table(
            {
                "topic": _ranks(self._topics).take(self._topic_index.take(fresh)),
                "partition": self._partition.take(fresh),
                "offset": offsets,
                "lane": _ranks(self._lanes).take(self._lane_index.take(fresh)),
                "delivered": fresh,
            }
        )
        by = [(name, "ascending") for name in order_keys.column_names]
        order = fresh.take(pc.sort_indices(order_keys, sort_keys=by))
        # The marks raised: per key, the highest fresh offset.
        key_index = self._key_index.take(fresh)
        top = (
            pa.table({"key": key_index, "offset": offsets})
            .group_by("key")
            .aggregate([("offset", "max")])
        )
        raised: Ledger = {
            self._keys[k]: m
            for k, m in zip(top["key"].to_pylist(), top["offset_max"].to_pylist(), strict=True)
        }
        merged = {**committed, **raised}
        # The content marks: per (topic, partition), its highest fresh offset and that record's
        # input hash (the first such row delivered, as the per-item loop kept).
        highest: dict[tuple[str, int], int] = {}
        for key, mark in raised.items():
            highest[key[:2]] = max(mark, highest.get(key[:2], -1))
        key_high = pa.array([highest.get(key[:2], -1) for key in self._keys], pa.int64()).take(
            key_index
        )
        at_high = pc.indices_nonzero(pc.equal(offsets, key_high))
        landed: Marks = {}
        rows = fresh.take(at_high)
        for k, h, o in zip(
            key_index.take(at_high).to_pylist(),
            self._hash.take(rows).to_pylist(),
            offsets.take(at_high).to_pylist(),
            strict=True,
        ):
            landed.setdefault(self._keys[k][:2], (o, h))
        counts = self._tenant.take(fresh).value_counts()
        per_tenant = dict(
            zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist(), strict=True)
        )
        return Selection(order, merged, raised, landed, seen, per_tenant)

    def data(self, order: pa.Array) -> pa.Table:
        """The rows at ``order`` (indices into the batch), sealed as the sink's sealer says."""
        rows, at = self.rows(order)
        return rows if at is None else rows.take(at)

    def rows(self, order: pa.Array) -> tuple[pa.Table, np.ndarray | None]:
        """:meth:`data` untaken: a table and the indices of the rows at ``order`` in it
        (``None``: all of them, as they are). The batch's own columns when it has them, so the
        sink takes each partition's rows from them once (:func:`sinks.lake_write.append`)."""
        if self._data is not None:
            return self._data, order.to_numpy(zero_copy_only=False).astype(np.int64)
        chosen = [self._items[i] for i in order.to_pylist()]
        return self._def.to_arrow(chosen, self._sealer), None

    def oldest_ms(self) -> dict[str, int]:
        """Per tenant, the oldest Kafka timestamp of the batch's items (appended or not; the
        pipeline-latency metric); empty for a table that records none."""
        if self._def.kafka_timestamp_ms is no_timestamp or not self._items:
            return {}
        stamps = pa.array(list(map(self._def.kafka_timestamp_ms, self._items)), pa.int64())
        oldest = (
            pa.table({"tenant": self._tenant, "ms": stamps})
            .group_by("tenant")
            .aggregate([("ms", "min")])
        )
        return {
            t: m
            for t, m in zip(oldest["tenant"].to_pylist(), oldest["ms_min"].to_pylist(), strict=True)
            if m is not None
        }


def select_rows(
    table: TableDef[T], items: Iterable[T], committed: Mapping[tuple[str, int, str], int]
) -> tuple[list[T], Ledger, Ledger, Marks, set[tuple[str, int]]]:
    """The per-item reference of :meth:`LakeBatch.select` (the sink before it went columnar):
    the items not yet committed in row order, the ledger after them, the lanes they raise, the
    content marks and every (topic, partition) of ``items``."""
    raised: Ledger = {}
    fresh = []
    landed: Marks = {}
    seen: set[tuple[str, int]] = set()
    for item in items:
        p = table.provenance(item)
        key = (p.topic, p.kafka_partition, table.lane(item))
        seen.add(key[:2])
        if p.kafka_offset <= committed.get(key, -1):
            continue
        fresh.append(item)
        raised[key] = max(raised.get(key, -1), p.kafka_offset)
        mark = landed.get(key[:2])
        if mark is None or p.kafka_offset > mark[0]:
            landed[key[:2]] = (p.kafka_offset, p.input_hash)
    merged = {**committed, **raised} if raised else dict(committed)

    def order(item: T) -> tuple[str, int, int, str]:
        p = table.provenance(item)
        return (p.topic, p.kafka_partition, p.kafka_offset, table.lane(item))

    return sorted(fresh, key=order), merged, raised, landed, seen
