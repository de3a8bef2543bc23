"""core.catalog.LakeSqlCatalog beside pyiceberg's SqlCatalog: the same answers and errors for the
same namespace and table operations, the same rows in the catalog database, and each reads and
changes what the other wrote (session 29: the catalog no longer goes through SQLAlchemy).

``catalog_script`` runs one sequence of operations and records every answer (or the exception's
type); the two catalogs, each on a database of its own, must record the same. The Postgres
version of the same comparison is ``tests/integration/test_lake_catalog_postgres.py``."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from pyiceberg.catalog import Catalog
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.exceptions import NamespaceAlreadyExistsError, NoSuchTableError

import core.catalog
from core.catalog import LakeSqlCatalog
from core.catalog_db import database_of, dialect_of

_SCHEMA = pa.schema([pa.field("id", pa.int64()), pa.field("name", pa.string())])


def _answer(call: Callable[[], Any]) -> Any:
    """What a call answers, comparable between catalogs: tables by identifier and content, lists
    sorted, an exception by its type."""
    try:
        out = call()
    except Exception as exc:  # the exception's type is the answer
        return ("raises", type(exc).__name__)
    if hasattr(out, "scan"):  # a Table
        return ("table", out.name(), out.scan().to_arrow().to_pylist())
    if isinstance(out, list):
        return sorted(out)
    if hasattr(out, "removed"):  # PropertiesUpdateSummary
        return (sorted(out.removed), sorted(out.updated), sorted(out.missing))
    return out


def catalog_script(cat: Catalog) -> list[Any]:
    """Namespaces, tables, renames, properties, drops, appends, a create transaction, and every
    error case pyiceberg's SqlCatalog names: the answers in order."""
    steps: list[Callable[[], Any]] = [
        lambda: cat.list_namespaces(),
        lambda: cat.namespace_exists("a"),
        lambda: cat.create_namespace("a"),
        lambda: cat.create_namespace("a"),  # exists
        lambda: cat.create_namespace(("a", "b"), {"owner": "x", "k": "1"}),
        lambda: cat.create_namespace("c_d"),
        lambda: cat.namespace_exists("a"),
        lambda: cat.namespace_exists("c"),  # c_d is not c, nor is c%
        lambda: cat.namespace_exists("c_%"),
        lambda: cat.list_namespaces(),
        lambda: cat.list_namespaces("a"),
        lambda: cat.list_namespaces("nope"),
        lambda: cat.load_namespace_properties("a"),
        lambda: cat.load_namespace_properties(("a", "b")),
        lambda: cat.load_namespace_properties("nope"),
        lambda: cat.update_namespace_properties(
            ("a", "b"), removals={"k", "absent"}, updates={"owner": "y", "new": "2"}
        ),
        lambda: cat.load_namespace_properties(("a", "b")),
        lambda: cat.update_namespace_properties("a", removals={"x"}, updates={"x": "1"}),
        lambda: cat.create_table(("a", "t"), _SCHEMA),
        lambda: cat.create_table(("a", "t"), _SCHEMA),  # exists
        lambda: cat.create_table(("nope", "t"), _SCHEMA),
        lambda: cat.load_table(("a", "t")).append(
            pa.table({"id": [1, 2], "name": ["x", "y"]}, schema=_SCHEMA)
        ),
        lambda: cat.load_table(("a", "t")),
        lambda: cat.load_table(("a", "missing")),
        lambda: cat.table_exists(("a", "t")),
        lambda: cat.table_exists(("a", "missing")),
        lambda: cat.list_tables("a"),
        lambda: cat.list_tables(("a", "b")),
        lambda: cat.list_tables("nope"),
        lambda: cat.create_table(("a", "b", "deep"), _SCHEMA),
        lambda: cat.namespace_exists("a"),
        lambda: cat.rename_table(("a", "t"), ("c_d", "u")),
        lambda: cat.rename_table(("a", "t"), ("c_d", "u")),  # gone
        lambda: cat.rename_table(("a", "b", "deep"), ("c_d", "u")),  # taken
        lambda: cat.rename_table(("c_d", "u"), ("nope", "u")),
        lambda: cat.load_table(("c_d", "u")),
        lambda: cat.list_tables("a"),
        lambda: cat.drop_namespace("c_d"),  # not empty
        lambda: _create_transaction(cat, ("a", "tx")),
        lambda: cat.load_table(("a", "tx")),
        lambda: cat.create_table_if_not_exists(("a", "tx"), _SCHEMA).name(),
        lambda: cat.drop_table(("a", "tx")),
        lambda: cat.drop_table(("a", "tx")),  # gone
        lambda: cat.register_table(("a", "again"), cat.load_table(("c_d", "u")).metadata_location),
        lambda: cat.register_table(("a", "again"), "file:///nowhere.json"),  # exists
        lambda: cat.register_table(("nope", "x"), "file:///nowhere.json"),
        lambda: cat.load_table(("a", "again")),
        lambda: cat.list_namespaces(),
        lambda: cat.drop_table(("c_d", "u")),
        lambda: cat.drop_namespace("c_d"),
        lambda: cat.drop_namespace("c_d"),  # gone
        lambda: cat.list_namespaces(),
        lambda: cat.list_views("a"),
    ]
    return [_answer(step) for step in steps]


