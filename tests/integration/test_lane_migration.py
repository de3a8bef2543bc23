"""The lake's batching re-keyed (session 13): a recovery store written when the lake batched by
ledger lane (``<stage>:<tenant>``) resumes under the tenant keying and lands every row once.

The old keying's batches sit in the store under the old step ids and keys; the flow keeps those
steps only to land them (:func:`operators.collect.land_resumed`), before any row of the resume
reaches the new batching step. Landed after a newer row of their lane, they would be lost: the
ledger skips rows at or below what a lane already committed. So the test makes that likely if
the order were wrong: the old run holds every row it read (nothing landed, batches of an hour
and a million rows) when it is killed, and the resumed run, with batches of 50 rows, reads three
times as many newer rows of the same tenants (the same lanes).
"""

from __future__ import annotations

import dataclasses
import sqlite3
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import pytest

from core.settings import Settings
from igflow.producer import produce
from igflow.workload import WorkloadSpec
from tenancy.sealed_state import SealedState, StateSeal
from tenancy.sealing import sealer_of
from tests.integration.conftest import (
    finish,
    igflow,
    kill,
    lake_count,
    lake_rows,
    python_module,
    quarantine_rows,
    recent,
)
from tests.integration.test_sealed_recovery import _resumable

pytestmark = pytest.mark.integration

TENANTS = 4
OLD = 500  # signals per tenant read by the old keying, held in its batches at the kill
NEW = 1_500  # per tenant, produced after the kill: read by the resumed flow
OLD_STEP = "coherence.lake_signals_batch.stateful"


def _lane_keyed(settings: Settings, *args: str, **extra: str) -> subprocess.Popen[bytes]:
    """``igflow ARGS`` with the lake batched by lane, as before session 13."""
    return python_module(settings, "tests.integration.lane_keyed", *args, **extra)


def _held(recovery: Path, seal: StateSeal) -> dict[str, int]:
    """Rows per lane that a resume would find in the old keying's signal batches."""
    held: dict[str, int] = {}
    for state in _resumable(recovery):
        if isinstance(state, SealedState) and state.step == OLD_STEP:
            held[state.key] = len(seal.open(state.step, state).items)
    return held


@pytest.mark.slow
def test_a_store_of_the_lane_keyed_batches_resumes_and_lands_every_row_once(
    it_settings: Settings, tmp_path: Path
) -> None:
    settings = it_settings.with_changes("kafka", batch_size=50)
    first = recent(WorkloadSpec(tenants=TENANTS, count=OLD, seed=31))
    # The same tenants (lanes) later: other timestamps, so not duplicates of the first.
    second = dataclasses.replace(first, count=NEW, seed=32, start=first.start + timedelta(hours=1))
    produce(settings, first)
    recovery = tmp_path / "recovery"
    seal = StateSeal(sealer_of(settings))

    holding = settings.with_changes("lake", batch_max_rows=1_000_000, batch_max_seconds=3600.0)
    old = _lane_keyed(
        holding, "run", "-r", str(recovery), "--tail", IGFLOW_RUN_SNAPSHOT_SECONDS="0.5"
    )
    deadline = time.monotonic() + 180
    held: dict[str, int] = {}
    while time.monotonic() < deadline:
        assert old.poll() is None, f"the old flow ended: {old.communicate()[1].decode()[-2000:]}"
        try:
            held = _held(recovery, seal)
        except (ValueError, sqlite3.OperationalError):  # no execution recorded yet
            held = {}
        # Every tenant's lane, and most of its rows (drift may still hold a batch).
        if len(held) == TENANTS and sum(held.values()) >= TENANTS * OLD * 0.8:
            break
        time.sleep(0.5)
    kill(old)
    held = _held(recovery, seal)
    assert sorted(held) == [f"signals:tenant-{i:02d}" for i in range(TENANTS)], held
    assert lake_count(settings) == 0, "the old run was to land nothing before the kill"

    produce(settings, second)
    fast = settings.with_changes("lake", batch_max_rows=50, batch_max_seconds=0.2)
    finish(igflow(fast, "run", "-r", str(recovery), IGFLOW_RUN_SNAPSHOT_SECONDS="0.5"))

    total = TENANTS * (OLD + NEW)
    rows = lake_rows(settings)
    quarantined = quarantine_rows(settings)
    keys = {(r["tenant_id"], r["source"], r["signal_id"], r["ts"]) for r in rows}
    offsets = {(r["kafka_partition"], r["kafka_offset"]) for r in rows}
    assert len(keys) == len(offsets) == len(rows), "a row landed twice"
    assert len(rows) + len(quarantined) == total, (len(rows), len(quarantined), held)
    # ... and the old keying's batches are gone from the store once landed.
    assert _held(recovery, seal) == {}
