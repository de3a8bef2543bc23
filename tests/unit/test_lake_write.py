"""``sinks.lake_write.partitions`` splits a batch as pyiceberg's ``Table.append`` does: the same
partition keys, in the same order, each with the same rows in the same order (so pyarrow writes
the same files: ``test_lake_golden.py`` checks the bytes of whole appends)."""

from __future__ import annotations

import itertools
import random
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.io.pyarrow import _determine_partitions
from pyiceberg.transforms import DayTransform
from pyiceberg.types import StringType

from sinks import lake_write
from sinks.iceberg import ensure_table
from sinks.lake_tables import DECONFLICTION, QUARANTINE, SCORES, SIGNALS, TableDef
from sinks.lake_write import _Transaction, append, partitions
from tests.unit.lake_golden import _quarantine, _score, _tagged, _window

_MAKE = {"signals": _tagged, "scores": _score, "quarantine": _quarantine, "deconfliction": _window}


def _batch(table: TableDef[Any], seed: int, rows: int, days: int, chunks: int) -> pa.Table:
    """``rows`` items of ``table`` from the golden generators, event times spread over ``days``
    days, in ``chunks`` chunks."""
    rng = random.Random(seed)
    make = _MAKE[table.name]
    items = [make(rng, "t.v1", rng.randrange(3), i) for i in range(rows)]
    data = table.rows_to_arrow(items)
    for field in table.partition_spec.fields:
        if isinstance(field.transform, DayTransform):
            name = table.schema.find_column_name(field.source_id)
            assert name is not None
            shift = pa.array(
                [timedelta(days=rng.randrange(days)) for _ in range(rows)], pa.duration("us")
            )
            at = data.column_names.index(name)
            data = data.set_column(at, data.field(at), pc.add(data.column(name), shift))
    cuts = sorted(rng.randrange(rows + 1) for _ in range(chunks - 1))
    bounds = [0, *cuts, rows]
    return pa.concat_tables([data.slice(a, b - a) for a, b in itertools.pairwise(bounds)])


@pytest.mark.parametrize("table", [SIGNALS, SCORES, QUARANTINE, DECONFLICTION])
@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    rows=st.integers(1, 80),
    days=st.integers(1, 4),
    chunks=st.integers(1, 3),
)
def test_partitions_are_pyiceberg_s(
    table: TableDef[Any], seed: int, rows: int, days: int, chunks: int
) -> None:
    data = _batch(table, seed, rows, days, chunks)
    spec, schema = table.partition_spec, table.schema
    # pyiceberg finds the partitions with a multi-threaded group_by: their order varies between
    # calls (the files are the same; a FlakyFailure showed it). The rows in each, and their
    # order, must be the same; ours come in first-row order, the same on every call.
    expected = sorted(
        (
            (p.partition_key.partition, p.arrow_table_partition)
            for p in _determine_partitions(spec, schema, data)
        ),
        key=lambda pair: repr(pair[0]),
    )
    got = partitions(spec, schema, data)
    assert got is not None
    again = partitions(spec, schema, data)
    assert again is not None
    assert [key.partition for key, _ in again] == [key.partition for key, _ in got]
    got = sorted(got, key=lambda pair: repr(pair[0].partition))
    assert [(key.partition, rows) for key, rows in got] == expected
    for (_key, mine), (_k, theirs) in zip(got, expected, strict=True):
        assert mine.schema == theirs.schema  # with its field metadata (the ids)
        assert mine.num_columns == theirs.num_columns


