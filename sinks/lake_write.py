"""One lake append's commit: pyiceberg's ``Table.append`` without its per-partition filters.

pyiceberg (0.12) splits a partitioned table's rows into files by filtering the whole table once
per partition value (an Acero plan each, so partitions x rows work: signals are partitioned by
day and tenant, ~10 partitions a commit); measured on ``benchmarks/lake_append.py`` (50,000
signals, 5,000-row appends) ``_filter_table`` was 1.35 of 5.2 s. :func:`append` computes the
same partition values (the spec's own transforms), groups the rows by one stable sort and takes
each partition's rows in the order the filter kept them, so every data file holds the same rows
in the same order and pyarrow writes the same bytes (``tests/unit/test_lake_golden.py``;
``tests/unit/test_lake_write.py`` holds the partitions to pyiceberg's). The rest is pyiceberg's
own: its schema check, its Parquet writer and statistics, the snapshot producer
``Transaction.append`` picks and the commit. Its ``write_file`` redoes per data file what depends
on the append alone (the conversion to the file schema, a ``Config`` read, the writer's options,
the statistics plan): :func:`_parquet_files` does that once per append (``benchmarks/
lake_append.py``, 200,000 rows in 13,000-row appends: ~10% less CPU), writing the same files and
manifest entries (``tests/unit/test_lake_write.py``); what the schemas alone give (the schema
check, the batch's schema as Iceberg's, the writer's options) is kept per schema
(:func:`_prepared`), and below the target file size the partitions are slices of the rows taken
once (:func:`partitions`, ``slice_below``).

A table whose partition sources are not top-level columns, or an unpartitioned one, goes through
``Transaction.append`` unchanged.

A lost commit race (``CommitFailedException``) leaves the attempt's data files written and
unreferenced. Given a :class:`Reuse`, :func:`append` keeps them, and the next attempt commits
those very files (new manifests, manifest list and commit) when it appends the same rows to a
table whose schema, partition spec, properties, location and format version are unchanged: the
files are a pure function of those, so they are the files it would write again (only their names
differ: a fresh attempt names its files after its own commit uuid). Otherwise it writes new files.
Files no commit references stay where they are (orphans, as after any lost race before).
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pyarrow as pa
from pyiceberg.io import FileIO, OutputFile
from pyiceberg.io.fileformat import DataFileStatistics, FileFormatFactory
from pyiceberg.io.pyarrow import (
    ParquetFormatWriter,
    StatisticsCollector,
    _check_pyarrow_schema_compatible,
    _get_parquet_writer_kwargs,
    _to_requested_schema,
    bin_pack_arrow_table,
    compute_statistics_plan,
    data_file_statistics_from_parquet_metadata,
    parquet_path_to_id_mapping,
    pyarrow_to_schema,
    write_file,
)
from pyiceberg.manifest import DataFile, DataFileContent, FileFormat
from pyiceberg.partitioning import PartitionFieldValue, PartitionKey, PartitionSpec
from pyiceberg.schema import Schema, sanitize_column_names
from pyiceberg.table import (
    DOWNCAST_NS_TIMESTAMP_TO_US_ON_WRITE,
    Table,
    TableProperties,
    Transaction,
    WriteTask,
)
from pyiceberg.table.locations import load_location_provider
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.typedef import Properties, Record
from pyiceberg.utils.concurrent import ExecutorFactory
from pyiceberg.utils.config import Config
from pyiceberg.utils.properties import property_as_bool, property_as_int

from core.catalog import updated_metadata

__all__ = ["Reuse", "append", "partitions"]


def partitions(
    spec: PartitionSpec,
    schema: Schema,
    data: pa.Table,
    order: np.ndarray | None = None,
    slice_below: int | None = None,
) -> list[tuple[PartitionKey, pa.Table]] | None:
    """Each partition's key and rows (in table order), partitions in the order of their first
    row: the partitions and rows pyiceberg's ``_determine_partitions`` yields, in a stable order
    (pyiceberg's comes from a multi-threaded ``group_by`` and varies between calls). ``None``
    when a partition source is not a top-level column (pyiceberg's path takes those).

    ``order``: the rows are ``data.take(order)``; each partition's rows are then taken from
    ``data`` once, not the whole table first and each partition again (the lake appender's
    sorted rows, :meth:`sinks.lake_batch.LakeBatch.rows`).

    ``slice_below``: when the rows take fewer bytes than that, they are taken once, grouped by
    partition, and each partition's rows are a slice of them (one ``take`` instead of one per
    partition; the same values, but a slice may count a few bytes more of a validity bitmap in
    ``nbytes``, so only where pyiceberg's split of a partition into files by ``nbytes`` cannot
    change: below its target file size, every partition is one file either way)."""
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
    grouped = None
    if slice_below is not None and not (len(groups) == 1 and whole):
        grouped = data.take(rows_at[by_code])
        if grouped.nbytes >= slice_below:
            grouped = None
    out = []
    for first, start, end in groups:
        at = int(code[first])
        field_values = []
        for field, distinct in zip(spec.fields, values, strict=True):
            at, index = divmod(at, max(1, len(distinct)))
            field_values.append(PartitionFieldValue(field=field, value=distinct[index]))
        key = PartitionKey(field_values=field_values, partition_spec=spec, schema=schema)
        if len(groups) == 1 and whole:
            rows = data
        elif grouped is not None:
            rows = grouped.slice(start, end - start)
        else:
            rows = data.take(rows_at[by_code[start:end]])
        out.append((key, rows.combine_chunks()))
    return out


def _data_files(
    io: FileIO,
    metadata: TableMetadata,
    task_schema: Schema,
    parts: list[tuple[PartitionKey, pa.Table]],
    commit_uuid: uuid.UUID,
) -> Iterator[DataFile]:
    """pyiceberg's ``_dataframe_to_data_files`` for a partitioned table, given its partitions
    and the batch's schema as Iceberg's (the way for a table :func:`_parquet_files` does not
    take)."""
    yield from write_file(
        io=io,
        table_metadata=metadata,
        tasks=_write_tasks(parts, task_schema, _target_file_size(metadata), commit_uuid),
    )


def _write_tasks(
    parts: list[tuple[PartitionKey, pa.Table]],
    schema: Schema,
    target: int,
    commit_uuid: uuid.UUID,
) -> Iterator[WriteTask]:
    """pyiceberg's write tasks for ``parts``: each partition's rows bin-packed to ``target``
    bytes, numbered in order."""
    counter = itertools.count(0)
    return (
        WriteTask(
            write_uuid=commit_uuid,
            task_id=next(counter),
            record_batches=batches,
            partition_key=key,
            schema=schema,
        )
        for key, rows in parts
        for batches in bin_pack_arrow_table(rows, target)
    )


def _target_file_size(metadata: TableMetadata) -> int:
    target = property_as_int(
        properties=metadata.properties,
        property_name=TableProperties.WRITE_TARGET_FILE_SIZE_BYTES,
        default=TableProperties.WRITE_TARGET_FILE_SIZE_BYTES_DEFAULT,
    )
    assert target is not None
    return target


@dataclasses.dataclass(frozen=True, slots=True)
class _Prepared:
    """What an append derives from the table's schema and properties and the batch's Arrow
    schema alone: pyiceberg's schema check (passed), the batch's schema as Iceberg's, the file
    schema, and what its Parquet writer derives for each data file (its options, statistics plan
    and column ids). Each is a pure function of those inputs; ~3 ms an append, the same for
    every append of a table, so :func:`_prepared` keeps the last few (read-only once built)."""

    table_schema: Schema
    arrow_schema: pa.Schema
    format_version: int
    downcast: bool
    properties: dict[str, str]
    task_schema: Schema
    file_schema: Schema
    kwargs: dict[str, Any]
    row_group_size: int | None
    plan: dict[int, StatisticsCollector]
    mapping: dict[str, int]

    def fits(
        self,
        table_schema: Schema,
        arrow_schema: pa.Schema,
        format_version: int,
        downcast: bool,
        properties: Mapping[str, str],
    ) -> bool:
        """Whether this was derived from these inputs (equal schemas, ids, metadata and all)."""
        return (
            self.format_version == format_version
            and self.downcast == downcast
            and self.table_schema.schema_id == table_schema.schema_id
            and self.table_schema == table_schema
            and self.arrow_schema.equals(arrow_schema, check_metadata=True)
            and self.properties == properties
        )


_PREPARED: list[_Prepared] = []  # the most recent first
_PREPARED_KEPT = 8
_PREPARED_LOCK = threading.Lock()


def _prepared(metadata: TableMetadata, arrow_schema: pa.Schema, downcast: bool) -> _Prepared:
    """The :class:`_Prepared` of an append of a batch of ``arrow_schema`` to a table at
    ``metadata``: one derived earlier from equal inputs, else derived now. Raises pyiceberg's
    ``ValueError`` when the batch's schema does not fit the table's (never kept)."""
    schema, version, properties = metadata.schema(), metadata.format_version, metadata.properties
    with _PREPARED_LOCK:
        for i, seen in enumerate(_PREPARED):
            if seen.fits(schema, arrow_schema, version, downcast, properties):
                _PREPARED.insert(0, _PREPARED.pop(i))
                return seen
    # As Transaction.append does before anything else: a mismatch raises its ValueError.
    _check_pyarrow_schema_compatible(
        schema,
        provided_schema=arrow_schema,
        downcast_ns_timestamp_to_us=downcast,
        format_version=version,
    )
    sanitized = sanitize_column_names(schema)
    file_schema = sanitized if sanitized != schema else schema
    prepared = _Prepared(
        table_schema=schema,
        arrow_schema=arrow_schema,
        format_version=version,
        downcast=downcast,
        properties=dict(properties),
        task_schema=pyarrow_to_schema(
            arrow_schema,
            name_mapping=schema.name_mapping,
            downcast_ns_timestamp_to_us=downcast,
            format_version=version,
        ),
        file_schema=file_schema,
        kwargs=_get_parquet_writer_kwargs(properties),
        row_group_size=property_as_int(
            properties=properties,
            property_name=TableProperties.PARQUET_ROW_GROUP_LIMIT,
            default=TableProperties.PARQUET_ROW_GROUP_LIMIT_DEFAULT,
        ),
        plan=compute_statistics_plan(file_schema, properties),
        mapping=parquet_path_to_id_mapping(file_schema),
    )
    with _PREPARED_LOCK:
        _PREPARED.insert(0, prepared)
        del _PREPARED[_PREPARED_KEPT:]
    return prepared


class _ParquetWriter(ParquetFormatWriter):
    """pyiceberg's ``ParquetFormatWriter`` (the same ``pq.ParquetWriter`` calls and statistics),
    given what it would derive from the table's schema and properties for each file."""

    def __init__(
        self, output_file: OutputFile, properties: Properties, prepared: _Prepared
    ) -> None:
        self._output_file = output_file
        self._file_schema = prepared.file_schema
        self._properties = properties
        self._writer = None
        self._fos = None
        self._parquet_writer_kwargs = prepared.kwargs
        self._row_group_size = prepared.row_group_size
        self._prepared = prepared

    def close(self) -> DataFileStatistics:
        if self._result is not None:
            return self._result
        if self._writer is None or self._fos is None:
            msg = "Cannot close a writer that was never written to"
            raise ValueError(msg)
        with self._fos:
            self._writer.close()
            self._result = data_file_statistics_from_parquet_metadata(
                parquet_metadata=self._writer.writer.metadata,
                stats_columns=self._prepared.plan,
                parquet_column_mapping=self._prepared.mapping,
            )
        return self._result


def _parquet_files(
    io: FileIO,
    metadata: TableMetadata,
    data: pa.Table,
    order: np.ndarray | None,
    commit_uuid: uuid.UUID,
    prepared: _Prepared,
) -> list[DataFile] | None:
    """pyiceberg's ``write_file`` over :func:`partitions` of ``data`` (at ``order``), with its
    per-file work that depends on the append alone done once: the same files, the same
    ``DataFile`` entries. ``None``: a table this does not take (not Parquet, a partition source
    not a top-level column, a conversion that changes a column's type); pyiceberg's way then.

    pyiceberg converts each file's batches to the table's file schema (``_to_requested_schema``:
    the field ids as metadata, any cast, column by column) and builds, per file, a ``Config``
    (the environment and ``.pyiceberg.yaml`` read again), the writer's options, the statistics
    plan and the Parquet column ids. Here the whole batch is converted once, before it is split
    into files: a column's conversion does not depend on which rows it holds, and when it keeps
    every column's type the rows' sizes, and so pyiceberg's split into files by size, are the
    same. The rest comes from ``prepared``.
    """
    properties = metadata.properties
    file_format = FileFormat(
        properties.get(TableProperties.WRITE_FILE_FORMAT, TableProperties.WRITE_FILE_FORMAT_DEFAULT)
    )
    if file_format != FileFormat.PARQUET:
        return None
    format_model = FileFormatFactory.get(file_format)
    converted = pa.Table.from_batches(
        [
            _to_requested_schema(
                requested_schema=prepared.file_schema,
                file_schema=prepared.task_schema,
                batch=batch,
                downcast_ns_timestamp_to_us=prepared.downcast,
                include_field_ids=True,
                format_model=format_model,
            )
            for batch in data.to_batches()
        ]
    )
    if converted.num_rows != data.num_rows or converted.schema.types != data.schema.types:
        return None
    target = _target_file_size(metadata)
    parts = partitions(metadata.spec(), metadata.schema(), converted, order, slice_below=target)
    if parts is None:
        return None
    locations = load_location_provider(
        table_location=metadata.location, table_properties=properties
    )
    extension = format_model.file_extension()

    def write(task: WriteTask) -> DataFile:
        path = locations.new_data_location(
            data_file_name=task.generate_data_file_filename(extension),
            partition_key=task.partition_key,
        )
        out = io.new_output(path)
        writer = _ParquetWriter(out, properties, prepared)
        with writer:
            writer.write(pa.Table.from_batches(task.record_batches))
        statistics = writer.result()
        return DataFile.from_args(
            content=DataFileContent.DATA,
            file_path=path,
            file_format=file_format,
            partition=task.partition_key.partition if task.partition_key else Record(),
            file_size_in_bytes=len(out),
            sort_order_id=None,
            spec_id=metadata.default_spec_id,
            equality_ids=None,
            key_metadata=None,
            **statistics.to_serialized_dict(),
        )

    tasks = _write_tasks(parts, prepared.task_schema, target, commit_uuid)
    # On pyiceberg's executor, as write_file does: the Parquet writer releases the GIL.
    return list(ExecutorFactory.get_or_create().map(write, tasks))


@dataclasses.dataclass(frozen=True, slots=True)
class _Written:
    """Data files an attempt wrote, and everything they are a pure function of: the rows (the
    batch and the order taken from it) and the table's side (the key, :func:`_files_key`)."""

    data: pa.Table
    order: np.ndarray | None
    key: tuple[object, ...]
    files: tuple[DataFile, ...]

    def fits(self, data: pa.Table, order: np.ndarray | None, key: tuple[object, ...]) -> bool:
        """Whether an attempt with these inputs would write these files (the same bytes)."""
        if self.key != key:
            return False
        if self.order is None or order is None:
            if self.order is not order:
                return False
        elif not (self.order is order or bool(np.array_equal(self.order, order))):
            return False
        return self.data is data or self.data.equals(data, check_metadata=True)


@dataclasses.dataclass(slots=True)
class Reuse:
    """One append's data files across its attempts (:func:`append`): the files the last attempt
    wrote, kept when its commit lost the race, and how often an attempt committed kept ones."""

    written: _Written | None = None
    reused: int = 0


def _files_key(metadata: TableMetadata, downcast: bool) -> tuple[object, ...]:
    """What of the table's metadata the data files depend on: the schema (ids and all), the
    default partition spec and its id, every property (file format, target size, Parquet
    options, location provider), the location and the format version; and the timestamp
    downcast setting."""
    schema = metadata.schema()
    return (
        schema.schema_id,
        schema,
        metadata.default_spec_id,
        metadata.spec(),
        dict(metadata.properties),
        metadata.location,
        metadata.format_version,
        downcast,
    )


def transaction(table: Table, *, autocommit: bool = False) -> Transaction:
    """A transaction on ``table`` whose ``table_metadata`` is computed once per state
    (:class:`_Transaction`): for the maintenance commits (expiry, manifest compaction) too."""
    return _Transaction(table, autocommit=autocommit)


class _Transaction(Transaction):
    """pyiceberg's transaction, its ``table_metadata`` computed once per state, without copies.

    pyiceberg recomputes it on every read: the table's metadata with the staged updates applied,
    then deep-copied (``update_table_metadata``). An append reads it ~15 times, and the metadata
    holds every snapshot's summary, so each read costs more as the table's history grows
    (measured: 0.5 of 3.8 s of ten 5,000-row appends to a new table). Here it is computed again
    only when the table's metadata or the staged updates change (both are replaced, never
    mutated, when they do), and not deep-copied (:func:`core.catalog.updated_metadata`; with
    nothing staged, the table's metadata itself). Once the snapshot is staged, pyiceberg's
    ``commit_transaction`` reads it for the table's uuid. The catalog's commit applies the
    updates to the current metadata itself, so what is committed does not come from here.
    """

    _cached: tuple[TableMetadata, tuple[object, ...], TableMetadata] | None = None

    @property
    def table_metadata(self) -> TableMetadata:
        base, updates = self._table.metadata, self._updates
        cached = self._cached
        if cached is None or cached[0] is not base or cached[1] is not updates:
            metadata = updated_metadata(base, updates) if updates else base
            cached = self._cached = (base, updates, metadata)
        return cached[2]


def append(
    table: Table,
    data: pa.Table,
    snapshot_properties: Mapping[str, str],
    order: np.ndarray | None = None,
    reuse: Reuse | None = None,
) -> None:
    """``table.append(data, snapshot_properties=...)``, writing the same files with less work
    per partition; with ``order``, of ``data.take(order)`` (taken once per partition). Raises
    what ``Table.append`` raises (``CommitFailedException`` on a lost race, ``ValueError`` on a
    schema mismatch).

    ``reuse``: one append's attempts share it; an attempt commits the data files an earlier one
    wrote (and lost the race with) when they are the files it would write: the same ``data``
    and ``order``, and a table whose schema, spec, properties, location and format version are
    unchanged (:func:`_files_key`). The manifests and the commit are always done again."""
    properties = dict(snapshot_properties)
    with _Transaction(table) as tx:
        metadata = tx.table_metadata
        spec, schema = metadata.spec(), metadata.schema()
        rows = data.num_rows if order is None else len(order)
        if spec.is_unpartitioned() or not rows:
            tx.append(data if order is None else data.take(order), snapshot_properties=properties)
            return
        downcast = Config().get_bool(DOWNCAST_NS_TIMESTAMP_TO_US_ON_WRITE) or False
        # Checks the batch's schema first, as Transaction.append does (its ValueError).
        prepared = _prepared(metadata, data.schema, downcast)
        merge = property_as_bool(
            metadata.properties,
            TableProperties.MANIFEST_MERGE_ENABLED,
            TableProperties.MANIFEST_MERGE_ENABLED_DEFAULT,
        )
        update = tx.update_snapshot(snapshot_properties=properties)
        producer = update.merge_append() if merge else update.fast_append()
        key = _files_key(metadata, downcast)
        kept = reuse.written if reuse is not None else None
        if kept is not None and kept.fits(data, order, key):
            assert reuse is not None
            files = list(kept.files)
            reuse.reused += 1
        else:
            written = _parquet_files(
                table.io, metadata, data, order, producer.commit_uuid, prepared
            )
            if written is None:
                parts = partitions(spec, schema, data, order)
                if parts is None:
                    # Nothing staged yet: the producer is dropped, pyiceberg's append stages
                    # its own.
                    tx.append(
                        data if order is None else data.take(order), snapshot_properties=properties
                    )
                    return
                written = list(
                    _data_files(
                        table.io, metadata, prepared.task_schema, parts, producer.commit_uuid
                    )
                )
            files = written
            if reuse is not None:
                # Kept before the commit: a lost race (its exception) leaves them for the next.
                reuse.written = _Written(data, order, key, tuple(files))
        with producer as append_files:
            for data_file in files:
                append_files.append_data_file(data_file)
