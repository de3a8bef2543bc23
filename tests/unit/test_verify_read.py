"""``igflow verify`` reads data files itself (:mod:`replay.lake_read`): the rows it digests are
exactly those pyiceberg's scan returns (old schemas, positional deletes), and damage to the
content (a changed byte, a missing or an extra row) never verifies identical, while another
order of rows and files does."""

from __future__ import annotations

import uuid
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyiceberg.catalog import Catalog
from pyiceberg.expressions import AlwaysTrue, And, EqualTo
from pyiceberg.io.pyarrow import schema_to_pyarrow
from pyiceberg.manifest import DataFile, DataFileContent, FileFormat
from pyiceberg.table import FileScanTask, Table
from pyiceberg.typedef import Record
from pyiceberg.types import StringType

import replay.verify as verify_module
from core.digest import digest_arrow
from core.settings import Settings
from replay.lake_read import _shape, read_files, same_shape
from replay.verify import _scan, _scan_both, _twins, digest_table, files_identical, plan, verify
from tests.unit.test_verify import landed  # noqa: F401  (the fixture: two landings of one input)

ROWS = pa.table(
    {
        "tenant_id": pa.array(["t1", "t2", "t1", None, "t2"] * 4, pa.large_string()),
        "kafka_partition": pa.array([0, 1, 0, 1, 0] * 4, pa.int32()),
        "kafka_offset": pa.array(range(20), pa.int64()),
        "value": pa.array([0.5, -0.0, 1e-310, 2.0, float("nan")] * 4),
    }
)


def _table(catalog: Catalog, name: str) -> Table:
    catalog.create_namespace_if_not_exists("read")
    return catalog.create_table(("read", name), schema=ROWS.schema)


def _scanned(table: Table, name: str) -> dict[object, object]:
    """The oracle: pyiceberg's own scan, digested."""
    return dict(digest_arrow(name, table.scan().to_arrow()))


def test_the_direct_read_digests_as_pyicebergs_scan(landed: Settings, catalog: Catalog) -> None:  # noqa: F811
    for name in ("signals", "scores", "quarantine", "deconfliction"):
        table = catalog.load_table(("a", name))
        assert digest_table(table, name) == _scanned(table, name)
        # The appender's files take the direct path (not pyiceberg's scan, the fallback).
        expected = _shape(schema_to_pyarrow(table.schema()))
        for task in plan(table):
            path = task.file.file_path.removeprefix("file://")
            assert _shape(pq.ParquetFile(path).schema_arrow) == expected


def test_files_of_an_older_schema_are_projected_as_pyiceberg_does(catalog: Catalog) -> None:
    table = _table(catalog, "evolved")
    table.append(ROWS.slice(0, 10))
    with table.update_schema() as update:
        update.add_column("note", StringType())
    table.append(ROWS.slice(10).append_column("note", pa.array(["x", None] * 5, pa.large_string())))
    with table.update_schema() as update:
        update.rename_column("value", "reading")
    # The first file lacks "note" (null in a scan) and names "value" by its old name.
    assert digest_table(table, "t") == _scanned(table, "t")
    data = pa.concat_tables(
        [
            d
            for _h, d, _direct in read_files(table, plan(table), rows=True, sha256=False)
            if d is not None
        ],
        promote_options="permissive",
    )
    assert data.column_names == ["tenant_id", "kafka_partition", "kafka_offset", "reading", "note"]
    assert data.num_rows == 20


def test_positional_deletes_are_applied(catalog: Catalog, tmp_path: Path) -> None:
    table = _table(catalog, "deleted")
    table.append(ROWS)
    (task,) = plan(table)
    deletes = tmp_path / "deletes.parquet"
    pq.write_table(
        pa.table({"file_path": [task.file.file_path] * 2, "pos": pa.array([2, 5], pa.int64())}),
        deletes,
    )
    delete_file = DataFile.from_args(
        content=DataFileContent.POSITION_DELETES,
        file_path=deletes.as_uri(),
        file_format=FileFormat.PARQUET,
        partition=Record(),
        record_count=2,
        file_size_in_bytes=deletes.stat().st_size,
    )
    with_deletes = FileScanTask(task.file, delete_files={delete_file})
    ((_hash, data, direct),) = read_files(table, [with_deletes], rows=True, sha256=False)
    assert data is not None and not direct
    assert data.column("kafka_offset").to_pylist() == [o for o in range(20) if o not in (2, 5)]


@pytest.mark.parametrize("change", ["missing", "extra"])
def test_a_missing_or_an_extra_row_is_a_mismatch(
    landed: Settings,  # noqa: F811
    catalog: Catalog,
    change: str,
) -> None:
    table = catalog.load_table(("b", "signals"))
    row = table.scan().to_arrow().slice(4, 1)
    key = ("signals", row["tenant_id"][0].as_py(), row["kafka_partition"][0].as_py())
    if change == "missing":  # pyiceberg's delete is copy-on-write: the file is rewritten
        table.delete(
            And(
                EqualTo("kafka_partition", row["kafka_partition"][0].as_py()),
                EqualTo("kafka_offset", row["kafka_offset"][0].as_py()),
            )
        )
    else:
        table.append(row)
    report = verify(landed, "a", "b", tables=["signals"])
    assert [g.key for g in report.mismatched] == [key]
    (group,) = report.mismatched
    assert group.original is not None and group.other is not None
    assert group.other.count == group.original.count + (1 if change == "extra" else -1)
    diff = report.differences[key]
    assert (len(diff.only_in_original), len(diff.only_in_other)) == (
        (0, 1) if change == "extra" else (1, 0)
    )


