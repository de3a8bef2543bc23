"""A lost commit race costs a commit, not a whole append: the retry that selects the same rows
commits the data files the lost attempt wrote (and its digest and delta), and what it commits is
what an append without the race commits: the same rows, files, manifest entries and summary."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from pyiceberg.catalog import Catalog
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.table import Table

from sinks import lake_write
from sinks.iceberg import IcebergAppender, ensure_table, ledger
from sinks.lake_tables import QUARANTINE, SCORES, SIGNALS, TableDef
from tenancy.sealing import Sealer
from tests.memory_keys import MemoryKeys
from tests.unit.lake_golden import _quarantine
from tests.unit.test_iceberg_sink import _item
from tests.unit.test_lake_write import _batch


class _Race:
    """Once armed (``then``), the catalog's next commit first runs ``then``: another writer's
    commit on the table, so the armed one, its data files written, loses the race (injected
    at the catalog, which every write path meets). Counts the data-file writes
    (``_parquet_files``: the path the lake's tables take)."""

    def __init__(self, catalog: Catalog, monkeypatch: pytest.MonkeyPatch) -> None:
        self.writes = 0
        self.then: Any = None
        real_write, real_commit = lake_write._parquet_files, catalog.commit_table

        def write(*args: Any, **kwargs: Any) -> Any:
            self.writes += 1
            return real_write(*args, **kwargs)

        def commit_table(tbl: Any, requirements: Any, updates: Any) -> Any:
            then, self.then = self.then, None
            if then is not None:
                then()
            return real_commit(tbl, requirements, updates)

        monkeypatch.setattr(lake_write, "_parquet_files", write)
        monkeypatch.setattr(catalog, "commit_table", commit_table)  # undone after the test


def _committed(table: Table) -> dict[str, Any]:
    """What a table's current state holds, file names aside (a file is named after the commit
    uuid of the attempt that wrote it): its rows, the files' bytes and manifest entries, and
    the current snapshot's summary."""
    table.refresh()
    snapshot = table.current_snapshot()
    assert snapshot is not None and snapshot.summary is not None
    data_files = [t.file for t in table.scan().plan_files()]
    rows = table.scan().to_arrow()
    return {
        "rows": sorted(map(repr, rows.to_pylist())),
        "files": sorted(
            (str(f.partition), Path(f.file_path.removeprefix("file://")).read_bytes())
            for f in data_files
        ),
        "entries": sorted(
            (
                (
                    str(f.partition),
                    f.record_count,
                    f.file_size_in_bytes,
                    dict(f.column_sizes),
                    dict(f.value_counts),
                    dict(f.null_value_counts),
                    dict(f.lower_bounds),
                    dict(f.upper_bounds),
                    f.split_offsets,
                    f.spec_id,
                    f.file_format,
                )
                for f in data_files
            ),
            key=repr,
        ),
        "summary": dict(snapshot.summary.additional_properties),
        "operation": snapshot.summary.operation,
    }


@pytest.mark.parametrize("table_def", [SIGNALS, SCORES])
def test_a_retry_commits_the_lost_attempt_s_files_as_a_fresh_append_would(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, table_def: TableDef[Any]
) -> None:
    (tmp_path / "warehouse").mkdir()
    catalog = SqlCatalog(
        "t", uri=f"sqlite:///{tmp_path}/c.db", warehouse=(tmp_path / "warehouse").as_uri()
    )
    race = _Race(catalog, monkeypatch)
    mine, theirs = _batch(table_def, 5, 300, 3, 2), _batch(table_def, 6, 200, 2, 1)

    # Without a race: their commit, then mine.
    calm = ensure_table(catalog, "calm", table_def)
    lake_write.append(calm, theirs, {"who": "them"})
    lake_write.append(calm, mine, {"who": "me"})

    raced = ensure_table(catalog, "raced", table_def)
    other = catalog.load_table("raced." + table_def.name)  # another writer's handle
    race.then = lambda: lake_write.append(other, theirs, {"who": "them"})
    reuse = lake_write.Reuse()
    writes = race.writes
    with pytest.raises(CommitFailedException):
        lake_write.append(raced, mine, {"who": "me"}, reuse=reuse)
    assert race.writes == writes + 2  # mine, then theirs (committed in between)
    raced.refresh()
    lake_write.append(raced, mine, {"who": "me"}, reuse=reuse)
    assert reuse.reused == 1
    assert race.writes == writes + 2  # the retry wrote no data file
    assert _committed(raced) == _committed(calm)


def test_a_retry_writes_new_files_when_the_table_changed(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A property the files depend on changed under the lost attempt (with a commit that makes
    it lose: a property change alone does not): its files are not kept."""
    (tmp_path / "warehouse").mkdir()
    catalog = SqlCatalog(
        "t", uri=f"sqlite:///{tmp_path}/c.db", warehouse=(tmp_path / "warehouse").as_uri()
    )
    race = _Race(catalog, monkeypatch)
    mine = _batch(SCORES, 5, 300, 3, 2)
    table = ensure_table(catalog, "ns", SCORES)
    other = catalog.load_table("ns.scores")

    def change() -> None:
        with other.transaction() as tx:
            tx.set_properties({"write.parquet.compression-codec": "snappy"})
        lake_write.append(other, _batch(SCORES, 6, 10, 1, 1), {})

    race.then = change
    reuse = lake_write.Reuse()
    with pytest.raises(CommitFailedException):
        lake_write.append(table, mine, {}, reuse=reuse)
    table.refresh()
    writes = race.writes
    lake_write.append(table, mine, {}, reuse=reuse)
    table.refresh()
    assert reuse.reused == 0 and race.writes == writes + 1
    table.refresh()
    files = [t.file for t in table.scan().plan_files()]
    codecs = {
        pq.ParquetFile(f.file_path.removeprefix("file://"))
        .metadata.row_group(0)
        .column(0)
        .compression
        for f in files
    }
    assert codecs == {"SNAPPY"}
    assert table.scan().to_arrow().num_rows == 310


def _appender_run(
    catalog: Catalog, namespace: str, race: _Race | None, theirs: list[Any], mine: list[Any]
) -> tuple[Any, Table]:
    """``theirs`` committed by one appender, ``mine`` by another: with ``race``, theirs lands
    between the writing of my first attempt's files and its commit; else before mine."""
    table = ensure_table(catalog, namespace, SIGNALS)
    them = IcebergAppender(catalog.load_table(f"{namespace}.signals"), SIGNALS)
    me = IcebergAppender(table, SIGNALS)
    if race is None:
        them.append(theirs)
    else:
        race.then = lambda: them.append(theirs)
    return me.append(mine), table


def test_an_appender_s_retry_after_a_lost_race_reuses_its_files_digest_and_delta(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two writers on disjoint lanes (tenants), as a 2-process cluster: the loser's retry
    selects the same rows and commits its first attempt's files; the table is as without the
    race, and every row lands once."""
    race = _Race(catalog, monkeypatch)
    mine = [_item(p, o, "tenant-01") for p in range(2) for o in range(40)]
    theirs = [_item(p, o, "tenant-02") for p in range(2) for o in range(30)]
    _calm_result, calm = _appender_run(catalog, "calm", None, theirs, mine)
    writes = race.writes
    result, raced = _appender_run(catalog, "raced", race, theirs, mine)
    assert result.attempts == 2 and result.appended == 80
    assert race.writes == writes + 2  # my first attempt and theirs; my retry wrote none
    assert _committed(raced) == _committed(calm)
    assert ledger(raced) == ledger(calm)
    assert raced.scan().to_arrow().num_rows == 140


def test_a_retry_that_selects_other_rows_writes_new_files(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The winner landed some of the loser's rows (the same lane: a replay racing a flow): the
    retry keeps only the rows the ledger lacks and writes them anew; each row lands once."""
    race = _Race(catalog, monkeypatch)
    mine = [_item(0, o) for o in range(40)]
    theirs = [_item(0, o) for o in range(25)]
    _calm_result, calm = _appender_run(catalog, "calm", None, theirs, mine)
    writes = race.writes
    result, raced = _appender_run(catalog, "raced", race, theirs, mine)
    assert result.attempts == 2 and result.appended == 15 and result.skipped == 25
    assert race.writes == writes + 3  # my first attempt, theirs, my retry
    assert _committed(raced) == _committed(calm)
    offsets = raced.scan().to_arrow().column("kafka_offset").to_pylist()
    assert sorted(offsets) == list(range(40))


def test_a_sealed_table_s_retry_reuses_its_files_when_it_seals_alike(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Quarantine rows are sealed row by row, so each attempt builds its rows again: they are
    compared value by value, equal (sealing is deterministic), and the files are reused."""
    race = _Race(catalog, monkeypatch)
    rng = random.Random(7)
    items = [_quarantine(rng, "t.v1", rng.randrange(3), i) for i in range(120)]
    sealer = Sealer(MemoryKeys())
    assert not QUARANTINE.columnar(sealer)
    tables = {}
    for namespace in ("calm", "raced"):
        table = ensure_table(catalog, namespace, QUARANTINE)
        me = IcebergAppender(table, QUARANTINE, sealer=sealer)
        if namespace == "raced":
            race.then = _refuse
        writes = race.writes
        result = me.append(items)
        assert result.appended == 120
        assert result.attempts == (2 if namespace == "raced" else 1)
        assert race.writes == writes + 1  # one write of the files, whatever the attempts
        tables[namespace] = table
    assert _committed(tables["raced"]) == _committed(tables["calm"])


def _refuse() -> None:
    """A ``then`` for :class:`_Race` that makes the armed commit lose as ``test_retry``'s
    ``_lose`` does: the catalog answers ``CommitFailedException``."""
    msg = "another writer won"
    raise CommitFailedException(msg)


def test_a_base_snapshot_expired_under_an_attempt_is_a_lost_race(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression (session 26, a 2-process cluster in CI): the other process committed and
    expired the snapshot my attempt had refreshed to, deleting its manifest list, while my
    attempt wrote its data files. Reading that list raised ``FileNotFoundError``, which stopped
    my lake writer and the process. The table has moved on, so it is a lost race: the retry
    starts from the new snapshot and every row lands once."""
    table = ensure_table(catalog, "expired", SIGNALS)
    them = IcebergAppender(
        catalog.load_table("expired.signals"), SIGNALS, checkpoint_every=1, snapshots_kept=1
    )
    me = IcebergAppender(table, SIGNALS)
    them.append([_item(1, o, "tenant-02") for o in range(10)])
    real_write = lake_write._parquet_files
    armed = [lambda: them.append([_item(1, o, "tenant-02") for o in range(10, 20)])]

    def write(*args: Any, **kwargs: Any) -> Any:
        if armed:  # theirs commits and expires while my first attempt writes its files
            armed.pop()()
        return real_write(*args, **kwargs)

    monkeypatch.setattr(lake_write, "_parquet_files", write)
    result = me.append([_item(0, o, "tenant-01") for o in range(30)])
    assert not armed
    assert result.attempts == 2 and result.appended == 30
    table.refresh()
    assert len(table.metadata.snapshots) >= 1
    offsets = sorted(
        zip(
            table.scan().to_arrow().column("kafka_partition").to_pylist(),
            table.scan().to_arrow().column("kafka_offset").to_pylist(),
            strict=True,
        )
    )
    assert offsets == sorted([(0, o) for o in range(30)] + [(1, o) for o in range(20)])


def test_a_missing_file_with_the_table_unchanged_is_not_a_race(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nobody committed: a file missing is an error of its own, raised at once, not retried."""
    me = IcebergAppender(ensure_table(catalog, "missing", SIGNALS), SIGNALS)
    me.append([_item(0, o) for o in range(5)])
    calls: list[int] = []

    def write(*_args: Any, **_kwargs: Any) -> Any:
        calls.append(1)
        msg = "gone"
        raise FileNotFoundError(msg)

    monkeypatch.setattr(lake_write, "_parquet_files", write)
    with pytest.raises(FileNotFoundError, match="gone"):
        me.append([_item(0, o) for o in range(5, 10)])
    assert calls == [1]
