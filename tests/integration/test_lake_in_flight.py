"""The lake's appends off the worker's thread (sinks/lake_group.py): SIGKILL the flow while the
recovery snapshot a resume would load holds lake batches handed to the writer thread whose rows
are not in the table yet; the resume emits them again first and every record lands once.

The flow is frozen (SIGSTOP) while the store and the table are read, so what is read is what
the kill leaves: the test kills only a flow in that state, and checks afterwards that it still
is (the path under test is taken, not only possibly taken: without the re-emission, those rows
would be lost, since the source resumes after them)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from core.catalog import catalog
from core.records import Tagged
from core.settings import Settings
from igflow.workload import WorkloadSpec
from operators.collect import CollectState
from sinks.lake_tables import SIGNALS
from tenancy.sealed_state import SealedState, StateSeal
from tenancy.sealing import sealer_of
from tests.integration.conftest import (
    finish,
    igflow,
    kill,
    lake_count,
    lake_rows,
    produce_workload,
)
from tests.integration.test_sealed_recovery import _resumable

pytestmark = pytest.mark.integration

TOTAL = 16_000
SPEC = WorkloadSpec(tenants=8, count=TOTAL // 8, seed=27)
STEP = "coherence.lake_signals_tenant_batch.stateful"


Coordinates = set[tuple[int, int]]


def _handed(recovery: Path, seal: StateSeal) -> Coordinates:
    """(partition, offset) of the rows in the signals table's handed, unacknowledged batches
    that a resume would load."""
    rows: Coordinates = set()
    for state in _resumable(recovery):
        if isinstance(state, SealedState) and state.step == STEP:
            state = seal.open(state.step, state)
        if isinstance(state, CollectState):
            for batch in state.handed:
                for item in batch:
                    if not isinstance(item, Tagged):  # another table's collect (the scores')
                        continue
                    provenance = SIGNALS.provenance(item)
                    rows.add((provenance.kafka_partition, provenance.kafka_offset))
    return rows


def _landed(settings: Settings) -> Coordinates:
    if not lake_count(settings):
        return set()
    table = catalog(settings).load_table(f"{settings.lake.namespace}.{SIGNALS.name}")
    columns = table.scan(selected_fields=("kafka_partition", "kafka_offset")).to_arrow()
    return set(zip(*(columns[c].to_pylist() for c in columns.column_names), strict=True))


def _start(settings: Settings, recovery: Path) -> subprocess.Popen[bytes]:
    return igflow(settings, "run", "-r", str(recovery), IGFLOW_RUN_SNAPSHOT_SECONDS="0.5")


@pytest.mark.slow
def test_sigkill_with_lake_batches_in_flight_then_resume_lands_each_record_once(
    it_settings: Settings, tmp_path: Path
) -> None:
    # Small fetches and batches: many commits, so batches are often in flight at a snapshot.
    settings = it_settings.with_changes("kafka", batch_size=50).with_changes(
        "lake", batch_max_rows=200, batch_max_seconds=0.2
    )
    produce_workload(settings, SPEC)
    recovery = tmp_path / "recovery"
    seal = StateSeal(sealer_of(settings))

    proc = _start(settings, recovery)
    deadline = time.monotonic() + 180
    missing: Coordinates = set()
    while time.monotonic() < deadline and not missing:
        assert proc.poll() is None, "the flow ended before a snapshot held a batch in flight"
        time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGSTOP)  # frozen: the store stays as the kill would leave it
        try:
            handed = _handed(recovery, seal)
        except (ValueError, sqlite3.OperationalError):  # no execution recorded yet
            handed = set()
        # Handed and not committed: only the resume's re-emission can land these.
        missing = handed - _landed(settings) if handed else set()
        if not missing:
            os.killpg(proc.pid, signal.SIGCONT)
    assert missing, "no resumable snapshot held a lake batch in flight and not committed"
    kill(proc)
    assert lake_count(settings) < TOTAL, "everything had landed: the kill was not mid-stream"
    assert missing <= _handed(recovery, seal) - _landed(settings)

    finish(_start(settings, recovery))

    rows = lake_rows(settings)
    keys = [(r["tenant_id"], r["source"], r["signal_id"], r["ts"]) for r in rows]
    offsets = [(r["kafka_partition"], r["kafka_offset"]) for r in rows]
    assert len(rows) == TOTAL
    assert len(set(keys)) == TOTAL
    assert len(set(offsets)) == TOTAL
