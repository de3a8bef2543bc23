"""Iceberg table definitions: schema, partitioning and row mapping, one per landed table.

Field ids are fixed here (never reassigned), so the schemas can evolve by adding fields
(``tests/data/lake_schemas.json`` pins them). Every table of records carries the provenance
columns ``kafka_topic``, ``kafka_partition``, ``kafka_offset``, ``schema_version`` and
``input_hash`` (SHA-256 of the exact Kafka value bytes), defined once by
:func:`provenance_fields` and filled by :func:`provenance_values`.

The hot tables (signals, scores) also build a whole batch column-wise (``TableDef.columns``: one
pass over the items filling a list per column); ``TableDef.row``, one item at a time, stays their
reference (``tests/unit/test_lake_batch.py`` proves both give the same Arrow table).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from itertools import repeat
from operator import attrgetter, sub
from typing import Any, Generic, TypeVar

import pyarrow as pa
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.transforms import DayTransform, IdentityTransform
from pyiceberg.types import (
    BinaryType,
    DecimalType,
    DoubleType,
    IntegerType,
    ListType,
    LongType,
    NestedField,
    StringType,
    TimestamptzType,
)

from core import _native
from core.records import (
    Decoded,
    DeconflictionResult,
    PolicyTags,
    Provenance,
    Quarantined,
    RawRecord,
    Rejected,
    ScoreChange,
    Signal,
    Tagged,
    input_hash,
)
from core.sealing import (
    SCOPE_DECONFLICTION,
    SCOPE_QUARANTINE,
    element_column,
    kafka_row,
    keyholder,
    window_row,
)
from tenancy.sealing import Sealer, event_time_of_ms

__all__ = [
    "DECONFLICTION",
    "LEGACY_PARTITION_SPECS",
    "QUARANTINE",
    "QUARANTINE_AUDIT",
    "SCORES",
    "SIGNALS",
    "TABLES",
    "TableDef",
    "lane",
    "no_timestamp",
    "provenance_fields",
    "provenance_values",
]

T = TypeVar("T")


def no_timestamp(_item: object) -> int | None:
    """The Kafka timestamp of an item of a table that records none (the default)."""
    return None


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
    kafka_timestamp_ms: Callable[[T], int | None] = no_timestamp
    #: The ledger lane of an item: items of one (topic, partition, lane) reach the sink in
    #: offset order (see :mod:`sinks.iceberg`).
    lane: Callable[[T], str] = lambda _item: ""
    #: The row of an item with its sensitive columns sealed (:mod:`core.sealing`); ``None``: the
    #: table holds no sensitive field.
    sealed_row: Callable[[Sealer, T], tuple[Any, ...]] | None = None
    #: The column values of many items, one list per column in schema order: ``row`` batched
    #: (which stays its reference). ``None``: built from ``row``.
    columns: Callable[[Sequence[T]], list[list[Any]]] | None = None
    #: ``(stage, column)`` when ``lane(item)`` is ``lane(stage, <the item's value in column>)``
    #: for every item: the sink then derives the lanes of a batch from that column.
    lane_column: tuple[str, str] | None = None
    #: The column holding ``tenant(item)`` for every item, if one does.
    tenant_column: str | None = None
    #: Per column, the ``__slots__`` descriptors leading from an item to its value (``columns``'
    #: reads): ``core._native.lake_columns`` then builds the batch's Arrow buffers in C.
    #: ``None``: ``columns`` and :func:`column_array` always (the reference).
    slot_paths: tuple[tuple[Any, ...], ...] | None = None

    def lanes(self, items: Sequence[T]) -> list[str]:
        """``lane`` of each of ``items``: when the lane is its stage and the tenant's column
        (``lane_column`` names ``tenant_column``), through ``tenant`` and one lane string per
        tenant (a dict's lookups: at C speed where ``tenant`` is C's, an ``attrgetter``), else
        ``lane`` item by item. The same strings either way."""
        if self.lane_column is None or self.lane_column[1] != self.tenant_column:
            return list(map(self.lane, items))
        return list(map(_Lanes(self.lane_column[0]).__getitem__, map(self.tenant, items)))

    @functools.cached_property
    def native_plan(self) -> tuple[tuple[Any, ...], ...] | None:
        """``slot_paths`` with each column's kind (``lake_columns``' argument), or ``None``."""
        if self.slot_paths is None:
            return None
        return tuple(
            _native_entry(path, f.type)
            for path, f in zip(self.slot_paths, self.arrow_schema, strict=True)
        )

    @functools.cached_property
    def arrow_schema(self) -> pa.Schema:
        """``schema`` as Arrow's (built once per table: ~0.13 ms each time)."""
        return self.schema.as_arrow()

    def columnar(self, sealer: Sealer | None = None) -> bool:
        """Whether :meth:`to_arrow` builds this table's batches column-wise (with ``sealer``)."""
        return self.columns is not None and (sealer is None or self.sealed_row is None)

    def to_arrow(self, items: Sequence[T], sealer: Sealer | None = None) -> pa.Table:
        """Items as an Arrow table whose schema matches the Iceberg schema exactly; with a
        ``sealer``, the sensitive columns sealed with each item's tenant keys."""
        if self.columns is None or not self.columnar(sealer):
            return self.rows_to_arrow(items, sealer)
        plan = self.native_plan
        if plan is not None and type(items) is list:
            built = _native.lake_columns(items, plan)
            if built is not None:
                n, arrow_schema = len(items), self.arrow_schema
                return pa.Table.from_arrays(
                    [
                        _native_array(b, f.type, n, entry[1])
                        for b, f, entry in zip(built, arrow_schema, plan, strict=True)
                    ],
                    schema=arrow_schema,
                )
        return self.python_to_arrow(items)

    def python_to_arrow(self, items: Sequence[T]) -> pa.Table:
        """:meth:`to_arrow` from ``columns`` and :func:`column_array`, without a sealer: the
        reference of ``core._native.lake_columns``' path (and the path of what it refuses)."""
        assert self.columns is not None
        arrow_schema = self.arrow_schema
        return pa.Table.from_arrays(
            [
                column_array(c, f.type)
                for c, f in zip(self.columns(items), arrow_schema, strict=True)
            ],
            schema=arrow_schema,
        )

    def rows_to_arrow(self, items: Sequence[T], sealer: Sealer | None = None) -> pa.Table:
        """:meth:`to_arrow` one row at a time (``row``, ``sealed_row``): the reference."""
        arrow_schema = self.arrow_schema
        if not items:
            return arrow_schema.empty_table()
        if sealer is not None and self.sealed_row is not None:
            seal_row = self.sealed_row
            rows: Iterable[tuple[Any, ...]] = (seal_row(sealer, item) for item in items)
        else:
            rows = map(self.row, items)
        columns = zip(*rows, strict=True)  # rows → columns, in C
        return pa.Table.from_arrays(
            [pa.array(c, type=f.type) for c, f in zip(columns, arrow_schema, strict=True)],
            schema=arrow_schema,
        )


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROS = pa.duration("us")


