"""``igflow replay`` on the real local stack: the same offsets in give the same rows out."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from core.catalog import catalog
from core.settings import Settings
from igflow.workload import WorkloadSpec
from sinks.lake_tables import QUARANTINE, SCORES, SIGNALS
from tests.integration.conftest import (
    finish,
    igflow,
    json_lines,
    produce_workload,
)

pytestmark = pytest.mark.integration


def _replay(settings: Settings, *args: str) -> subprocess.Popen[bytes]:
    return igflow(settings, "replay", *args)


def _table(settings: Settings, namespace: str, name: str) -> list[dict[str, Any]]:
    table = catalog(settings).load_table(f"{namespace}.{name}")
    rows: list[dict[str, Any]] = table.scan().to_arrow().to_pylist()
    return sorted(rows, key=lambda r: json.dumps(r, sort_keys=True, default=repr))


def test_replay_of_every_offset_reproduces_the_lake_row_for_row(it_settings: Settings) -> None:
    spec = WorkloadSpec(tenants=4, count=150, duplicates=0.05, invalid=0.02, seed=5)
    produce_workload(it_settings, spec)
    _out, err = finish(igflow(it_settings, "run"))
    ends = {
        line["kafka_partition"]: line["kafka_offset"]
        for line in json_lines(err)
        if line.get("op") == "source.end"
    }
    assert ends, "no source.end log lines"
    original = it_settings.lake.namespace
    scratch = f"{original}_replay"
    to = ",".join(f"{p}:{o}" for p, o in sorted(ends.items()))
    frm = ",".join(f"{p}:0" for p in sorted(ends))

    out, err = finish(
        _replay(it_settings, "--from", frm, "--to", to, "--into", scratch, "--lake-only")
    )
    report = json.loads(out.strip().splitlines()[-1])
    assert report["namespace"] == scratch
    assert report["rows"] == sum(ends.values())
    progress = [line for line in json_lines(err) if line.get("op") == "replay.progress"]
    assert progress and progress[-1]["offsets"] == progress[-1]["total"] == sum(ends.values())

    for table in (SIGNALS, SCORES, QUARANTINE):
        before = _table(it_settings, original, table.name)
        after = _table(it_settings, scratch, table.name)
        assert before, f"{table.name} is empty"
        assert after == before, f"{table.name} differs"
    # igflow verify says the same from digests, by scan and from the snapshot summaries.
    out, _err = finish(igflow(it_settings, "verify", "--against", scratch))
    assert "IDENTICAL" in out
    out, _err = finish(igflow(it_settings, "verify", "--against", scratch, "--from-history"))
    assert "IDENTICAL" in out
    # --source iceberg: the scores re-derived from the landed signals equal the original's.
    derived = f"{original}_derived"
    out, _err = finish(
        _replay(it_settings, "--source", "iceberg", "--from-namespace", original, "--into", derived)
    )
    assert json.loads(out.strip().splitlines()[-1])["namespace"] == derived
    # The run closed ticks at the drift step's horizons (score.close_on, default), which are not
    # landed: the derivation closes them by signals (replay/derive.py). Both publish changes of
    # the same per-record stream: a seq both hold is the same row, and each tenant's last is.
    derived_rows = _table(it_settings, derived, SCORES.name)
    original_rows = _table(it_settings, original, SCORES.name)
    by_seq = {(r["tenant_id"], r["seq"]): r for r in original_rows}
    shared = [r for r in derived_rows if (r["tenant_id"], r["seq"]) in by_seq]
    assert shared and all(r == by_seq[r["tenant_id"], r["seq"]] for r in shared)
    tenants = {r["tenant_id"] for r in original_rows}
    assert tenants == {r["tenant_id"] for r in derived_rows}
    for tenant in tenants:
        [a, b] = [
            max((r for r in rows if r["tenant_id"] == tenant), key=lambda r: r["seq"])
            for rows in (derived_rows, original_rows)
        ]
        assert a == b

    # A sub-range: one partition, offsets 10..50; nothing else lands.
    partition = max(ends, key=lambda p: ends[p])
    assert ends[partition] > 50
    sub = f"{original}_sub"
    out, _err = finish(
        _replay(
            it_settings,
            "--from",
            f"{partition}:10",
            "--to",
            f"{partition}:50",
            "--into",
            sub,
            "--lake-only",
        )
    )
    assert json.loads(out.strip().splitlines()[-1])["rows"] == 40
    landed = _table(it_settings, sub, SIGNALS.name) + _table(it_settings, sub, QUARANTINE.name)
    assert landed
    assert {(r["kafka_partition"]) for r in landed} == {partition}
    assert all(10 <= r["kafka_offset"] < 50 for r in landed)
    by_offset = {
        r["kafka_offset"]: r
        for r in _table(it_settings, original, SIGNALS.name)
        if r["kafka_partition"] == partition
    }
    # The same input bytes at the same offset: the same provenance.
    for row in _table(it_settings, sub, SIGNALS.name):
        if row["kafka_offset"] in by_offset:
            assert row["input_hash"] == by_offset[row["kafka_offset"]]["input_hash"]

    # Replaying into a namespace that has tables is refused (the ledger would skip everything).
    proc = _replay(it_settings, "--from", frm, "--to", to, "--into", scratch, "--lake-only")
    _o, e = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert b"already has tables" in e


def test_an_event_time_range_replays_exactly_the_records_of_that_time(
    it_settings: Settings,
) -> None:
    """Each bound is Kafka's offsets_for_times answer: the first offset at or after its time."""
    import time
    from datetime import UTC, datetime

    from replay.run import resolve_times
    from tests.integration.conftest import read_topic

    produce_workload(it_settings, WorkloadSpec(tenants=3, count=40, seed=11))
    time.sleep(1.1)
    since = datetime.now(UTC)
    time.sleep(0.1)
    produce_workload(it_settings, WorkloadSpec(tenants=3, count=30, seed=12))
    time.sleep(1.1)
    until = datetime.now(UTC)
    time.sleep(0.1)
    produce_workload(it_settings, WorkloadSpec(tenants=3, count=20, seed=13))

    records = read_topic(it_settings, it_settings.kafka.topic)
    since_ms, until_ms = (int(t.timestamp() * 1000) for t in (since, until))
    inside = {
        (m.partition(), m.offset()) for m in records if since_ms <= m.timestamp()[1] < until_ms
    }
    assert len(inside) == 90  # the middle workload: 3 tenants x 30

    start, end = resolve_times(it_settings.kafka, since, until)
    chosen = {
        (m.partition(), m.offset())
        for m in records
        if start[m.partition()] <= m.offset() < end.get(m.partition(), 1 << 62)
    }
    assert chosen == inside

    scratch = f"{it_settings.lake.namespace}_time"
    out, _err = finish(
        _replay(
            it_settings,
            "--from-time",
            since.isoformat(),
            "--to-time",
            until.isoformat(),
            "--into",
            scratch,
            "--lake-only",
        )
    )
    assert json.loads(out.strip().splitlines()[-1])["rows"] == 90
    landed = _table(it_settings, scratch, SIGNALS.name)
    assert {(r["kafka_partition"], r["kafka_offset"]) for r in landed} == inside