def _create_transaction(cat: Catalog, identifier: tuple[str, str]) -> Any:
    """A table created with its first append in one commit (``create_table_transaction``)."""
    with cat.create_table_transaction(identifier, _SCHEMA) as tx:
        tx.append(pa.table({"id": [7], "name": ["z"]}, schema=_SCHEMA))
    return "committed"


def _properties(tmp_path: Path, name: str) -> dict[str, str]:
    (tmp_path / name).mkdir(parents=True, exist_ok=True)
    return {
        "uri": f"sqlite:///{tmp_path / name / 'catalog.db'}",
        "warehouse": (tmp_path / name / "warehouse").as_uri(),
    }


def _rows(properties: dict[str, str]) -> dict[str, list[tuple[Any, ...]]]:
    """The catalog database's rows, metadata locations reduced to their file's version and the
    warehouse's path removed (each catalog has its own)."""
    path = properties["uri"].removeprefix("sqlite:///")
    warehouse = properties["warehouse"]
    with contextlib.closing(sqlite3.connect(path)) as db:
        tables = db.execute(
            "SELECT catalog_name, table_namespace, table_name, metadata_location,"
            " previous_metadata_location, iceberg_type FROM iceberg_tables"
        ).fetchall()
        props = db.execute("SELECT * FROM iceberg_namespace_properties").fetchall()

    def short(location: str | None) -> str | None:
        if location is None:
            return None
        folder, _, file = location.removeprefix(warehouse).rpartition("/")
        return f"{folder}/{file.split('-')[0]}"

    return {
        "tables": sorted((*r[:3], short(r[3]), short(r[4]), r[5]) for r in tables),
        "properties": sorted(props),
    }


def test_the_same_answers_and_rows_as_pyiceberg_s_sql_catalog(tmp_path: Path) -> None:
    ours_at, theirs_at = _properties(tmp_path, "ours"), _properties(tmp_path, "theirs")
    ours = LakeSqlCatalog("lake", **ours_at)
    theirs = SqlCatalog("lake", **theirs_at)
    mine, pyiceberg_s = catalog_script(ours), catalog_script(theirs)
    for step, (a, b) in enumerate(zip(mine, pyiceberg_s, strict=True)):
        assert a == b, f"step {step}: {a!r} != {b!r}"
    assert ("raises", "NamespaceAlreadyExistsError") in mine  # the script reaches its errors
    assert ("raises", "TableAlreadyExistsError") in mine
    assert ("raises", "NoSuchNamespaceError") in mine
    assert ("raises", "NamespaceNotEmptyError") in mine
    assert _rows(ours_at) == _rows(theirs_at)


def test_each_reads_and_changes_what_the_other_wrote(tmp_path: Path) -> None:
    at = _properties(tmp_path, "shared")
    theirs = SqlCatalog("lake", **at)  # creates the catalog's tables
    theirs.create_namespace("ns")
    theirs.create_table(("ns", "t"), _SCHEMA).append(
        pa.table({"id": [1], "name": ["a"]}, schema=_SCHEMA)
    )
    ours = LakeSqlCatalog("lake", **at)
    assert ours.list_tables("ns") == [("ns", "t")]
    table = ours.load_table(("ns", "t"))
    table.append(pa.table({"id": [2], "name": ["b"]}, schema=_SCHEMA))
    ours.create_table(("ns", "mine"), _SCHEMA)
    ours.update_namespace_properties("ns", updates={"k": "v"})
    assert sorted(theirs.load_table(("ns", "t")).scan().to_arrow().column("id").to_pylist()) == [
        1,
        2,
    ]
    assert sorted(theirs.list_tables("ns")) == [("ns", "mine"), ("ns", "t")]
    assert theirs.load_namespace_properties("ns") == {"exists": "true", "k": "v"}
    theirs.rename_table(("ns", "mine"), ("ns", "renamed"))
    assert ours.load_table(("ns", "renamed")).name() == ("ns", "renamed")
    with pytest.raises(NoSuchTableError):
        ours.load_table(("ns", "mine"))
    # another catalog name in the same database sees none of it
    other = LakeSqlCatalog("other", **at)
    assert other.list_namespaces() == []