def column_array(values: Sequence[Any], kind: pa.DataType) -> pa.Array:
    """``pa.array(values, kind)``; a column of aware datetimes, and a string column holding one
    value, faster, as they give the same (``tests/unit/test_lake_batch.py`` holds both to
    ``pa.array``).

    pyarrow converts an aware datetime at ~0.16 us (it asks the zone for the offset of each);
    a datetime minus the epoch is a C subtraction, and pyarrow reads a timedelta's fields as
    they are (~0.04 us each with the subtraction). Anything but a list of ``datetime`` objects
    (nulls, subclasses) goes to ``pa.array``, and so does a naive one (the subtraction refuses
    it; pyarrow reads it as UTC).

    A string column whose values all equal its first, a ``str`` (the topic, the policy version,
    tags shared by the tenants of a batch), is that value repeated: ``list.count`` compares in
    C, ~1 ns a value when they are one object, against ~20 ns for pyarrow to copy each. A
    ``str`` equals only a ``str`` (of the same text), so the values are then that text.
    """
    if (
        (pa.types.is_large_string(kind) or pa.types.is_string(kind))
        and len(values) > 1
        and type(first := values[0]) is str
        and values[-1] == first
        and values.count(first) == len(values)
    ):
        return pa.repeat(pa.scalar(first, kind), len(values))
    if (
        pa.types.is_timestamp(kind)
        and kind.unit == "us"
        and kind.tz is not None
        and values
        and {*map(type, values)} == {datetime}
    ):
        try:
            since = list(map(sub, values, repeat(_EPOCH)))
        except TypeError:  # a naive datetime among them
            return pa.array(values, type=kind)
        return pa.array(since, type=_MICROS).view(kind)
    return pa.array(values, type=kind)


