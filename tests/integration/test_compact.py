"""``igflow compact`` racing a running flow on the real stack (Kafka, the Postgres catalog): the
compactions' replace commits and the flow's appends interleave, every record lands exactly once,
the tables end with fewer files than the flow wrote, and a run that reads the whole topic again
afterwards lands nothing (the ledger came through the compactions)."""

from __future__ import annotations

import json
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
from tests.integration.conftest import finish, igflow, kill, produce_workload, recent
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


def test_compaction_racing_a_running_flow_keeps_it_exactly_once(it_settings: Settings) -> None:
    settings = it_settings
    first = WorkloadSpec(tenants=4, count=300, seed=31)
    produce_workload(settings, first)
    flow = igflow(settings, "run", "--tail")
    later = recent_start(datetime.now(UTC)) + timedelta(hours=1)
    second = WorkloadSpec(tenants=4, count=300, seed=32, start=later)
    schema_id = _v1_id(settings)
    wanted = _valid(recent(first), schema_id) | _valid(second, schema_id)
    runs = rewritten = 0
    produced_second = False
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        out, _err = finish(igflow(settings, "compact"))
        lines = [json.loads(line) for line in out.splitlines()]
        runs += 1
        rewritten += sum(int(x.get("replaced", 0)) for x in lines if "commit" in x)
        if not produced_second:
            assert produce(settings, second).total
            produced_second = True
        if runs >= 3 and set(_signals(settings)) == wanted and rewritten:
            break
    assert flow.poll() is None, "the flow stopped"
    kill(flow)
    rows = Counter(_signals(settings))
    assert set(rows.values()) == {1}
    assert set(rows) == wanted
    assert rewritten > 0, "no compaction rewrote anything"
    before = _files(settings, "signals")
    finish(igflow(settings, "compact"))
    assert _files(settings, "signals") <= before
    # Re-read everything: nothing lands again.
    finish(igflow(settings, "run"))
    assert Counter(_signals(settings)) == rows
