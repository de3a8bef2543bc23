"""The full pipeline on the real local stack: validate, drift-quarantine, dedupe, tag, score.

One workload with 5% duplicates, 2% invalid records and one tenant whose values shift half-way
lands exactly the valid, unique, undrifted records; the drifted batches wait in quarantine with
``DRIFT_DETECTED``; releasing them through ``igflow quarantine release`` lands them, once.
"""

from __future__ import annotations

import json
from collections import Counter
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from core.catalog import catalog
from core.contracts import signal_contracts
from core.settings import Settings
from igflow.producer import produce
from igflow.workload import INVALID_KINDS, WorkloadSpec, generate
from tests.integration.conftest import (
    finish,
    igflow,
    lake_rows,
    read_topic,
    recent,
)

pytestmark = pytest.mark.integration

SPEC = WorkloadSpec(tenants=6, count=600, duplicates=0.05, invalid=0.02, drift_tenant=2, seed=31)
DRIFTED = "tenant-02"
#: Event-time micro-batches of 100 s: with one signal per tenant per second, batches of every
#: type start at multiples of 100 s, so the shift at signal 300 starts a batch.
STAGE_ENV = {
    "IGFLOW_DRIFT_BATCH_SIZE": "10000",
    "IGFLOW_DRIFT_BATCH_SECONDS": "100",
    "IGFLOW_DRIFT_REFERENCE_BATCHES": "2",
    "IGFLOW_DRIFT_REFERENCE_VALUES": "0",
    "IGFLOW_DRIFT_KS_ALPHA": "0.0001",
    # About 33 values of each of the 3 types per 100 s batch: judge them (the default minimum,
    # 50, would let the last, shifted batch pass unjudged at the end of input).
    "IGFLOW_DRIFT_MIN_BATCH_SIZE": "20",
}


def _table(settings: Settings, name: str) -> list[dict[str, Any]]:
    table = catalog(settings).load_table(f"{settings.lake.namespace}.{name}")
    rows: list[dict[str, Any]] = table.scan().to_arrow().to_pylist()
    return rows


def _run(settings: Settings, recovery: Path) -> None:
    finish(igflow(settings, "run", "-r", str(recovery), **STAGE_ENV))


def _brute_score(rows: list[dict[str, Any]]) -> float:
    num = sum(
        (
            Fraction(r["value"]) * Fraction(1.0 if r["weight"] is None else r["weight"])
            for r in rows
        ),
        Fraction(0),
    )
    den = sum((Fraction(1.0 if r["weight"] is None else r["weight"]) for r in rows), Fraction(0))
    return float(num / den)


def test_stages_land_valid_unique_undrifted_records_and_release_lands_the_rest(
    it_settings: Settings, tmp_path: Path
) -> None:
    spec = recent(SPEC)
    messages = list(generate(spec, 1, signal_contracts()[0].parsed))
    assert produce(it_settings, spec).total == len(messages)
    valid = {
        (m.record["tenant_id"], m.record["signal_id"])
        for m in messages
        if m.kind == "valid" and m.record
    }
    drifted = {
        (t, s) for t, s in valid if t == DRIFTED and int(s.rsplit("-", 1)[1]) >= SPEC.count // 2
    }
    invalid = Counter(
        INVALID_KINDS[m.kind.split(":", 1)[1]] for m in messages if m.kind.startswith("invalid:")
    )
    duplicates = sum(m.kind == "duplicate" for m in messages)
    assert duplicates > 0.04 * len(valid) and sum(invalid.values()) > 0.015 * len(valid)

    recovery = tmp_path / "recovery"
    _run(it_settings, recovery)

    rows = lake_rows(it_settings)
    landed = [(r["tenant_id"], r["signal_id"]) for r in rows]
    assert len(landed) == len(set(landed)), "a record landed twice"
    assert set(landed) == valid - drifted
    assert all(r["provenance_id"] and r["policy_version"] for r in rows)

    # Invalid records: in the DLQ and in the quarantine table, each with its reason.
    dlq = Counter(
        dict(m.headers())["igflow.reason"].decode()
        for m in read_topic(it_settings, it_settings.kafka.dlq_topic)
    )
    assert dlq == invalid
    quarantine = _table(it_settings, "quarantine")
    by_stage = Counter((r["stage"], r["reason"]) for r in quarantine)
    assert {reason: n for (stage, reason), n in by_stage.items() if stage == "validate"} == invalid
    held = [r for r in quarantine if r["stage"] == "drift"]
    assert {r["reason"] for r in held} == {"DRIFT_DETECTED"}
    assert {r["tenant_id"] for r in held} == {DRIFTED}
    assert {(r["tenant_id"], r["signal_id"]) for r in held} >= drifted
    assert all(r["payload"] and r["batch_id"] and r["psi"] is not None for r in held)

    listed = json.loads(
        finish(igflow(it_settings, "quarantine", "list", "--tenant", DRIFTED, "--json"))[0]
    )
    assert listed and {b["status"] for b in listed} == {"open"}
    assert sum(b["rows"] for b in listed) == len(held)
    for batch in listed:
        out, _err = finish(igflow(it_settings, "quarantine", "release", batch["batch_id"]))
        assert json.loads(out)["rows"] == batch["rows"]
    again = igflow(it_settings, "quarantine", "release", listed[0]["batch_id"])
    _out, err = again.communicate(timeout=120)
    assert again.returncode == 2 and b"already released" in err

    _run(it_settings, recovery)
    rows = lake_rows(it_settings)
    landed = [(r["tenant_id"], r["signal_id"]) for r in rows]
    assert len(landed) == len(set(landed)), "a released record landed twice"
    assert set(landed) == valid
    listed = json.loads(finish(igflow(it_settings, "quarantine", "list", "--json"))[0])
    assert {b["status"] for b in listed} == {"released"}

    # The newest score of each tenant is the weighted mean of what landed (all inside 24 h).
    scores = _table(it_settings, "scores")
    for tenant in {t for t, _ in valid}:
        mine = [r for r in scores if r["tenant_id"] == tenant]
        newest = max(mine, key=lambda r: (r["kafka_partition"], r["kafka_offset"]))
        assert newest["score"] == _brute_score([r for r in rows if r["tenant_id"] == tenant])
        assert newest["window_count"] == sum(r["tenant_id"] == tenant for r in rows)
