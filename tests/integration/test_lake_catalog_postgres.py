"""core.catalog.LakeSqlCatalog on the stack's Postgres (psycopg, no SQLAlchemy) beside pyiceberg's
SqlCatalog on the same database: the same answers to the same operations
(``tests/unit/test_lake_catalog_sql.py``'s script), each reading what the other wrote, a lost
race still a ``CommitFailedException``, and a connection the server dropped replaced after one
failed statement (as SQLAlchemy's pool did)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pyarrow as pa
import pytest
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.exceptions import CommitFailedException

from core.catalog import LakeSqlCatalog
from core.settings import Settings
from tests.unit.test_lake_catalog_sql import _SCHEMA, catalog_script


def _dsn(settings: Settings) -> str:
    return settings.lake.catalog_uri.replace("postgresql+psycopg2://", "postgresql://", 1)


@pytest.fixture
def names(stack: Settings) -> Iterator[list[str]]:
    """Catalog names of this test (rows under other names are other catalogs'): their rows
    dropped when it ends."""
    made: list[str] = []
    yield made
    with psycopg.connect(_dsn(stack), autocommit=True) as db:
        for name in made:
            db.execute("DELETE FROM iceberg_tables WHERE catalog_name = %s", (name,))
            db.execute("DELETE FROM iceberg_namespace_properties WHERE catalog_name = %s", (name,))


def _fresh(names: list[str], kind: str) -> str:
    name = f"it_{kind}_{uuid.uuid4().hex[:10]}"
    names.append(name)
    return name


def test_the_same_answers_as_pyiceberg_s_on_postgres(
    stack: Settings, names: list[str], tmp_path: Path
) -> None:
    uri = stack.lake.catalog_uri
    ours = LakeSqlCatalog(_fresh(names, "ours"), uri=uri, warehouse=(tmp_path / "a").as_uri())
    theirs = SqlCatalog(_fresh(names, "theirs"), uri=uri, warehouse=(tmp_path / "b").as_uri())
    mine, pyiceberg_s = catalog_script(ours), catalog_script(theirs)
    for step, (a, b) in enumerate(zip(mine, pyiceberg_s, strict=True)):
        assert a == b, f"step {step}: {a!r} != {b!r}"
    ours.close()


def test_both_clients_share_a_table_and_a_lost_race_fails(
    stack: Settings, names: list[str], tmp_path: Path
) -> None:
    name = _fresh(names, "shared")
    at = {"uri": stack.lake.catalog_uri, "warehouse": tmp_path.as_uri()}
    ours, theirs = LakeSqlCatalog(name, **at), SqlCatalog(name, **at)
    ours.create_namespace("ns")
    # no retry of a lost commit inside pyiceberg (the lake's setting: the appender retries)
    mine = ours.create_table(("ns", "t"), _SCHEMA, properties={"commit.retry.num-retries": "0"})
    mine.append(pa.table({"id": [1], "name": ["a"]}, schema=_SCHEMA))
    stale = ours.load_table(("ns", "t"))
    theirs.load_table(("ns", "t")).append(pa.table({"id": [2], "name": ["b"]}, schema=_SCHEMA))
    with pytest.raises(CommitFailedException):  # the requirement fails: the table moved on
        stale.append(pa.table({"id": [3], "name": ["c"]}, schema=_SCHEMA))
    mine.refresh()
    mine.append(pa.table({"id": [4], "name": ["d"]}, schema=_SCHEMA))
    ids = theirs.load_table(("ns", "t")).scan().to_arrow().column("id").to_pylist()
    assert sorted(ids) == [1, 2, 4]
    ours.close()


def test_a_dropped_connection_is_replaced(
    stack: Settings, names: list[str], tmp_path: Path
) -> None:
    cat = LakeSqlCatalog(
        _fresh(names, "dropped"), uri=stack.lake.catalog_uri, warehouse=tmp_path.as_uri()
    )
    cat.create_namespace("ns")
    (held,) = cat._db._idle  # type: ignore[attr-defined]  # the connection it used, kept
    with psycopg.connect(_dsn(stack), autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (held.info.backend_pid,))
    with pytest.raises(psycopg.OperationalError):
        cat.list_namespaces()  # on the dropped connection: one statement fails ...
    assert cat._db._idle == []  # type: ignore[attr-defined]
    assert cat.list_namespaces() == [("ns",)]  # ... and the next one connects again
    cat.close()
