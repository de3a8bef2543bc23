"""Where a bounded read of a Kafka partition "from the beginning" starts: at its low watermark.

A reader that asks for the watermarks anyway (a bounded run, the DLQ's marks) assigns the
partition at the log's start offset rather than the logical ``OFFSET_BEGINNING``, which
librdkafka resolves with a ListOffsets query of its own: the first record came 0.50 s after
``assign`` from the logical offset, 0.01 s from a real one. Should the log's start move past the
offset before the first fetch (retention), the consumer's ``auto.offset.reset`` must be
``earliest``, so that the reset goes where ``OFFSET_BEGINNING`` would have.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from confluent_kafka import OFFSET_BEGINNING

__all__ = ["from_low_config", "low_start"]


def from_low_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` for a consumer that assigns partitions at their low watermarks: a start
    deleted before the first fetch resets to the earliest offset."""
    return {**config, "auto.offset.reset": "earliest"}


def low_start(low: int) -> int:
    """The offset to assign a partition read from its beginning whose low watermark is ``low``;
    ``OFFSET_BEGINNING`` when the broker reported none (``low < 0``)."""
    return low if low >= 0 else OFFSET_BEGINNING
