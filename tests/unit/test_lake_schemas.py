"""Every lake table's schema is pinned: field ids, names, order, types, required and docs.

Existing lakes must keep working and a replay's Parquet must stay byte-identical to the original
run's, so no refactor of :mod:`sinks.lake_tables` may change a schema (the docs reach the Parquet
files as field metadata). ``tests/data/lake_schemas.json`` was dumped from the tables as they
were before the provenance columns got one definition; a deliberate schema change (a new field
at the end) regenerates it and says so in its commit.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sinks.lake_tables import TABLES, TableDef

PINNED = json.loads(
    (Path(__file__).resolve().parents[1] / "data" / "lake_schemas.json").read_text("utf-8")
)


def test_every_table_is_pinned() -> None:
    assert sorted(t.name for t in TABLES) == sorted(PINNED)


@pytest.mark.parametrize("table", TABLES, ids=lambda t: t.name)
def test_schema_is_unchanged(table: TableDef[Any]) -> None:
    pinned = PINNED[table.name]
    assert str(table.schema).splitlines() == pinned["schema"]
    assert json.loads(table.schema.model_dump_json()) == pinned["iceberg"]
    assert str(table.schema.as_arrow()).splitlines() == pinned["arrow"]
    assert str(table.partition_spec).splitlines() == pinned["partition_spec"]
