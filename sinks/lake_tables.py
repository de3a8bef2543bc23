"""Iceberg table definitions: schema, partitioning and row mapping, one per landed table.

Field ids are fixed here (never reassigned), so the schemas can evolve by adding fields. Every
table carries the provenance columns ``kafka_partition``, ``kafka_offset``, ``schema_version``
and ``input_hash`` (SHA-256 of the exact Kafka value bytes).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

import pyarrow as pa
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.transforms import DayTransform, IdentityTransform
from pyiceberg.types import (
    DoubleType,
    IntegerType,
    LongType,
    NestedField,
    StringType,
    TimestamptzType,
)

from igflow.records import Decoded, Provenance

__all__ = ["SIGNALS", "TableDef"]

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class TableDef(Generic[T]):
    """How values of type ``T`` land in one Iceberg table."""

    name: str
    schema: Schema
    partition_spec: PartitionSpec
    #: Column values of one item, in schema order.
    row: Callable[[T], tuple[Any, ...]]
    provenance: Callable[[T], Provenance]
    #: Tenant of an item (for per-tenant metrics).
    tenant: Callable[[T], str]
    #: Kafka timestamp of an item in ms, if known (for the pipeline-latency metric only).
    kafka_timestamp_ms: Callable[[T], int | None] = lambda _item: None

    def to_arrow(self, items: Sequence[T]) -> pa.Table:
        """Items as an Arrow table whose schema matches the Iceberg schema exactly."""
        arrow_schema = self.schema.as_arrow()
        if not items:
            return arrow_schema.empty_table()
        columns = zip(*map(self.row, items), strict=True)  # rows → columns, in C
        return pa.Table.from_arrays(
            [pa.array(c, type=f.type) for c, f in zip(columns, arrow_schema, strict=True)],
            schema=arrow_schema,
        )


_SIGNAL_SCHEMA = Schema(
    NestedField(1, "tenant_id", StringType(), required=True),
    NestedField(2, "signal_id", StringType(), required=True),
    NestedField(3, "type", StringType(), required=True),
    NestedField(4, "value", DoubleType(), required=True),
    NestedField(5, "weight", DoubleType(), required=False, doc="null means 1.0"),
    NestedField(6, "source", StringType(), required=True),
    NestedField(7, "ts", TimestamptzType(), required=True, doc="event time"),
    NestedField(8, "kafka_topic", StringType(), required=True),
    NestedField(9, "kafka_partition", IntegerType(), required=True),
    NestedField(10, "kafka_offset", LongType(), required=True),
    NestedField(11, "schema_version", IntegerType(), required=True, doc="registry schema id"),
    NestedField(12, "input_hash", StringType(), required=True, doc="sha256 of the Kafka value"),
)


def _signal_row(item: Decoded) -> tuple[Any, ...]:
    s, p = item.signal, item.provenance
    return (
        s.tenant_id,
        s.signal_id,
        s.type,
        s.value,
        s.weight,
        s.source,
        s.ts,
        p.topic,
        p.kafka_partition,
        p.kafka_offset,
        p.schema_version,
        p.input_hash,
    )


SIGNALS: TableDef[Decoded] = TableDef(
    name="signals",
    schema=_SIGNAL_SCHEMA,
    partition_spec=PartitionSpec(
        PartitionField(source_id=7, field_id=1000, transform=DayTransform(), name="ts_day"),
        PartitionField(source_id=1, field_id=1001, transform=IdentityTransform(), name="tenant_id"),
    ),
    row=_signal_row,
    provenance=lambda item: item.provenance,
    tenant=lambda item: item.signal.tenant_id,
    kafka_timestamp_ms=lambda item: item.kafka_timestamp_ms,
)