#: ``core._native.lake_columns``' column kinds.
_STRING, _DOUBLE, _INT64, _INT32, _TIMESTAMP, _OBJECT, _DECIMAL = range(7)


def _native_entry(path: tuple[Any, ...], kind: pa.DataType) -> tuple[Any, ...]:
    """The ``lake_columns`` plan entry of a column of Arrow type ``kind``."""
    native = _native_kind(kind)
    if native == _DECIMAL:
        return (path, native, Decimal, kind.precision, kind.scale)
    return (path, native)


def _native_kind(kind: pa.DataType) -> int:
    """The ``lake_columns`` kind of a column of Arrow type ``kind``: how C fills its buffers
    (a UTC timestamp in µs from ``datetime.UTC`` datetimes), or ``_OBJECT`` (the values, which
    :func:`column_array` converts)."""
    if pa.types.is_decimal128(kind) and kind.precision <= 18:
        return _DECIMAL
    if pa.types.is_large_string(kind):
        return _STRING
    if pa.types.is_float64(kind):
        return _DOUBLE
    if pa.types.is_int64(kind):
        return _INT64
    if pa.types.is_int32(kind):
        return _INT32
    if pa.types.is_timestamp(kind) and kind.unit == "us" and kind.tz in {"UTC", "+00:00"}:
        return _TIMESTAMP
    return _OBJECT


def _native_array(built: Any, kind: pa.DataType, n: int, native_kind: int) -> pa.Array:
    """The Arrow array of one column of ``lake_columns``' result (``n`` values of Arrow type
    ``kind``): what :func:`column_array` gives for the same values (``tests/unit/
    test_lake_arrow_native.py``)."""
    if native_kind == _STRING:
        offsets, data = built
        return pa.Array.from_buffers(kind, n, [None, pa.py_buffer(offsets), pa.py_buffer(data)])
    if native_kind == _DOUBLE:
        valid, data, nulls = built
        validity = None if valid is None else pa.py_buffer(valid)
        return pa.Array.from_buffers(kind, n, [validity, pa.py_buffer(data)], null_count=nulls)
    if native_kind == _OBJECT:
        return column_array(built, kind)
    return pa.Array.from_buffers(kind, n, [None, pa.py_buffer(built)])


def provenance_fields(
    first_id: int, *, schema_version_required: bool = True, documented: bool = False
) -> tuple[NestedField, ...]:
    """The provenance columns of a table, with field ids ``first_id`` onwards.

    ``schema_version_required``: false where a row may come from a record that never decoded
    (the quarantine). ``documented``: the docs the signals table was created with (they reach
    its Parquet files as field metadata, so the other tables keep having none).
    """
    i = first_id
    return (
        NestedField(i, "kafka_topic", StringType(), required=True),
        NestedField(i + 1, "kafka_partition", IntegerType(), required=True),
        NestedField(i + 2, "kafka_offset", LongType(), required=True),
        NestedField(
            i + 3,
            "schema_version",
            IntegerType(),
            required=schema_version_required,
            doc="registry schema id" if documented else None,
        ),
        NestedField(
            i + 4,
            "input_hash",
            StringType(),
            required=True,
            doc="sha256 of the Kafka value" if documented else None,
        ),
    )


#: The fields of a :class:`Provenance` its columns hold, in their order (the values'
#: :func:`provenance_values` and the slot paths of ``lake_columns``).
_PROVENANCE_NAMES = ("topic", "kafka_partition", "kafka_offset", "schema_version", "input_hash")
_provenance_getter = attrgetter(*_PROVENANCE_NAMES)


