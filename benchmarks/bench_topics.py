"""The benchmarks' own Kafka topics: ``bench.<tag>.<name>`` and its dead-letter topic, a fresh tag
per run (``benchmarks/cleanup.py``, ``make bench-clean``, drops every ``bench.*``); and the
workload most of them produce to it (:func:`demo_workload`)."""

from __future__ import annotations

import dataclasses
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from core.settings import Settings  # noqa: E402
from igflow.admin import create_topics  # noqa: E402
from igflow.workload import WorkloadSpec, recent_start  # noqa: E402

__all__ = ["demo_workload", "fresh_topics", "with_topics"]


def with_topics(settings: Settings, tag: str, name: str = "signals") -> Settings:
    """``settings`` reading ``bench.<tag>.<name>``, its dead letters to ``bench.<tag>.<name>
    .dlq`` (for ``signals``, ``bench.<tag>.dlq``, as the benchmarks have always named it)."""
    dlq = f"bench.{tag}.dlq" if name == "signals" else f"bench.{tag}.{name}.dlq"
    return settings.with_changes("kafka", topic=f"bench.{tag}.{name}", dlq_topic=dlq)


def fresh_topics(settings: Settings | None = None, name: str = "signals") -> tuple[str, Settings]:
    """A new tag, and ``settings`` (the environment's by default) on its topics, created."""
    tag = uuid.uuid4().hex[:8]
    scoped = with_topics(settings if settings is not None else Settings.load(), tag, name)
    create_topics(scoped)
    return tag, scoped


def demo_workload(
    signals: int, *, step: timedelta | None = None, seed: int = 1, tenants: int = 10
) -> WorkloadSpec:
    """``signals`` over ``tenants`` demo tenants with 5% duplicates and 2% invalid records, in
    event time from a recent start (:func:`~igflow.workload.recent_start`), a tenant's signals
    ``step`` apart (``None``: the workload's default)."""
    spec = WorkloadSpec(
        tenants=tenants,
        count=signals // tenants,
        duplicates=0.05,
        invalid=0.02,
        seed=seed,
        start=recent_start(datetime.now(UTC)),
    )
    return spec if step is None else dataclasses.replace(spec, step=step)