@pytest.mark.parametrize("table", [SIGNALS, SCORES, QUARANTINE, DECONFLICTION])
@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    rows=st.integers(1, 80),
    days=st.integers(1, 4),
    data=st.data(),
)
def test_partitions_of_an_order_are_those_of_its_rows(
    table: TableDef[Any], seed: int, rows: int, days: int, data: st.DataObject
) -> None:
    """``partitions(..., order)`` (the appender's rows, untaken) equals ``partitions`` of
    ``data.take(order)``: the same keys in the same order, the same rows in each."""
    batch = _batch(table, seed, rows, days, 1)
    chosen = data.draw(st.lists(st.integers(0, rows - 1), unique=True, min_size=1))
    if data.draw(st.booleans()):
        chosen = list(range(rows))  # every row, in order: the whole table's shortcut
    order = np.array(chosen, np.int64)
    spec, schema = table.partition_spec, table.schema
    expected = partitions(spec, schema, batch.take(order))
    got = partitions(spec, schema, batch, order)
    assert expected is not None and got is not None
    assert [(k.partition, r) for k, r in got] == [(k.partition, r) for k, r in expected]
    # Slices of the rows taken once (under the size), or taken per partition (over it): the same.
    for below in (1 << 40, data.draw(st.integers(1, max(1, batch.nbytes)))):
        sliced = partitions(spec, schema, batch, order, slice_below=below)
        assert sliced is not None
        assert [(k.partition, r) for k, r in sliced] == [(k.partition, r) for k, r in expected]
        assert [r.schema for _k, r in sliced] == [r.schema for _k, r in expected]