def provenance_values(p: Provenance) -> tuple[str, int, int, int, str]:
    """The values of the provenance columns (:func:`provenance_fields`) for ``p``."""
    values: tuple[str, int, int, int, str] = _provenance_getter(p)
    return values


def _slots(*steps: tuple[type[Any], str]) -> tuple[Any, ...]:
    """A ``TableDef.slot_paths`` entry: the ``__slots__`` descriptor of each (class, field)."""
    return tuple(cls.__dict__[name] for cls, name in steps)


def _empty_columns(schema: Schema) -> list[list[Any]]:
    return [[] for _ in schema.fields]


_SIGNAL_SCHEMA = Schema(
    NestedField(1, "tenant_id", StringType(), required=True),
    NestedField(2, "signal_id", StringType(), required=True),
    NestedField(3, "type", StringType(), required=True),
    NestedField(4, "value", DoubleType(), required=True),
    NestedField(5, "weight", DoubleType(), required=False, doc="null means 1.0"),
    NestedField(6, "source", StringType(), required=True),
    NestedField(7, "ts", TimestamptzType(), required=True, doc="event time"),
    *provenance_fields(8, documented=True),
    NestedField(13, "provenance_id", StringType(), required=True, doc="derived from the manifest"),
    NestedField(14, "policy_version", StringType(), required=True, doc="sha256 of the policies"),
    NestedField(15, "purpose", StringType(), required=True),
    NestedField(16, "retention", StringType(), required=True),
    NestedField(17, "license", StringType(), required=True),
    NestedField(18, "residency", StringType(), required=True),
)


def lane(stage: str, tenant_id: str | None) -> str:
    """The ledger lane of a record that reached a table through ``stage`` (see sinks.iceberg)."""
    return f"{stage}:{tenant_id or ''}"


class _Lanes(dict[str | None, str]):
    """``stage``'s lane of each tenant, made on its first lookup (:meth:`TableDef.lanes`)."""

    __slots__ = ("stage",)

    def __init__(self, stage: str) -> None:
        super().__init__()
        self.stage = stage

    def __missing__(self, tenant_id: str | None) -> str:
        made = self[tenant_id] = lane(self.stage, tenant_id)
        return made


def _signal_row(item: Tagged) -> tuple[Any, ...]:
    s, p, tags = item.signal, item.provenance, item.tags
    return (
        s.tenant_id,
        s.signal_id,
        s.type,
        s.value,
        s.weight,
        s.source,
        s.ts,
        *provenance_values(p),
        item.provenance_id,
        item.policy_version,
        tags.purpose,
        tags.retention,
        tags.license,
        tags.residency,
    )


def _signal_columns(items: Sequence[Tagged]) -> list[list[Any]]:
    """:func:`_signal_row` for many items, column-wise in one pass."""
    columns = _empty_columns(_SIGNAL_SCHEMA)
    (
        tenant_id,
        signal_id,
        type_,
        value,
        weight,
        source,
        ts,
        topic,
        partition,
        offset,
        schema_version,
        input_hash_,
        provenance_id,
        policy_version,
        purpose,
        retention,
        license_,
        residency,
    ) = (c.append for c in columns)
    for item in items:
        d = item.decoded
        s, p, tags = d.signal, d.provenance, item.tags
        tenant_id(s.tenant_id)
        signal_id(s.signal_id)
        type_(s.type)
        value(s.value)
        weight(s.weight)
        source(s.source)
        ts(s.ts)
        topic(p.topic)
        partition(p.kafka_partition)
        offset(p.kafka_offset)
        schema_version(p.schema_version)
        input_hash_(p.input_hash)
        provenance_id(item.provenance_id)
        policy_version(item.policy_version)
        purpose(tags.purpose)
        retention(tags.retention)
        license_(tags.license)
        residency(tags.residency)
    return columns


