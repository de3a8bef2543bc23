"""Reading a table's live data files for ``igflow verify``: each file once, straight to pyarrow.

pyiceberg's scan reads a data file through a per-file pipeline written in Python (schema
visitors, a projection, a dataset scanner, a cast to the requested schema): on the hundreds of
small files per side of a 200k-signal lake that was ~43% of a verify's samples. Here a bounded
pool of threads reads each planned file's bytes once; its SHA-256 (for the byte-identical twins,
:func:`replay.verify.files_identical`) and its rows (for the digest) both come from those bytes,
and pyarrow decodes the Parquet file in C++ without the GIL. Results are yielded in plan order,
at most 16 files read ahead, so memory holds a bounded window of files, not the table. Each read
says whether its rows came from the bytes alone: only such files, in tables of the same shape
(:func:`same_shape`), may stand for a byte-identical twin (:func:`replay.verify._scan_both`).

A file is read this way only when nothing about it needs pyiceberg's projection: no delete files
(positional deletes must be applied) and a physical schema equal to the table's current one
(field ids, names and types, in order; a file written before a schema change may miss, rename or
promote a column). Any other file goes through pyiceberg's :class:`ArrowScan`, alone, so the rows
digested are exactly those a scan returns.
"""

from __future__ import annotations

import hashlib
import os
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import pyarrow as pa
import pyarrow.parquet as pq
from pyiceberg.expressions import AlwaysTrue
from pyiceberg.io.pyarrow import ArrowScan, schema_to_pyarrow
from pyiceberg.manifest import FileFormat
from pyiceberg.table import FileScanTask, Table

__all__ = ["FileRead", "read_files", "same_shape", "whole"]

#: Reader threads: file reads and Parquet decoding release the GIL, so a few overlap the digest
#: (the consumer) on two cores; more only queue.
_THREADS = min(4, (os.cpu_count() or 1) + 2)
#: Files in flight per thread: bounds memory to a window of (small) files.
_AHEAD = 4

_FIELD_ID = b"PARQUET:field_id"

#: ``(sha256 hex of the file's bytes or None, its rows in schema order or None, whether the
#: rows were decoded from the bytes alone)``: ``False`` when they went through pyiceberg's
#: projection (delete files, another schema), or were not asked for.
FileRead = tuple[str | None, pa.Table | None, bool]


def _shape(schema: pa.Schema) -> list[tuple[str, bytes | None, pa.DataType]]:
    return [(f.name, (f.metadata or {}).get(_FIELD_ID), f.type) for f in schema]


def same_shape(a: Table, b: Table) -> bool:
    """Whether a file read directly from either table gives the same rows: their current
    schemas have the same field ids, names and types, in order."""
    return _shape(schema_to_pyarrow(a.schema())) == _shape(schema_to_pyarrow(b.schema()))


def whole(task: FileScanTask) -> bool:
    """Whether ``task``'s rows may come from its file's bytes alone: a Parquet file without
    delete files (the direct read then also checks the file's schema)."""
    return not task.delete_files and task.file.file_format == FileFormat.PARQUET


def read_files(
    table: Table, tasks: Sequence[FileScanTask], *, rows: bool, sha256: bool
) -> Iterator[FileRead]:
    """Each of ``tasks``' files once, in plan order: its SHA-256 when ``sha256``, its rows (every
    column of the current schema, in schema order) when ``rows``, and whether those rows were
    decoded from the file's bytes alone (:data:`FileRead`)."""
    expected = _shape(schema_to_pyarrow(table.schema()))
    fallback: ArrowScan | None = None

    def read(task: FileScanTask) -> FileRead:
        nonlocal fallback
        direct = whole(task)
        with table.io.new_input(task.file.file_path).open() as stream:
            blob = stream.read()
        digest = hashlib.sha256(blob).hexdigest() if sha256 else None
        if not rows:
            return digest, None, False
        if direct:
            parquet = pq.ParquetFile(pa.BufferReader(blob))
            direct = _shape(parquet.schema_arrow) == expected
            if direct:
                return digest, parquet.read(use_threads=False), True
        if fallback is None:
            fallback = ArrowScan(table.metadata, table.io, table.schema(), AlwaysTrue())
        return digest, fallback.to_table([task]), False

    with ThreadPoolExecutor(_THREADS, thread_name_prefix="verify-read") as pool:
        pending: deque[Future[FileRead]] = deque()
        try:
            for task in tasks:
                if len(pending) >= _THREADS * _AHEAD:
                    yield pending.popleft().result()
                pending.append(pool.submit(read, task))
            while pending:
                yield pending.popleft().result()
        finally:  # a failure or an abandoned generator: read no further files
            for future in pending:
                future.cancel()