@pytest.mark.parametrize("target", [None, 4000])
@pytest.mark.parametrize("table_def", [SIGNALS, SCORES, QUARANTINE, DECONFLICTION])
def test_an_append_writes_what_table_append_writes(
    tmp_path: Any, table_def: TableDef[Any], target: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same data through ``Table.append`` and ``lake_write.append``: equal file bytes per
    partition, equal manifest entries (each file's statistics) and equal snapshot summaries.
    With a small target file size (partitions split into several files by size), against
    ``lake_write.append`` without ``_parquet_files`` (pyiceberg's ``write_file`` on our
    partitions, as before it): ``Table.append`` splits a partition differently there (its
    filter keeps the table's chunks), with main's code as with this."""
    (tmp_path / "warehouse").mkdir()
    catalog = SqlCatalog(
        "t", uri=f"sqlite:///{tmp_path}/c.db", warehouse=(tmp_path / "warehouse").as_uri()
    )
    data = _batch(table_def, 7, 500, 3, 2)
    files, entries, summaries = {}, {}, {}
    # "ordered": the same rows given as a shuffled table and the order that sorts it back.
    shuffle = np.random.default_rng(7).permutation(data.num_rows)
    shuffled = data.take(shuffle)
    back = np.argsort(shuffle)
    real = lake_write._parquet_files

    def before(t: Any) -> None:
        monkeypatch.setattr(lake_write, "_parquet_files", lambda *_args: None)
        append(t, data, {"k": "v"})
        monkeypatch.setattr(lake_write, "_parquet_files", real)

    def theirs(t: Any) -> None:
        if target is None:
            t.append(data, snapshot_properties={"k": "v"})
        else:
            before(t)

    for namespace, write in (
        ("theirs", theirs),
        ("mine", lambda t: append(t, data, {"k": "v"})),
        ("ordered", lambda t: append(t, shuffled, {"k": "v"}, back)),
    ):
        table = ensure_table(catalog, namespace, table_def)
        if target is not None:
            with table.transaction() as tx:
                tx.set_properties({"write.target-file-size-bytes": str(target)})
        write(table)
        snapshot = table.current_snapshot()
        assert snapshot is not None and snapshot.summary is not None
        assert snapshot.summary["k"] == "v"
        assert snapshot.summary["added-records"] == "500"
        summaries[namespace] = snapshot.summary.additional_properties
        data_files = [t.file for t in table.scan().plan_files()]
        files[namespace] = sorted(
            (str(f.partition), Path(f.file_path.removeprefix("file://")).read_bytes())
            for f in data_files
        )
        entries[namespace] = sorted(
            (
                (
                    str(f.partition),
                    f.record_count,
                    f.file_size_in_bytes,
                    dict(f.column_sizes),
                    dict(f.value_counts),
                    dict(f.null_value_counts),
                    dict(f.nan_value_counts),
                    dict(f.lower_bounds),
                    dict(f.upper_bounds),
                    f.split_offsets,
                    f.spec_id,
                    f.sort_order_id,
                    f.file_format,
                )
                for f in data_files
            ),
            key=repr,
        )
    assert len({partition for partition, _ in files["mine"]}) > 2
    if target is not None:  # some partition in several files
        assert len(files["mine"]) > len({partition for partition, _ in files["mine"]})
    assert files["mine"] == files["theirs"] == files["ordered"]
    assert entries["mine"] == entries["theirs"] == entries["ordered"]
    assert summaries["mine"] == summaries["theirs"] == summaries["ordered"]


def test_the_per_file_work_is_done_once_per_append(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lake's tables take the path that converts a batch and builds the writer's options
    once (``_parquet_files``), not pyiceberg's per-file one."""
    (tmp_path / "warehouse").mkdir()
    catalog = SqlCatalog(
        "t", uri=f"sqlite:///{tmp_path}/c.db", warehouse=(tmp_path / "warehouse").as_uri()
    )
    taken = []
    real = lake_write._parquet_files

    def spy(*args: Any, **kwargs: Any) -> Any:
        files = real(*args, **kwargs)
        taken.append(files is not None)
        return files

    monkeypatch.setattr(lake_write, "_parquet_files", spy)
    for table_def in (SIGNALS, SCORES, QUARANTINE, DECONFLICTION):
        append(ensure_table(catalog, "ns", table_def), _batch(table_def, 3, 50, 2, 2), {})
    assert taken == [True] * 4


def test_the_transaction_s_metadata_follows_its_updates(tmp_path: Any) -> None:
    """Computed once per state, and again after each staged update or table change: what
    pyiceberg's own transaction computes (its wall-clock ``last_updated_ms`` aside)."""
    (tmp_path / "warehouse").mkdir()
    catalog = SqlCatalog(
        "t", uri=f"sqlite:///{tmp_path}/c.db", warehouse=(tmp_path / "warehouse").as_uri()
    )
    table = ensure_table(catalog, "ns", SCORES)
    mine, theirs = _Transaction(table), table.transaction()

    def same() -> None:
        got, want = mine.table_metadata, theirs.table_metadata
        assert got is mine.table_metadata  # cached while nothing changes
        assert got.model_copy(update={"last_updated_ms": 0}) == want.model_copy(
            update={"last_updated_ms": 0}
        )

    same()
    for tx in (mine, theirs):
        tx.set_properties({"a": "1"})
    same()
    assert mine.table_metadata.properties["a"] == "1"
    append(table, _batch(SCORES, 3, 20, 1, 1), {})  # the table's metadata changes under both
    same()
    assert mine.table_metadata.current_snapshot_id == table.metadata.current_snapshot_id


def test_what_an_append_derives_from_schemas_is_kept_per_inputs(tmp_path: Any) -> None:
    """``_prepared`` reuses what it derived only for equal inputs; a batch whose schema does
    not fit the table raises pyiceberg's ValueError every time (a failed check is never kept)."""
    (tmp_path / "warehouse").mkdir()
    catalog = SqlCatalog(
        "t", uri=f"sqlite:///{tmp_path}/c.db", warehouse=(tmp_path / "warehouse").as_uri()
    )
    table = ensure_table(catalog, "ns", SCORES)
    data = _batch(SCORES, 3, 20, 1, 1)
    first = lake_write._prepared(table.metadata, data.schema, False)
    table.refresh()  # a new metadata object, equal schema: what was derived is reused
    assert lake_write._prepared(table.metadata, SCORES.schema.as_arrow(), False) is first
    assert lake_write._prepared(table.metadata, data.schema, True) is not first
    other = ensure_table(catalog, "ns", SIGNALS)
    assert lake_write._prepared(other.metadata, _batch(SIGNALS, 3, 20, 1, 1).schema, False) != first
    wrong = data.drop_columns(["score"])
    for _ in range(2):
        with pytest.raises(ValueError, match="score"):
            append(table, wrong, {})
    with table.update_schema() as update:
        update.add_column("extra", StringType(), required=False)
    table.refresh()
    evolved = lake_write._prepared(table.metadata, data.schema, False)
    assert evolved is not first and evolved.table_schema.find_field("extra")
    append(table, data, {})
    assert table.scan().to_arrow().num_rows == 20
