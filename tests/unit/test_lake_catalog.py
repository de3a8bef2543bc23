"""core.catalog.LakeSqlCatalog: pyiceberg's SQL catalog without SQLAlchemy and with a cheaper
commit. What it writes is what pyiceberg's writes (rows, files, metadata, the ``iceberg_tables``
row), another pyiceberg client reads and commits to the same tables, and a commit that lost a race
to another writer still fails with ``CommitFailedException``; any other catalog type, or a SQL
catalog on another database, opens as pyiceberg's own."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import Any

import pyiceberg.catalog
import pytest
from pyiceberg.catalog import Catalog
from pyiceberg.catalog.memory import InMemoryCatalog
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.exceptions import CommitFailedException, NoSuchTableError
from pyiceberg.serializers import FromInputFile
from pyiceberg.table import Table
from pyiceberg.table.update import update_table_metadata

import core.catalog
from core.catalog import LakeSqlCatalog, catalog, updated_metadata
from core.settings import Settings
from sinks import lake_write
from sinks.iceberg import ensure_table
from sinks.lake_tables import SCORES, SIGNALS, TableDef
from tests.unit.test_iceberg_lost_race import _committed
from tests.unit.test_lake_write import _batch


def _catalogs(tmp_path: Path) -> tuple[LakeSqlCatalog, SqlCatalog]:
    """A LakeSqlCatalog and pyiceberg's own (another client) on one SQLite catalog."""
    (tmp_path / "warehouse").mkdir(parents=True, exist_ok=True)
    properties = {
        "uri": f"sqlite:///{tmp_path}/c.db",
        "warehouse": (tmp_path / "warehouse").as_uri(),
    }
    return LakeSqlCatalog("t", **properties), SqlCatalog("t", **properties)


def _row(catalog: Catalog, table: str) -> tuple[str, str]:
    """The table's ``iceberg_tables`` row, read from the catalog's SQLite file."""
    path = catalog.properties["uri"].removeprefix("sqlite:///")
    with contextlib.closing(sqlite3.connect(path)) as connection:
        ((location, previous),) = connection.execute(
            "SELECT metadata_location, previous_metadata_location FROM iceberg_tables "
            "WHERE table_name = ?",
            (table,),
        ).fetchall()
    return location, previous


def test_a_sql_catalog_opens_fast_any_other_as_pyiceberg_s(lake_settings: Settings) -> None:
    assert type(catalog(lake_settings)) is LakeSqlCatalog
    other = core.catalog._open("mem", {"type": "in-memory"}, None)
    assert type(other) is InMemoryCatalog  # pyiceberg's (a SqlCatalog subclass, generic path)
    other.create_namespace("ns")
    table = ensure_table(other, "ns", SIGNALS)
    lake_write.append(table, _batch(SIGNALS, 1, 50, 2, 1), {"who": "me"})
    assert other.load_table(("ns", SIGNALS.name)).scan().to_arrow().num_rows == 50