def test_a_v0_catalog_stays_v0_unless_told_and_views_are_not_tables(tmp_path: Path) -> None:
    at = _properties(tmp_path, "v0")
    path = at["uri"].removeprefix("sqlite:///")
    with contextlib.closing(sqlite3.connect(path)) as db:  # a catalog from before iceberg_type
        db.execute(
            "CREATE TABLE iceberg_tables (catalog_name VARCHAR(255) NOT NULL,"
            " table_namespace VARCHAR(255) NOT NULL, table_name VARCHAR(255) NOT NULL,"
            " metadata_location VARCHAR(1000), previous_metadata_location VARCHAR(1000),"
            " PRIMARY KEY (catalog_name, table_namespace, table_name))"
        )
        db.execute(
            "CREATE TABLE iceberg_namespace_properties (catalog_name VARCHAR(255) NOT NULL,"
            " namespace VARCHAR(255) NOT NULL, property_key VARCHAR(255) NOT NULL,"
            " property_value VARCHAR(1000) NOT NULL,"
            " PRIMARY KEY (catalog_name, namespace, property_key))"
        )
        db.commit()
    v0 = LakeSqlCatalog("lake", **at)
    assert v0._schema_version == SqlCatalog("lake", **at)._schema_version == "v0"
    v0.create_namespace("ns")
    v0.create_table(("ns", "t"), _SCHEMA)
    assert v0.list_tables("ns") == [("ns", "t")]
    v1 = LakeSqlCatalog("lake", schema_version="v1", **at)  # migrates: adds the column
    assert v1._schema_version == "v1"
    v1.create_table(("ns", "u"), _SCHEMA)
    with contextlib.closing(sqlite3.connect(path)) as db:
        rows = dict(db.execute("SELECT table_name, iceberg_type FROM iceberg_tables").fetchall())
        assert rows == {"t": None, "u": "TABLE"}
        # another client's view in the same table is no table here, as in pyiceberg
        db.execute(
            "INSERT INTO iceberg_tables VALUES ('lake', 'ns', 'view', 'file:///v.json', NULL,"
            " 'VIEW')"
        )
        db.commit()
    assert sorted(v1.list_tables("ns")) == [("ns", "t"), ("ns", "u")]
    with pytest.raises(NoSuchTableError):
        v1.load_table(("ns", "view"))
    with pytest.raises(ValueError, match="schema_version"):
        LakeSqlCatalog("lake", schema_version="v2", **at)


def test_no_tables_are_created_when_told_not_to(tmp_path: Path) -> None:
    at = _properties(tmp_path, "bare")
    cat = LakeSqlCatalog("lake", init_catalog_tables="false", **at)
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        cat.list_namespaces()
    cat.create_tables()
    assert cat.list_namespaces() == []
    cat.destroy_tables()
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        cat.list_namespaces()


@pytest.mark.parametrize(
    ("uri", "dialect"),
    [
        ("postgresql+psycopg2://u:p@127.0.0.1:5432/db", "postgresql"),
        ("postgresql://u:p@127.0.0.1:5432/db?sslmode=require", "postgresql"),
        ("postgresql+psycopg://u@h/db", "postgresql"),
        ("POSTGRES://u@h/db", "postgresql"),
        ("sqlite:////abs/path.db", "sqlite"),
        ("sqlite:///relative.db", "sqlite"),
        ("sqlite://", "sqlite"),
        ("sqlite:///:memory:", "sqlite"),
        # read by pyiceberg's SqlCatalog instead
        ("postgresql+asyncpg://u@h/db", None),
        ("mysql+pymysql://u:p@h/db", None),
        ("sqlite:///path.db?timeout=10", None),
        ("sqlite://host/path.db", None),
        ("not a uri", None),
    ],
)
def test_which_uris_it_reads(uri: str, dialect: str | None) -> None:
    assert dialect_of(uri) == dialect
    if dialect is None:
        assert database_of(uri) is None


def test_another_database_opens_as_pyiceberg_s_sql_catalog(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/c.db?timeout=5"  # SQLite with options: not read here
    opened = core.catalog._open("lake", {"type": "sql", "uri": uri}, tmp_path.as_uri())
    assert type(opened) is SqlCatalog
    mine = core.catalog._open(
        "lake", {"type": "sql", "uri": f"sqlite:///{tmp_path}/d.db"}, tmp_path.as_uri()
    )
    assert type(mine) is LakeSqlCatalog


def test_an_in_memory_catalog_is_one_database_for_every_thread() -> None:
    import threading

    cat = LakeSqlCatalog("lake", uri="sqlite://", warehouse="file:///tmp/unused")
    cat.create_namespace("ns")
    seen: list[Any] = []
    thread = threading.Thread(target=lambda: seen.append(cat.list_namespaces()))
    thread.start()
    thread.join()
    assert seen == [[("ns",)]]


def test_a_namespace_created_meanwhile_is_already_existing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another client creates the namespace between this one's check and its insert.
    at = _properties(tmp_path, "race")
    ours, theirs = LakeSqlCatalog("lake", **at), SqlCatalog("lake", **at)
    checked = ours.namespace_exists

    def exists_then_taken(identifier: Any) -> bool:
        answer = checked(identifier)
        theirs.create_namespace(identifier)
        return answer

    monkeypatch.setattr(ours, "namespace_exists", exists_then_taken)
    with pytest.raises(NamespaceAlreadyExistsError):
        ours.create_namespace("ns")
    monkeypatch.undo()
    ours.create_namespace_if_not_exists("ns")  # what the lake's sinks call: no error
    assert ours.list_namespaces() == [("ns",)]