#: The signals' partitions: event day and residency (issue 19's layout). A commit writes one
#: data file per event day and residency it holds, whatever its tenants (a namespace mapped to
#: one residency holds that one: README "Residency"). The layout before (day x tenant,
#: :data:`LEGACY_PARTITION_SPECS`) wrote one per tenant, so a commit's cost grew with its
#: tenants (~1.8 ms of pyarrow CPU a file; DEVELOPERS.md "The lake's layout").
_SIGNAL_SPEC = PartitionSpec(
    PartitionField(source_id=7, field_id=1000, transform=DayTransform(), name="ts_day"),
    PartitionField(source_id=18, field_id=1001, transform=IdentityTransform(), name="residency"),
)

SIGNALS: TableDef[Tagged] = TableDef(
    name="signals",
    schema=_SIGNAL_SCHEMA,
    partition_spec=_SIGNAL_SPEC,
    row=_signal_row,
    # (attrgetter: C, no Python frame a row; Tagged.provenance and .signal read the same)
    provenance=attrgetter("decoded.provenance"),
    tenant=attrgetter("decoded.signal.tenant_id"),
    kafka_timestamp_ms=attrgetter("decoded.kafka_timestamp_ms"),
    lane=lambda item: lane("signals", item.signal.tenant_id),
    columns=_signal_columns,
    lane_column=("signals", "tenant_id"),
    tenant_column="tenant_id",
    slot_paths=(
        *(
            _slots((Tagged, "decoded"), (Decoded, "signal"), (Signal, name))
            for name in ("tenant_id", "signal_id", "type", "value", "weight", "source", "ts")
        ),
        *(
            _slots((Tagged, "decoded"), (Decoded, "provenance"), (Provenance, name))
            for name in _PROVENANCE_NAMES
        ),
        _slots((Tagged, "provenance_id")),
        _slots((Tagged, "policy_version")),
        *(
            _slots((Tagged, "tags"), (PolicyTags, name))
            for name in ("purpose", "retention", "license", "residency")
        ),
    ),
)

_SCORE_SCHEMA = Schema(
    NestedField(1, "tenant_id", StringType(), required=True),
    NestedField(2, "score", DoubleType(), required=True, doc="exact weighted mean, rounded once"),
    NestedField(3, "status", StringType(), required=True, doc="HEALTHY, WARN or CRITICAL"),
    NestedField(4, "updated_at", TimestamptzType(), required=True, doc="tenant's event time"),
    NestedField(5, "window_count", LongType(), required=True),
    NestedField(6, "window_weight", DoubleType(), required=True),
    NestedField(7, "provenance_id", StringType(), required=True, doc="the triggering signal's"),
    *provenance_fields(8),
    NestedField(13, "score_2dp", DecimalType(5, 2), required=True, doc="exact, half-even"),
    NestedField(14, "seq", LongType(), required=True, doc="the tenant's change number"),
)


def _score_row(item: ScoreChange) -> tuple[Any, ...]:
    return (
        item.tenant_id,
        item.score,
        item.status,
        item.updated_at,
        item.window_count,
        item.window_weight,
        item.provenance_id,
        *provenance_values(item.provenance),
        item.score_2dp,
        item.seq,
    )


def _score_columns(items: Sequence[ScoreChange]) -> list[list[Any]]:
    """:func:`_score_row` for many items, column-wise in one pass."""
    columns = _empty_columns(_SCORE_SCHEMA)
    (
        tenant_id,
        score,
        status,
        updated_at,
        window_count,
        window_weight,
        provenance_id,
        topic,
        partition,
        offset,
        schema_version,
        input_hash_,
        score_2dp,
        seq,
    ) = (c.append for c in columns)
    for item in items:
        p = item.provenance
        tenant_id(item.tenant_id)
        score(item.score)
        status(item.status)
        updated_at(item.updated_at)
        window_count(item.window_count)
        window_weight(item.window_weight)
        provenance_id(item.provenance_id)
        topic(p.topic)
        partition(p.kafka_partition)
        offset(p.kafka_offset)
        schema_version(p.schema_version)
        input_hash_(p.input_hash)
        score_2dp(item.score_2dp)
        seq(item.seq)
    return columns


