"""core.catalog.CatalogOnce: a flow's catalog, opened once and shared by its lake tables' sinks
(every worker) and its held positions; pickled, it keeps only what opens another."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from core.catalog import CatalogOnce
from core.settings import Settings
from flows.coherence import build
from flows.held import held_positions
from sinks.iceberg import IcebergSink
from sinks.lake_tables import QUARANTINE, SCORES, SIGNALS


def test_opened_once_whoever_asks_first(lake_settings: Settings) -> None:
    lake = CatalogOnce.of(lake_settings)
    with ThreadPoolExecutor(4) as pool:
        opened = list(pool.map(lambda _i: lake.get(), range(8)))
    assert all(c is opened[0] for c in opened)
    assert Path(lake_settings.warehouse.removeprefix("file://")).is_dir()
    copy = pickle.loads(pickle.dumps(lake))
    assert (copy.name, copy.properties) == (lake.name, lake.properties)
    assert copy.get() is not lake.get()  # a copy opens its own


def test_the_sinks_and_the_held_positions_share_it(lake_settings: Settings) -> None:
    lake = CatalogOnce.of(lake_settings)
    assert held_positions(lake_settings, lake)._held == {}  # no quarantine table yet
    tables = []
    for table_def in (SIGNALS, SCORES, QUARANTINE):
        sink: IcebergSink[object] = IcebergSink(
            lake.name,
            lake.properties,
            "once",
            table_def,  # type: ignore[arg-type]
            catalog=lake,
        )
        for worker in range(2):
            part = sink.build(table_def.name, worker, 2)
            tables.append(part._appender.table)
    assert all(t.catalog is lake.get() for t in tables)
    assert len({t.name() for t in tables}) == 3
    assert held_positions(lake_settings, lake)._held == {}  # the table now, still empty


def test_a_sink_without_one_opens_one_for_its_workers(lake_settings: Settings) -> None:
    props = lake_settings.catalog_properties
    Path(lake_settings.warehouse.removeprefix("file://")).mkdir(parents=True, exist_ok=True)
    sink = IcebergSink(lake_settings.lake.catalog_name, props, "alone", SIGNALS)
    first, second = (sink.build("s", w, 2)._appender.table for w in range(2))
    assert first.catalog is second.catalog


def test_the_flow_builds_with_one_catalog(lake_settings: Settings) -> None:
    flow = build(lake_settings)
    catalogs = set()
    sinks = 0
    for step in _walk(flow.substeps):
        sink = getattr(step, "sink", None)
        if isinstance(sink, IcebergSink):
            catalogs.add(id(sink._catalog))
            sinks += 1
    assert len(catalogs) == 1
    assert sinks == 4  # signals, scores, deconfliction, quarantine


def _walk(steps: Iterable[Any]) -> Iterator[Any]:
    for step in steps:
        yield step
        inner = getattr(step, "substeps", [])
        yield from _walk(inner.values() if isinstance(inner, dict) else inner)


def test_a_catalog_already_open_is_shared_and_the_flow_takes_it(lake_settings: Settings) -> None:
    # A replay has its catalog open before it builds the flow: the flow's tables share it.
    open_one = CatalogOnce.of(lake_settings).get()
    lake = CatalogOnce.of(lake_settings, opened=open_one)
    assert lake.get() is open_one
    assert pickle.loads(pickle.dumps(lake)).get() is not open_one  # a copy opens its own
    flow = build(lake_settings, catalog=lake)
    shared = {
        id(step.sink._catalog)
        for step in _walk(flow.substeps)
        if isinstance(getattr(step, "sink", None), IcebergSink)
    }
    assert shared == {id(lake)}


_PRELOAD = """
import json, socket, sys
from core.settings import Settings
from igflow.runner import import_flow
opened = []
real_connect = socket.socket.connect
def connect(self, address):
    opened.append(str(address))
    return real_connect(self, address)
socket.socket.connect = connect
settings = Settings().with_changes("lake", catalog_uri=sys.argv[1])
import_flow(settings)
wanted = ("psycopg", "pyiceberg.catalog.sql", "sqlalchemy", "psycopg2")
print(json.dumps({"modules": [m for m in wanted if m in sys.modules], "connections": opened}))
"""


@pytest.mark.parametrize(
    ("uri", "modules"),
    [
        # the project's catalogs: psycopg (which the flow imports anyway), no SQLAlchemy
        ("postgresql+psycopg2://igflow:igflow@127.0.0.1:9/igflow", ["psycopg"]),
        ("postgresql://igflow:igflow@127.0.0.1:9/igflow", ["psycopg"]),
        ("sqlite:////nowhere/catalog.db", ["psycopg"]),
        # another database (or none readable): pyiceberg's SqlCatalog, imported before the fork
        ("mysql+pymysql://u:p@127.0.0.1:9/db", ["psycopg", "pyiceberg.catalog.sql", "sqlalchemy"]),
        ("not a uri", ["psycopg", "pyiceberg.catalog.sql", "sqlalchemy"]),
    ],
)
def test_a_flow_s_imports_take_its_catalog_s_modules_and_open_nothing(
    uri: str, modules: list[str]
) -> None:
    """Regression: each `--processes` child imported the SQL catalog (SQLAlchemy) itself at
    its first commit; `import_flow` (before the fork) now imports what its catalog needs (no
    SQLAlchemy for Postgres or SQLite, session 29), and connects to nothing."""
    out = subprocess.run(
        [sys.executable, "-c", _PRELOAD, uri], capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout.splitlines()[-1]) == {"modules": modules, "connections": []}
