"""One lake append's commit: pyiceberg's ``Table.append`` without its per-partition filters.

pyiceberg (0.12) splits a partitioned table's rows into files by filtering the whole table once
per partition value (an Acero plan each, so partitions x rows work: signals are partitioned by
day and tenant, ~10 partitions a commit); measured on ``benchmarks/lake_append.py`` (50,000
signals, 5,000-row appends) ``_filter_table`` was 1.35 of 5.2 s. :func:`append` computes the
same partition values (the spec's own transforms), groups the rows by one stable sort and takes
each partition's rows in the order the filter kept them, so every data file holds the same rows
in the same order and pyarrow writes the same bytes (``tests/unit/test_lake_golden.py``;
``tests/unit/test_lake_write.py`` holds the partitions to pyiceberg's). The rest is pyiceberg's
own: its schema check, ``write_file`` (the Parquet writer and its statistics), the snapshot
producer ``Transaction.append`` picks and the commit.

A table whose partition sources are not top-level columns, or an unpartitioned one, goes through
``Transaction.append`` unchanged.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator, Mapping

import numpy as np
import pyarrow as pa
from pyiceberg.io import FileIO
from pyiceberg.io.pyarrow import (
    _check_pyarrow_schema_compatible,
    bin_pack_arrow_table,
    pyarrow_to_schema,
    write_file,
)
from pyiceberg.manifest import DataFile
from pyiceberg.partitioning import PartitionFieldValue, PartitionKey, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table import (
    DOWNCAST_NS_TIMESTAMP_TO_US_ON_WRITE,
    Table,
    TableProperties,
    Transaction,
    WriteTask,
)
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.table.update import update_table_metadata
from pyiceberg.utils.config import Config
from pyiceberg.utils.properties import property_as_bool, property_as_int

__all__ = ["append", "partitions"]


def partitions(
    spec: PartitionSpec, schema: Schema, data: pa.Table, order: np.ndarray | None = None
) -> list[tuple[PartitionKey, pa.Table]] | None:
    """Each partition's key and rows (in table order), partitions in the order of their first
    row: the partitions and rows pyiceberg's ``_determine_partitions`` yields, in a stable order
    (pyiceberg's comes from a multi-threaded ``group_by`` and varies between calls). ``None``
    when a partition source is not a top-level column (pyiceberg's path takes those).

    ``order``: the rows are ``data.take(order)``; each partition's rows are then taken from
    ``data`` once, not the whole table first and each partition again (the lake appender's
    sorted rows, :meth:`sinks.lake_batch.LakeBatch.rows`)."""
    code = np.zeros(data.num_rows, np.int64)
    values: list[list[object]] = []
    width = 1
    for field in spec.fields:
        name = schema.find_column_name(field.source_id)
        if name is None or name not in data.column_names:
            return None
        source = schema.find_field(field.source_id)
        transformed = field.transform.pyarrow_transform(source.field_type)(data.column(name))
        encoded = transformed.combine_chunks().dictionary_encode(null_encoding="encode")
        distinct = encoded.dictionary.to_pylist()
        code += encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64) * width
        width *= max(1, len(distinct))
        values.append(distinct)
    whole = order is None or (
        len(order) == data.num_rows and bool(np.array_equal(order, np.arange(data.num_rows)))
    )
    rows_at = np.arange(data.num_rows) if order is None else np.asarray(order, np.int64)
    code = code[rows_at]
    n = len(code)
    by_code = np.argsort(code, kind="stable")
    ordered = code[by_code]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]]) if n else np.array([], int)
    ends = np.r_[starts[1:], n]
    groups = sorted(zip(by_code[starts].tolist(), starts.tolist(), ends.tolist(), strict=True))
    out = []
    for first, start, end in groups:
        at = int(code[first])
        field_values = []
        for field, distinct in zip(spec.fields, values, strict=True):
            at, index = divmod(at, max(1, len(distinct)))
            field_values.append(PartitionFieldValue(field=field, value=distinct[index]))
        key = PartitionKey(field_values=field_values, partition_spec=spec, schema=schema)
        rows = data if len(groups) == 1 and whole else data.take(rows_at[by_code[start:end]])
        out.append((key, rows.combine_chunks()))
    return out


def _data_files(
    io: FileIO,
    metadata: TableMetadata,
    schema: pa.Schema,
    parts: list[tuple[PartitionKey, pa.Table]],
    commit_uuid: uuid.UUID,
) -> Iterator[DataFile]:
    """pyiceberg's ``_dataframe_to_data_files`` for a partitioned table, given its partitions."""
    target = property_as_int(
        properties=metadata.properties,
        property_name=TableProperties.WRITE_TARGET_FILE_SIZE_BYTES,
        default=TableProperties.WRITE_TARGET_FILE_SIZE_BYTES_DEFAULT,
    )
    assert target is not None
    task_schema = pyarrow_to_schema(
        schema,
        name_mapping=metadata.schema().name_mapping,
        downcast_ns_timestamp_to_us=Config().get_bool(DOWNCAST_NS_TIMESTAMP_TO_US_ON_WRITE)
        or False,
        format_version=metadata.format_version,
    )
    counter = itertools.count(0)
    yield from write_file(
        io=io,
        table_metadata=metadata,
        tasks=(
            WriteTask(
                write_uuid=commit_uuid,
                task_id=next(counter),
                record_batches=batches,
                partition_key=key,
                schema=task_schema,
            )
            for key, rows in parts
            for batches in bin_pack_arrow_table(rows, target)
        ),
    )


class _Transaction(Transaction):
    """pyiceberg's transaction, its ``table_metadata`` computed once per state.

    pyiceberg recomputes it on every read: the table's metadata with the staged updates applied,
    then deep-copied (``update_table_metadata``). An append reads it ~15 times, and the metadata
    holds every snapshot's summary, so each read costs more as the table's history grows
    (measured: 0.5 of 3.8 s of ten 5,000-row appends to a new table). Here it is computed again
    only when the table's metadata or the staged updates change (both are replaced, never
    mutated, when they do). The catalog's commit applies the updates to the current metadata
    itself, so what is committed does not come from here.
    """

    _cached: tuple[TableMetadata, tuple[object, ...], TableMetadata] | None = None

    @property
    def table_metadata(self) -> TableMetadata:
        base, updates = self._table.metadata, self._updates
        cached = self._cached
        if cached is None or cached[0] is not base or cached[1] is not updates:
            cached = self._cached = (base, updates, update_table_metadata(base, updates))
        return cached[2]


def append(
    table: Table,
    data: pa.Table,
    snapshot_properties: Mapping[str, str],
    order: np.ndarray | None = None,
) -> None:
    """``table.append(data, snapshot_properties=...)``, writing the same files with less work
    per partition; with ``order``, of ``data.take(order)`` (taken once per partition). Raises
    what ``Table.append`` raises (``CommitFailedException`` on a lost race, ``ValueError`` on a
    schema mismatch)."""
    properties = dict(snapshot_properties)
    with _Transaction(table) as tx:
        metadata = tx.table_metadata
        spec, schema = metadata.spec(), metadata.schema()
        rows = data.num_rows if order is None else len(order)
        if spec.is_unpartitioned() or not rows:
            tx.append(data if order is None else data.take(order), snapshot_properties=properties)
            return
        # Before anything else, as Transaction.append does: a mismatch raises its ValueError.
        _check_pyarrow_schema_compatible(
            schema,
            provided_schema=data.schema,
            downcast_ns_timestamp_to_us=Config().get_bool(DOWNCAST_NS_TIMESTAMP_TO_US_ON_WRITE)
            or False,
            format_version=metadata.format_version,
        )
        parts = partitions(spec, schema, data, order)
        if parts is None:
            tx.append(data if order is None else data.take(order), snapshot_properties=properties)
            return
        merge = property_as_bool(
            metadata.properties,
            TableProperties.MANIFEST_MERGE_ENABLED,
            TableProperties.MANIFEST_MERGE_ENABLED_DEFAULT,
        )
        update = tx.update_snapshot(snapshot_properties=properties)
        with update.merge_append() if merge else update.fast_append() as append_files:
            for data_file in _data_files(
                table.io, metadata, data.schema, parts, append_files.commit_uuid
            ):
                append_files.append_data_file(data_file)
