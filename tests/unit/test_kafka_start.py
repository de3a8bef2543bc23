"""``core.kafka_start``: the consumers that read a partition to its end and stop there ask the
broker not to hold the empty fetch that brings the end for librdkafka's 500 ms (the DLQ's marks
took 0.51 s to read at every flow's start-up, 0.014 s with it)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from core.kafka_start import EOF_WAIT_MS, eof_config
from core.settings import Settings


def test_eof_config_reports_the_end_and_does_not_hold_its_fetch() -> None:
    config = eof_config({"group.id": "g", "enable.partition.eof": False})
    assert config == {
        "group.id": "g",
        "enable.partition.eof": True,
        "fetch.wait.max.ms": EOF_WAIT_MS,
    }
    assert eof_config({"fetch.wait.max.ms": 100})["fetch.wait.max.ms"] == 100  # a chosen wait


class _Made(Exception):
    """Raised by the fake consumer once it has its configuration: the reader goes no further."""


def _reader_configs() -> dict[str, Callable[[], object]]:
    from igflow.dlq_reader import read_to_end
    from replay.run import resolve_times
    from sinks.dlq import read_marks
    from sinks.ledger_content import KafkaRecordReader

    settings = Settings.load()
    return {
        "sinks.dlq": lambda: read_marks(settings.kafka.connection(), "marks"),
        "igflow.dlq_reader": lambda: list(read_to_end(settings, "dlq")),
        "replay.run": lambda: resolve_times(settings.kafka, datetime(2026, 1, 1, tzinfo=UTC), None),
        "sinks.ledger_content": lambda: KafkaRecordReader(settings.kafka.connection())("t", 0, 1),
    }


@pytest.mark.parametrize(
    "module", ["sinks.dlq", "igflow.dlq_reader", "replay.run", "sinks.ledger_content"]
)
def test_every_reader_that_stops_at_the_end_asks_for_it_early(
    module: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[dict[str, Any]] = []

    def consumer(config: dict[str, Any]) -> None:
        made.append(config)
        raise _Made

    monkeypatch.setattr(f"{module}.Consumer", consumer)
    with pytest.raises(_Made):
        _reader_configs()[module]()
    assert made[0]["enable.partition.eof"] is True
    assert made[0]["fetch.wait.max.ms"] == EOF_WAIT_MS