SCORES: TableDef[ScoreChange] = TableDef(
    name="scores",
    schema=_SCORE_SCHEMA,
    # By the change's event day: one data file a commit (by tenant before).
    partition_spec=PartitionSpec(
        PartitionField(source_id=4, field_id=1000, transform=DayTransform(), name="updated_day"),
    ),
    row=_score_row,
    provenance=attrgetter("provenance"),
    tenant=attrgetter("tenant_id"),
    lane=lambda item: lane("scores", item.tenant_id),
    columns=_score_columns,
    lane_column=("scores", "tenant_id"),
    tenant_column="tenant_id",
    slot_paths=(
        *(
            _slots((ScoreChange, name))
            for name in (
                "tenant_id",
                "score",
                "status",
                "updated_at",
                "window_count",
                "window_weight",
                "provenance_id",
            )
        ),
        *(_slots((ScoreChange, "provenance"), (Provenance, name)) for name in _PROVENANCE_NAMES),
        _slots((ScoreChange, "score_2dp")),
        _slots((ScoreChange, "seq")),
    ),
)

_QUARANTINE_SCHEMA = Schema(
    NestedField(1, "tenant_id", StringType(), required=False, doc="null: did not decode"),
    NestedField(2, "reason", StringType(), required=True, doc="a ReasonCode"),
    NestedField(3, "stage", StringType(), required=True, doc="decode, validate, drift, dedupe"),
    NestedField(4, "batch_id", StringType(), required=False, doc="drift batch; null: one record"),
    NestedField(5, "detail", StringType(), required=True, doc="non-sensitive"),
    NestedField(6, "signal_id", StringType(), required=False),
    NestedField(7, "type", StringType(), required=False),
    NestedField(8, "value", DoubleType(), required=False),
    NestedField(9, "ts", TimestamptzType(), required=False, doc="event time"),
    NestedField(10, "psi", DoubleType(), required=False, doc="batch PSI vs the reference"),
    NestedField(11, "ks", DoubleType(), required=False, doc="batch KS statistic"),
    NestedField(12, "window_psi", DoubleType(), required=False),
    NestedField(13, "window_ks", DoubleType(), required=False),
    *provenance_fields(14, schema_version_required=False),
    NestedField(19, "kafka_key", BinaryType(), required=False),
    NestedField(20, "payload", BinaryType(), required=False, doc="the exact Kafka value"),
)

QuarantineItem = Rejected | Quarantined


def _quarantine_row(item: QuarantineItem) -> tuple[Any, ...]:
    if isinstance(item, Rejected):
        raw = item.record
        return (
            item.tenant_id,
            item.reason.value,
            item.stage,
            None,
            item.detail,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            # The provenance columns, spelt out: a record that did not decode has no
            # schema_version (null here, where its Provenance says 0).
            raw.topic,
            raw.partition,
            raw.offset,
            item.schema_version,
            item.input_hash,
            raw.key,
            raw.value,
        )
    d, v = item.decoded, item.verdict
    raw_key = d.raw.key if d.raw is not None else None
    payload = d.raw.value if d.raw is not None else None
    detail = "batch drifted from the reference" if v.type != "*schema" else "unknown writer fields"
    return (
        d.signal.tenant_id,
        (v.reason.value if v.reason is not None else "DRIFT_DETECTED"),
        "drift",
        v.batch_id,
        detail,
        d.signal.signal_id,
        d.signal.type,
        d.signal.value,
        d.signal.ts,
        v.psi,
        v.ks,
        v.window_psi,
        v.window_ks,
        *provenance_values(d.provenance),
        raw_key,
        payload,
    )


_PAYLOAD = 19  # index of ``payload`` in a quarantine row