def test_a_replay_without_a_range_covers_everything_the_topic_retains(
    it_settings: Settings,
) -> None:
    from tests.integration.conftest import read_topic

    spec = WorkloadSpec(tenants=6, count=30, duplicates=0.05, invalid=0.02, seed=21)
    produce_workload(it_settings, spec)
    records = read_topic(it_settings, it_settings.kafka.topic)
    ends = {str(p): 0 for p in range(it_settings.kafka.partitions)}
    for m in records:
        ends[str(m.partition())] = max(ends.get(str(m.partition()), 0), m.offset() + 1)
    scratch = f"{it_settings.lake.namespace}_all"

    out, _err = finish(_replay(it_settings, "--into", scratch, "--lake-only", "--commits", "own"))
    report = json.loads(out.strip().splitlines()[-1])
    assert report["to"] == ends
    assert report["from"] == {p: 0 for p in ends}
    assert report["rows"] == len(records)
    landed = _table(it_settings, scratch, SIGNALS.name) + _table(
        it_settings, scratch, QUARANTINE.name
    )
    offsets = {(r["kafka_partition"], r["kafka_offset"]) for r in landed}
    assert offsets <= {(m.partition(), m.offset()) for m in records}
    assert len({(r["kafka_partition"], r["kafka_offset"]) for r in landed}) > 0.9 * len(records)