def test_the_configuration_s_sql_catalog_opens_fast(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class _Config:  # what .pyiceberg.yaml / PYICEBERG_CATALOG__LAKE__* would say
        def get_catalog_config(self, name: str) -> dict[str, str] | None:
            return (
                {"type": "SQL", "uri": f"sqlite:///{tmp_path}/yaml.db"} if name == "lake" else None
            )

    monkeypatch.setattr(pyiceberg.catalog, "_ENV_CONFIG", _Config())
    opened = core.catalog._open("lake", {"warehouse": tmp_path.as_uri()}, None)
    assert type(opened) is LakeSqlCatalog
    assert opened.properties["uri"] == f"sqlite:///{tmp_path}/yaml.db"
    assert type(core.catalog._open("other", {"type": "in-memory"}, None)) is InMemoryCatalog


def test_updated_metadata_is_pyiceberg_s_without_the_copy(tmp_path: Path) -> None:
    fast, _ = _catalogs(tmp_path)
    table = ensure_table(fast, "ns", SCORES)
    lake_write.append(table, _batch(SCORES, 2, 80, 3, 1), {"who": "me"})
    base, location = table.metadata, table.metadata_location
    before = base.model_dump_json()
    tx = lake_write.transaction(table)
    tx.set_properties({"k": "v"})
    with tx.update_snapshot().fast_append() as append:
        for data_file in table.scan().plan_files():
            append.append_data_file(data_file.file)
    updates = tx._updates
    for at in (None, location):
        mine = updated_metadata(base, updates, at)
        theirs = update_table_metadata(base, updates, metadata_location=at)
        assert mine == theirs
        assert mine.model_dump_json() == theirs.model_dump_json()
    # only set-properties: last_updated_ms is "now" in both, the rest equal
    props = tuple(u for u in updates if u.action == "set-properties")
    mine, theirs = updated_metadata(base, props, location), update_table_metadata(base, props)
    assert mine.properties["k"] == "v" and mine.last_updated_ms >= base.last_updated_ms
    assert mine.model_copy(update={"last_updated_ms": 0, "metadata_log": []}) == theirs.model_copy(
        update={"last_updated_ms": 0, "metadata_log": []}
    )
    assert mine.metadata_log[-1].metadata_file == location
    assert base.model_dump_json() == before  # the base is never changed
    assert updated_metadata(base, ()) is base


@pytest.mark.parametrize("table_def", [SIGNALS, SCORES])
def test_the_same_commits_as_pyiceberg_s_catalog(tmp_path: Path, table_def: TableDef[Any]) -> None:
    fast, _ = _catalogs(tmp_path / "fast")
    (tmp_path / "slow").mkdir()
    _, slow = _catalogs(tmp_path / "slow")
    tables = {}
    for name, cat in (("fast", fast), ("slow", slow)):
        table = ensure_table(cat, "ns", table_def)
        for seed in range(4):
            lake_write.append(table, _batch(table_def, seed, 120, 3, 2), {"seed": str(seed)})
        tables[name] = table
    assert _committed(tables["fast"]) == _committed(tables["slow"])
    for name, cat in (("fast", fast), ("slow", slow)):
        location, previous = _row(cat, table_def.name)
        table = tables[name]
        assert location == table.metadata_location
        assert previous == table.metadata.metadata_log[-1].metadata_file
        # what the file holds is what the writer holds
        assert FromInputFile.table_metadata(table.io.new_input(location)) == table.metadata
    a, b = tables["fast"].metadata, tables["slow"].metadata
    assert len(a.snapshots) == len(b.snapshots) == 4
    assert [e.metadata_file.rsplit("/", 1)[1][:5] for e in a.metadata_log] == [
        e.metadata_file.rsplit("/", 1)[1][:5] for e in b.metadata_log
    ]
    assert a.properties == b.properties


def test_one_file_io_per_properties_and_scheme(tmp_path: Path) -> None:
    # pyiceberg builds a FileIO (a reference cycle, with its filesystems) for every load and
    # commit; this catalog builds one per set of properties and scheme, and the table's
    # appends and reads work through it.
    fast, _ = _catalogs(tmp_path)
    table = ensure_table(fast, "ns", SIGNALS)
    for seed in range(3):
        lake_write.append(table, _batch(SIGNALS, seed, 40, 2, 1), {"seed": str(seed)})
    loaded = fast.load_table(("ns", SIGNALS.name))
    assert loaded.io is table.io is fast.load_table(("ns", SIGNALS.name)).io
    assert loaded.scan().to_arrow().num_rows == 120
    assert fast._load_file_io({"extra": "1"}) is fast._load_file_io({"extra": "1"})
    assert fast._load_file_io({"extra": "1"}) is not fast._load_file_io({"extra": "2"})
    assert fast._load_file_io({"odd": ["unhashable"]}) is not fast._load_file_io(
        {"odd": ["unhashable"]}
    )
    assert len(fast._file_ios) <= core.catalog.FILE_IOS_KEPT


def test_another_pyiceberg_client_reads_and_commits_the_same_table(tmp_path: Path) -> None:
    fast, other = _catalogs(tmp_path)
    parses = []
    parse = FromInputFile.table_metadata

    def counted(*args: Any, **kwargs: Any) -> Any:
        parses.append(args)
        return parse(*args, **kwargs)

    table = ensure_table(fast, "ns", SIGNALS)
    lake_write.append(table, _batch(SIGNALS, 1, 100, 2, 1), {"who": "fast"})
    theirs = other.load_table(("ns", SIGNALS.name))
    assert theirs.metadata_location == table.metadata_location
    assert theirs.metadata == table.metadata
    assert theirs.scan().to_arrow().num_rows == 100
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(FromInputFile, "table_metadata", staticmethod(counted))
        table.refresh()  # the file it wrote: not read again
        lake_write.append(table, _batch(SIGNALS, 2, 100, 2, 1), {"who": "fast"})
        assert parses == []
        theirs.refresh()
        lake_write.append(theirs, _batch(SIGNALS, 3, 100, 2, 1), {"who": "other"})
        parses.clear()
        table.refresh()  # the other client's file: read once
        assert len(parses) == 1
        assert table.metadata == theirs.metadata
        lake_write.append(table, _batch(SIGNALS, 4, 100, 2, 1), {"who": "fast"})
        assert len(parses) == 1
    theirs.refresh()
    assert theirs.metadata == table.metadata
    assert theirs.scan().to_arrow().num_rows == 400
    assert [s.summary["who"] for s in theirs.snapshots()] == ["fast", "fast", "other", "fast"]
    with pytest.raises(NoSuchTableError):
        fast.load_table(("ns", "nothing"))


def _race(winner: Table, loser_catalog: Catalog, monkeypatch: pytest.MonkeyPatch) -> None:
    """Arm ``loser_catalog``: its next commit writes its metadata file, then ``winner``'s writer
    commits, then the loser's ``UPDATE`` runs (after it loaded the table and checked the
    requirements against it: only the ``UPDATE``'s condition can refuse it)."""
    real = loser_catalog._write_metadata
    armed = [True]

    def write(*args: Any, **kwargs: Any) -> None:
        real(*args, **kwargs)
        if armed.pop() if armed else False:
            lake_write.append(winner, _batch(SIGNALS, 9, 50, 2, 1), {"who": "winner"})

    monkeypatch.setattr(loser_catalog, "_write_metadata", write)


@pytest.mark.parametrize("winner_kind", ["fast", "pyiceberg"])
def test_a_commit_that_lost_a_race_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, winner_kind: str
) -> None:
    fast, other = _catalogs(tmp_path)
    second = LakeSqlCatalog("t", **fast.properties)
    winner_catalog: Catalog = second if winner_kind == "fast" else other
    table = ensure_table(fast, "ns", SIGNALS)
    lake_write.append(table, _batch(SIGNALS, 1, 50, 2, 1), {"who": "me"})
    winner = winner_catalog.load_table(("ns", SIGNALS.name))
    before = table.metadata_location

    # an append: its requirement holds when checked, the UPDATE then matches no row
    _race(winner, fast, monkeypatch)
    with pytest.raises(CommitFailedException):
        lake_write.append(table, _batch(SIGNALS, 2, 50, 2, 1), {"who": "me"})
    assert table.metadata_location == before
    location, _ = _row(fast, SIGNALS.name)
    assert location == winner.metadata_location != before
    winner_rows = winner.scan().to_arrow().num_rows
    assert winner_rows == 100

    # a property change (no requirement): the same
    winner.refresh()
    table.refresh()
    _race(winner, fast, monkeypatch)
    with pytest.raises(CommitFailedException), lake_write.transaction(table) as tx:
        tx.set_properties({"k": "v"})
    assert "k" not in fast.load_table(("ns", SIGNALS.name)).properties

    # stale requirements (the table moved on before the commit) fail as in pyiceberg
    stale = fast.load_table(("ns", SIGNALS.name))
    lake_write.append(winner, _batch(SIGNALS, 3, 50, 2, 1), {"who": "winner"})
    with pytest.raises(CommitFailedException):
        lake_write.append(stale, _batch(SIGNALS, 4, 50, 2, 1), {"who": "me"})

    # after a refresh the loser commits on top of the winner
    table.refresh()
    lake_write.append(table, _batch(SIGNALS, 2, 50, 2, 1), {"who": "me"})
    assert other.load_table(("ns", SIGNALS.name)).scan().to_arrow().num_rows == 250
