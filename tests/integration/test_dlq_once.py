"""The DLQ holds each reject once across SIGKILLs, resumes and bounded re-runs (issue 14,
point 4): transactions with marks in ``<dlq>.marks`` (sinks/dlq.py)."""

from __future__ import annotations

import random
import time
from collections import Counter
from pathlib import Path

import pytest

from core.settings import Settings
from igflow.workload import WorkloadSpec
from tests.integration.conftest import (
    finish,
    igflow,
    kill,
    lake_count,
    produce_workload,
    read_topic,
)

pytestmark = pytest.mark.slow

# Invalid records, undecodable payloads and re-sends: rejects from decode and validate.
SPEC = WorkloadSpec(tenants=6, count=1500, invalid=0.08, bad=400, duplicates=0.02, seed=41)
KILLS = 4


def _sources(settings: Settings) -> Counter[tuple[str, int, int]]:
    """How many times each source record is in the DLQ (read_committed)."""
    return Counter(
        (
            dict(m.headers())["igflow.source.topic"].decode(),
            int(dict(m.headers())["igflow.source.partition"]),
            int(dict(m.headers())["igflow.source.offset"]),
        )
        for m in read_topic(settings, settings.kafka.dlq_topic)
    )


def test_each_reject_is_in_the_dlq_once_after_kills_resumes_and_re_runs(
    it_settings: Settings, tmp_path: Path
) -> None:
    settings = it_settings.with_changes("kafka", batch_size=50).with_changes(
        "lake", batch_max_rows=200, batch_max_seconds=0.2
    )
    report = produce_workload(settings, SPEC)
    rejects_sent = sum(n for kind, n in report.kinds.items() if kind not in ("valid", "duplicate"))
    assert rejects_sent > 400

    # The reference: what one clean run writes, in its own namespace, DLQ and marks.
    clean = settings.with_changes(
        "kafka", dlq_topic=f"{settings.kafka.dlq_topic}.clean"
    ).with_changes("lake", namespace=f"{settings.lake.namespace}_clean")
    finish(igflow(clean, "run"))
    expected = _sources(clean)
    assert len(expected) >= rejects_sent and set(expected.values()) == {1}

    recovery = tmp_path / "recovery"
    rng = random.Random(7)
    for _kill in range(KILLS):
        proc = igflow(settings, "run", "-r", str(recovery), IGFLOW_RUN_SNAPSHOT_SECONDS="0.5")
        time.sleep(rng.uniform(2.0, 5.0))
        if proc.poll() is not None:
            break
        kill(proc)
    finish(igflow(settings, "run", "-r", str(recovery), IGFLOW_RUN_SNAPSHOT_SECONDS="0.5"))
    assert lake_count(settings) > 0
    # Two bounded re-runs from the start, without the recovery store: they read every record
    # again, and none of the rejects goes to the DLQ again.
    for _rerun in range(2):
        finish(igflow(settings, "run"))

    got = _sources(settings)
    assert set(got) == set(expected)
    assert set(got.values()) == {1}, Counter(got.values())