def test_a_changed_byte_in_a_data_file_never_verifies(landed: Settings, catalog: Catalog) -> None:  # noqa: F811
    table = catalog.load_table(("b", "signals"))
    before = files_identical(catalog.load_table(("a", "signals")), table)
    largest = max(plan(table), key=lambda t: t.file.file_size_in_bytes)
    path = Path(largest.file.file_path.removeprefix("file://"))
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 3] ^= 0x01  # inside the column chunks, not the footer
    path.write_bytes(bytes(blob))
    try:
        report = verify(landed, "a", "b", tables=["signals"])
    except (OSError, pa.ArrowException):  # the damaged page does not decode: refused, loudly
        pass
    else:
        assert not report.identical
        assert report.files["signals"][0] < before[0] or before[0] < before[1]


def test_other_orders_of_rows_and_files_verify_identical(
    landed: Settings,  # noqa: F811
    catalog: Catalog,
) -> None:
    table = catalog.load_table(("b", "signals"))
    rows = table.scan().to_arrow()
    reversed_rows = rows.take(pa.array(range(rows.num_rows - 1, -1, -1)))
    table.delete(AlwaysTrue())
    for start in range(0, rows.num_rows, 7):  # other files, rows in reverse
        table.append(reversed_rows.slice(start, 7))
    assert len(plan(table)) > 1
    report = verify(landed, "a", "b", tables=["signals"])
    assert report.identical and report.groups


# A byte-identical pair of files is digested once for both sides (replay.verify._scan_both): the
# sides' digests and hashes must be exactly those of a scan of each side alone, whatever files
# the sides share, and a file read through pyiceberg's projection is never paired.

SLICES = [(0, 5), (5, 12), (12, 20), (3, 9)]


def _appended(catalog: Catalog, name: str, slices: list[int]) -> Table:
    table = _table(catalog, name)
    for i in slices:
        start, stop = SLICES[i]
        table.append(ROWS.slice(start, stop - start))
    return table


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    a=st.lists(st.integers(0, len(SLICES) - 1), max_size=4),
    b=st.lists(st.integers(0, len(SLICES) - 1), max_size=4),
)
def test_pairs_digest_as_each_side_alone(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch, a: list[int], b: list[int]
) -> None:
    tag = uuid.uuid4().hex[:8]
    table_a, table_b = _appended(catalog, f"a{tag}", a), _appended(catalog, f"b{tag}", b)
    tasks_a, tasks_b = plan(table_a), plan(table_b)
    digested: list[int] = []

    def counting(name: str, data: pa.Table) -> dict[object, object]:
        digested.append(data.num_rows)
        return dict(digest_arrow(name, data))

    monkeypatch.setattr(verify_module, "digest_arrow", counting)
    both = _scan_both(table_a, table_b, "t", tasks_a, tasks_b)
    paired_rows = sum(digested)
    digested.clear()
    alone_a = _scan(table_a, "t", tasks_a, rows=True)
    alone_b = _scan(table_b, "t", tasks_b, rows=True)
    assert both == (*alone_a, *alone_b)
    # Each shared slice's file was read and digested once: the same bytes in both tables.
    shared = sum((Counter(a) & Counter(b)).values())
    assert _twins(alone_a[1], alone_b[1]) == (shared, len(a))
    assert paired_rows == sum(digested) - sum(
        SLICES[i][1] - SLICES[i][0] for i in (Counter(a) & Counter(b)).elements()
    )


def test_a_twin_with_delete_files_is_not_paired(catalog: Catalog, tmp_path: Path) -> None:
    table_a, table_b = _appended(catalog, "pa", [2]), _appended(catalog, "pb", [2])
    (task_a,), (task_b,) = plan(table_a), plan(table_b)
    deletes = tmp_path / "deletes.parquet"
    pq.write_table(
        pa.table({"file_path": [task_b.file.file_path], "pos": pa.array([1], pa.int64())}), deletes
    )
    delete_file = DataFile.from_args(
        content=DataFileContent.POSITION_DELETES,
        file_path=deletes.as_uri(),
        file_format=FileFormat.PARQUET,
        partition=Record(),
        record_count=1,
        file_size_in_bytes=deletes.stat().st_size,
    )
    with_deletes = FileScanTask(task_b.file, delete_files={delete_file})
    left, hashes_a, right, hashes_b = _scan_both(table_a, table_b, "t", [task_a], [with_deletes])
    assert hashes_a == hashes_b  # the same bytes, but not the same rows
    rows = ROWS.slice(12, 8)
    assert left == digest_arrow("t", rows)
    assert right == digest_arrow("t", pa.concat_tables([rows.slice(0, 1), rows.slice(2)]))


def test_tables_of_other_schemas_are_not_paired(catalog: Catalog) -> None:
    table_a, table_b = _appended(catalog, "sa", [0, 1]), _appended(catalog, "sb", [0, 1])
    with table_b.update_schema() as update:
        update.rename_column("value", "reading")
    assert not same_shape(table_a, table_b)
    tasks_a, tasks_b = plan(table_a), plan(table_b)
    both = _scan_both(table_a, table_b, "t", tasks_a, tasks_b)
    assert both == (
        *_scan(table_a, "t", tasks_a, rows=True),
        *_scan(table_b, "t", tasks_b, rows=True),
    )
