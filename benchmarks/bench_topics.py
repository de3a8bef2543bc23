"""The benchmarks' own Kafka topics: ``bench.<tag>.<name>`` and its dead-letter topic, a fresh tag
per run (``benchmarks/cleanup.py``, ``make bench-clean``, drops every ``bench.*``)."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from core.settings import Settings  # noqa: E402
from igflow.admin import create_topics  # noqa: E402

__all__ = ["fresh_topics", "with_topics"]


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
