"""Shared fixtures: an honest in-memory schema lookup, a SQLite Iceberg catalog, workloads."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings
from pyiceberg.catalog import Catalog
from pyiceberg.catalog.sql import SqlCatalog

from core.contracts import signal_contracts
from core.records import RawRecord
from core.settings import Settings
from igflow.workload import Message

# No per-example deadline: hypothesis's 200 ms default is a timed assertion, and on a loaded
# machine (CI beside other work, load 10) an example of test_output_settings took longer once.
# Speed lives in benchmarks/. 69 tests already said deadline=None one by one.
hypothesis_settings.register_profile("igflow", deadline=None)
hypothesis_settings.load_profile("igflow")

SIGNAL_V1 = signal_contracts()[0]
SIGNAL_V2 = signal_contracts()[-1]
#: Registry ids the in-memory lookup hands out.
V1_ID, V2_ID = 1, 2


class DictSchemas:
    """A schema lookup over a dict: the registry's contract without the HTTP."""

    def __init__(self, schemas: dict[int, str]) -> None:
        self.schemas = schemas
        self.calls = 0

    def __call__(self, schema_id: int) -> str | None:
        self.calls += 1
        return self.schemas.get(schema_id)


@pytest.fixture
def schemas() -> DictSchemas:
    return DictSchemas({V1_ID: SIGNAL_V1.text, V2_ID: SIGNAL_V2.text})


@pytest.fixture
def lake_settings(tmp_path: Path) -> Settings:
    """Settings whose catalog is SQLite under ``tmp_path``."""
    settings = Settings(stack_dir=str(tmp_path)).with_changes("stores", sinks="")
    return settings.with_changes(
        "lake",
        catalog_uri=f"sqlite:///{tmp_path / 'catalog.db'}",
        warehouse=(tmp_path / "warehouse").as_uri(),
        batch_max_rows=100,
        batch_max_seconds=0.05,
    )


@pytest.fixture
def catalog(lake_settings: Settings) -> Catalog:
    (Path(lake_settings.warehouse.removeprefix("file://"))).mkdir(parents=True, exist_ok=True)
    return SqlCatalog(lake_settings.lake.catalog_name, **lake_settings.catalog_properties)


def kafka_messages(
    messages: list[Message], partitions: int = 4, topic: str = "coherence.signals.v1"
) -> list[RawRecord]:
    """Messages as a Kafka source would deliver them: keyed to partitions, offsets per partition."""
    offsets = [0] * partitions
    out = []
    clock = 1_767_225_600_000
    for m in messages:
        p = sum(m.key) % partitions
        # The producer's clock: one second after the newest valid event so far (validate checks
        # ts against it, so a record from the future stays in the future).
        if m.kind == "valid" and m.record:
            clock = max(clock, int(m.record["ts"].timestamp() * 1000) + 1000)
        out.append(RawRecord(topic, p, offsets[p], m.key, m.value, clock))
        offsets[p] += 1
    return out
