"""``igflow compact`` racing a running flow on the real stack (Kafka, the Postgres catalog), on a
schedule (``--every``, by size tier) and by hand: the compactions' replace commits and the flow's
appends interleave, every record lands exactly once, and a run that reads the whole topic again
afterwards lands nothing (the ledger came through the compactions)."""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from core.catalog import catalog
from core.settings import Settings
from igflow.producer import produce
from igflow.workload import WorkloadSpec, generate, recent_start
from sinks.lake_compact import data_files
from tests.conftest import SIGNAL_V1
from tests.integration.conftest import (
    QUICK_IDLE_FLUSH,
    finish,
    igflow,
    kill,
    produce_workload,
    recent,
)
from tests.integration.test_pipeline import _v1_id
from tests.integration.test_retention import _signals

pytestmark = pytest.mark.integration


def _valid(spec: WorkloadSpec, schema_id: int) -> set[tuple[str, str, datetime]]:
    """(tenant, signal id, event time) of the workload's valid records."""
    return {
        (m.record["tenant_id"], m.record["signal_id"], m.record["ts"])
        for m in generate(spec, schema_id, SIGNAL_V1.parsed)
        if m.record is not None
    }


def _files(settings: Settings, name: str) -> int:
    table = catalog(settings).load_table(f"{settings.lake.namespace}.{name}")
    return data_files(table)


def _rewrites(settings: Settings, name: str) -> int:
    """The data-file rewrites among a table's snapshots: ``replace`` commits that added data
    files (the flow's manifest rewrites add none; its expiry may have dropped older ones)."""
    table = catalog(settings).load_table(f"{settings.lake.namespace}.{name}")
    return sum(
        1
        for s in table.metadata.snapshots
        if s.summary is not None
        and s.summary.operation.value == "replace"
        and int(s.summary.additional_properties.get("added-data-files", 0)) > 0
    )


def test_compaction_beside_a_running_flow_keeps_it_exactly_once(
    it_settings: Settings,
) -> None:
    """``igflow compact --every`` as a maintenance process beside ``igflow run --tail``: its
    rounds rewrite by tier while the flow appends, SIGTERM ends it with 0; then ``igflow
    compact`` by hand while a last burst lands. Every record lands once."""
    settings = it_settings
    first = WorkloadSpec(tenants=4, count=300, seed=41)
    produce_workload(settings, first)
    flow = igflow(settings, "run", "--tail", **QUICK_IDLE_FLUSH)
    compactor = igflow(settings, "compact", "--every", "1", "--fanout", "4", "--min-files", "2")
    # Then bursts of the same size, a second apart: the flow commits each on its own (the 0.5 s
    # grid), files of one size tier that a round merges.
    later = recent_start(datetime.now(UTC)) + timedelta(hours=1)
    bursts = [
        WorkloadSpec(tenants=4, count=40, seed=42 + n, start=later + timedelta(minutes=n))
        for n in range(8)
    ]
    schema_id = _v1_id(settings)
    wanted = _valid(recent(first), schema_id)
    for burst in bursts:
        wanted |= _valid(burst, schema_id)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        time.sleep(1.0)
        if bursts:
            assert produce(settings, bursts.pop(0)).total
        elif set(_signals(settings)) == wanted and _rewrites(settings, "signals"):
            break
    assert flow.poll() is None, "the flow stopped"
    assert compactor.poll() is None, "the compactor stopped"
    compactor.send_signal(signal.SIGTERM)
    out, err = compactor.communicate(timeout=120)
    assert compactor.returncode == 0, err.decode()[-3000:]
    rounds = [json.loads(x) for x in out.decode().splitlines() if '"seconds"' in x]
    assert rounds and all("error" not in str(r["tables"]) for r in rounds), rounds[-3:]
    signals = [r["tables"]["signals"] for r in rounds]
    assert sum(t.get("rewritten", 0) for t in signals) > 0, signals
    # Then one compaction by hand (every small file, no tiers) while a last burst lands.
    last = WorkloadSpec(tenants=4, count=40, seed=60, start=later + timedelta(minutes=10))
    wanted |= _valid(last, schema_id)
    assert produce(settings, last).total
    out, _err = finish(igflow(settings, "compact"))
    tables = [json.loads(line) for line in out.splitlines() if '"files_before"' in line]
    assert sum(t["rewritten"] for t in tables) > 0, tables
    deadline = time.monotonic() + 120
    while set(_signals(settings)) != wanted and time.monotonic() < deadline:
        time.sleep(0.5)
    assert flow.poll() is None, "the flow stopped"
    kill(flow)
    rows = Counter(_signals(settings))
    assert set(rows.values()) == {1}
    assert set(rows) == wanted
    # Re-read everything: nothing lands again.
    finish(igflow(settings, "run"))
    assert Counter(_signals(settings)) == rows