def _sealed_quarantine_row(sealer: Sealer, item: QuarantineItem) -> tuple[Any, ...]:
    """The row with its ``payload`` sealed when the record carries a tenant; withheld (null)
    when that tenant's keys are destroyed (offboarded)."""
    row = _quarantine_row(item)
    payload = row[_PAYLOAD]
    raw: RawRecord | None
    if isinstance(item, Rejected):
        tenant = keyholder(item.tenant_id, item.reason.value)
        raw, ts = item.record, event_time_of_ms(item.record.timestamp_ms)
    else:
        tenant, raw, ts = item.decoded.signal.tenant_id, item.decoded.raw, item.decoded.signal.ts
    if not tenant or payload is None or raw is None:
        return row
    where = kafka_row(raw.topic, raw.partition, raw.offset)
    sealed = sealer.seal(tenant, SCOPE_QUARANTINE, "payload", where, ts, payload)
    return (*row[:_PAYLOAD], sealed, *row[_PAYLOAD + 1 :])


def _quarantine_provenance(item: QuarantineItem) -> Provenance:
    if isinstance(item, Quarantined):
        return item.decoded.provenance
    raw = item.record
    return Provenance(
        raw.topic, raw.partition, raw.offset, item.schema_version or 0, input_hash(raw.value)
    )


def _quarantine_lane(item: QuarantineItem) -> str:
    if isinstance(item, Quarantined):
        return lane("drift", item.decoded.signal.tenant_id)
    # decode and validate are stateless steps on the reading worker: partition order holds.
    tenant = item.tenant_id if item.stage not in {"decode", "validate"} else None
    return lane(item.stage, tenant)


QUARANTINE: TableDef[QuarantineItem] = TableDef(
    name="quarantine",
    schema=_QUARANTINE_SCHEMA,
    partition_spec=PartitionSpec(
        PartitionField(source_id=2, field_id=1000, transform=IdentityTransform(), name="reason"),
    ),
    row=_quarantine_row,
    provenance=_quarantine_provenance,
    tenant=lambda item: (
        item.decoded.signal.tenant_id if isinstance(item, Quarantined) else item.tenant_id or ""
    ),
    lane=_quarantine_lane,
    sealed_row=_sealed_quarantine_row,
)

_AUDIT_SCHEMA = Schema(
    NestedField(1, "batch_id", StringType(), required=True),
    NestedField(2, "tenant_id", StringType(), required=True),
    NestedField(3, "action", StringType(), required=True, doc="released or discarded"),
    NestedField(4, "rows", LongType(), required=True),
    NestedField(5, "actor", StringType(), required=True),
    NestedField(6, "at", TimestamptzType(), required=True, doc="wall clock of the decision"),
    NestedField(7, "note", StringType(), required=False),
    NestedField(8, "offsets", StringType(), required=True, doc="where released rows were sent"),
)


