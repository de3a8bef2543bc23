"""Where a bounded read of a Kafka partition "from the beginning" starts: at its low watermark.

A reader that asks for the watermarks anyway (a bounded run, the DLQ's marks) assigns the
partition at the log's start offset rather than the logical ``OFFSET_BEGINNING``, which
librdkafka resolves with a ListOffsets query of its own: the first record came 0.50 s after
``assign`` from the logical offset, 0.01 s from a real one. Should the log's start move past the
offset before the first fetch (retention), the consumer's ``auto.offset.reset`` must be
``earliest``, so that the reset goes where ``OFFSET_BEGINNING`` would have.

A reader that stops at ``PARTITION_EOF`` waits for an empty fetch answer: librdkafka reports
the end only with one, and the broker holds a fetch at the end for ``fetch.wait.max.ms`` before
answering empty (librdkafka's default: 500 ms). Polling the DLQ's 217 marks to their end took
0.505 s, nearly all of it that wait (the whole read 0.567 s, at every flow's start, in the
background); with :func:`eof_config`'s 10 ms, 0.014 s (the read 0.022).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from confluent_kafka import OFFSET_BEGINNING

__all__ = ["EOF_WAIT_MS", "eof_config", "from_low_config", "low_start"]

#: How long the broker may hold a fetch at a partition's end before answering empty, for a
#: reader that stops at ``PARTITION_EOF`` (the answer that brings it).
EOF_WAIT_MS = 10


def from_low_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` for a consumer that assigns partitions at their low watermarks: a start
    deleted before the first fetch resets to the earliest offset."""
    return {**config, "auto.offset.reset": "earliest"}


def eof_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` for a consumer that reads to ``PARTITION_EOF`` and stops there: EOF reported,
    and the empty answer that brings it after :data:`EOF_WAIT_MS` rather than 500 ms (a
    ``fetch.wait.max.ms`` in ``config`` wins)."""
    return {"fetch.wait.max.ms": EOF_WAIT_MS, **config, "enable.partition.eof": True}


def low_start(low: int) -> int:
    """The offset to assign a partition read from its beginning whose low watermark is ``low``;
    ``OFFSET_BEGINNING`` when the broker reported none (``low < 0``)."""
    return low if low >= 0 else OFFSET_BEGINNING