def _audit_row(item: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(item[f.name] for f in _AUDIT_SCHEMA.fields)


#: Written by ``igflow quarantine release|discard``: one row per decision on a batch.
QUARANTINE_AUDIT: TableDef[dict[str, Any]] = TableDef(
    name="quarantine_audit",
    schema=_AUDIT_SCHEMA,
    partition_spec=PartitionSpec(),
    row=_audit_row,
    provenance=lambda item: Provenance("", 0, 0, 0, ""),
    tenant=lambda item: str(item["tenant_id"]),
)

_DECONFLICTION_SCHEMA = Schema(
    NestedField(1, "tenant_id", StringType(), required=True),
    NestedField(2, "window_start", TimestamptzType(), required=True, doc="event time, inclusive"),
    NestedField(3, "window_end", TimestamptzType(), required=True, doc="event time, exclusive"),
    NestedField(4, "mode", StringType(), required=True, doc="full_intersection or cardinality"),
    NestedField(5, "partner", StringType(), required=True, doc="whose set answered"),
    NestedField(6, "selectors_sent", LongType(), required=True, doc="distinct, in the window"),
    # The catalog numbers a new table's ids afresh, top-level fields first: the list element
    # is 25, after field 24, so the ids here are the table's. A field added later takes 26.
    NestedField(
        7,
        "matched",
        ListType(25, StringType(), element_required=True),
        required=True,
        doc="matched selectors, first-seen order; empty in cardinality mode or without answer",
    ),
    NestedField(8, "count", LongType(), required=False, doc="null: no answer (see reason)"),
    NestedField(9, "reason", StringType(), required=False, doc="null: the partner answered"),
    NestedField(10, "signals", LongType(), required=True),
    NestedField(11, "late", LongType(), required=True, doc="signals from before the window"),
    NestedField(12, "selectors_rejected", LongType(), required=True, doc="empty or too long"),
    NestedField(13, "first_offset", LongType(), required=True),
    NestedField(14, "last_offset", LongType(), required=True),
    NestedField(15, "provenance_digest", StringType(), required=True, doc="sha256 chain of ids"),
    NestedField(16, "provenance_id", StringType(), required=True, doc="the window's last signal"),
    *provenance_fields(17),
    NestedField(22, "policy_version", StringType(), required=True, doc="sha256 of the policies"),
    NestedField(23, "key_epoch", LongType(), required=False, doc="the server key's epoch"),
    NestedField(24, "key_id", StringType(), required=False, doc="epoch.generation.fingerprint"),
)


def _deconfliction_row(item: DeconflictionResult) -> tuple[Any, ...]:
    return (
        item.tenant_id,
        item.window_start,
        item.window_end,
        item.mode,
        item.partner,
        item.selectors_sent,
        list(item.matched),
        item.count,
        item.reason,
        item.signals,
        item.late,
        item.selectors_rejected,
        item.first_offset,
        item.last_offset,
        item.provenance_digest,
        item.provenance_id,
        *provenance_values(item.provenance),
        item.policy_version,
        item.key_epoch,
        item.key_id,
    )


_MATCHED = 6  # index of ``matched`` in a deconfliction row


def _sealed_deconfliction_row(sealer: Sealer, item: DeconflictionResult) -> tuple[Any, ...]:
    """The row with each matched selector sealed (bound to its window and position); an
    offboarded tenant's selectors are withheld (the list is empty, ``count`` says how many)."""
    row = _deconfliction_row(item)
    where = window_row(item.window_start)
    matched: list[str] = []
    for i, selector in enumerate(item.matched):
        column = element_column("matched", i)
        sealed = sealer.seal_text(
            item.tenant_id, SCOPE_DECONFLICTION, column, where, item.window_start, selector
        )
        if sealed is None:
            matched = []
            break
        matched.append(sealed)
    return (*row[:_MATCHED], matched, *row[_MATCHED + 1 :])


#: Written by the psi step: one row per (tenant, window with selectors). Its provenance is the
#: window's last signal; a tenant's rows reach the sink in its offset order (see operators.psi).
DECONFLICTION: TableDef[DeconflictionResult] = TableDef(
    name="deconfliction",
    schema=_DECONFLICTION_SCHEMA,
    partition_spec=PartitionSpec(
        PartitionField(source_id=2, field_id=1000, transform=DayTransform(), name="window_day"),
        PartitionField(source_id=1, field_id=1001, transform=IdentityTransform(), name="tenant_id"),
    ),
    row=_deconfliction_row,
    provenance=lambda item: item.provenance,
    tenant=lambda item: item.tenant_id,
    lane=lambda item: lane("psi", item.tenant_id),
    sealed_row=_sealed_deconfliction_row,
)

TABLES: tuple[TableDef[Any], ...] = (SIGNALS, SCORES, QUARANTINE, QUARANTINE_AUDIT, DECONFLICTION)

#: The partition specs of tables created before the layout above (session 21): a table keeps
#: the spec it was created with (the sink writes by the table's own spec), and a replay lays its
#: scratch tables out like the original's (:attr:`sinks.lake_plan.CommitPlan.spec`), so these
#: still write the bytes ``tests/data/lake_golden.json`` recorded.
LEGACY_PARTITION_SPECS: Mapping[str, PartitionSpec] = {
    "signals": PartitionSpec(
        PartitionField(source_id=7, field_id=1000, transform=DayTransform(), name="ts_day"),
        PartitionField(source_id=1, field_id=1001, transform=IdentityTransform(), name="tenant_id"),
    ),
    "scores": PartitionSpec(
        PartitionField(source_id=1, field_id=1000, transform=IdentityTransform(), name="tenant_id"),
    ),
}
