"""What a lake ledger's marks point at: the input hash of the record at each partition's mark.

Offsets are not identities, even under one topic id (:mod:`sinks.topic_identity`): a broker that
lost data (an unclean leader election, a restored disk) hands out the same offsets again for
different records, and the ledger (:mod:`sinks.iceberg`) would skip them as already committed. So
each append also records, under ``igflow.marks`` in its snapshot summary, per (topic, partition)
the highest offset the table holds across lanes and the ``input_hash`` (SHA-256 of the exact Kafka
value bytes) of the record at that offset. The first time an appender meets a (topic, partition)
in a process, it reads the record at the recorded mark from Kafka (one record) and compares its
hash; a record that is different, or a log that ends at or before the mark, raises
:class:`LedgerContentChanged`, which stops the flow. A log that starts after the mark (retention
on a quiet topic, DeleteRecords) is only logged: Kafka never hands out offsets below a log's start
again, so nothing the ledger skips can be another record. Never on the per-record path: once per
partition, process and table.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping

from confluent_kafka import Consumer, TopicPartition
from pyiceberg.table import Table
from pyiceberg.table.snapshots import ancestors_of

from core.errors import FatalSinkError
from core.kafka_start import eof_config
from core.records import input_hash
from core.tls import Brokers, kafka_connection

__all__ = [
    "MARKS_KEY",
    "ContentCheck",
    "KafkaRecordReader",
    "LedgerContentChanged",
    "Marks",
    "Missing",
    "RecordReader",
    "Unverifiable",
    "dump_marks",
    "merge_marks",
    "recorded_marks",
]

log = logging.getLogger(__name__)

#: Snapshot-summary key: ``{"topic": {"partition": [offset, "input hash"]}}``.
MARKS_KEY = "igflow.marks"
_TIMEOUT_S = 30.0

#: (topic, partition) -> (highest landed offset, input hash of the record there).
Marks = dict[tuple[str, int], tuple[int, str]]

#: Reads one record: ``(topic, partition, offset)`` -> its input hash, or a sentence saying why
#: there is no record at that offset.
RecordReader = Callable[[str, int, int], "str | Missing"]


class Missing(str):
    """Why a log has no record at an offset (for example "the log starts at 40")."""

    __slots__ = ()


class Unverifiable(Missing):
    """The log starts after the mark (retention or DeleteRecords removed it): the record cannot be
    compared, but nothing can reuse its offset either, since Kafka never hands out an offset
    below a log's start again."""

    __slots__ = ()


class LedgerContentChanged(FatalSinkError):
    """The record at a ledger mark is gone or different: the log is not the one landed."""


class KafkaRecordReader:
    """Reads the record at one offset with an assigned consumer (no group, nothing committed)."""

    def __init__(self, bootstrap: Brokers) -> None:
        self._bootstrap = bootstrap

    def __call__(self, topic: str, partition: int, offset: int) -> str | Missing:
        consumer = Consumer(
            eof_config(
                {
                    **kafka_connection(self._bootstrap),
                    # A group id is required by the client, never used: no subscribe, no commit.
                    "group.id": f"igflow-ledger-check-{uuid.uuid4().hex}",
                    "enable.auto.commit": False,
                }
            )
        )
        try:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=_TIMEOUT_S
            )
            if offset < low:
                return Unverifiable(f"the log starts at offset {low}")
            if offset >= high:
                return Missing(f"the log ends before offset {high}")
            consumer.assign([TopicPartition(topic, partition, offset)])
            while True:
                msg = consumer.poll(_TIMEOUT_S)
                if msg is None:
                    return Missing(f"no record arrived from offset {offset} in {_TIMEOUT_S:.0f} s")
                if msg.error() is not None:
                    # The end of the partition: the offset was a transaction marker or gone.
                    return Missing(f"no record at offset {offset} ({msg.error()})")
                found = msg.offset()
                if found is not None and found > offset:
                    return Missing(f"no record at offset {offset} (next is {found})")
                if found == offset:
                    return input_hash(msg.value())
        finally:
            consumer.close()


def recorded_marks(table: Table) -> Marks:
    """The marks of the newest snapshot that records them (``{}`` for none)."""
    for snapshot in ancestors_of(table.current_snapshot(), table.metadata):
        summary = snapshot.summary
        raw = summary.additional_properties.get(MARKS_KEY) if summary is not None else None
        if raw is not None:
            data: dict[str, dict[str, list[int | str]]] = json.loads(raw)
            return {
                (topic, int(partition)): (int(mark[0]), str(mark[1]))
                for topic, parts in data.items()
                for partition, mark in parts.items()
            }
    return {}


def merge_marks(recorded: Mapping[tuple[str, int], tuple[int, str]], landed: Marks) -> Marks:
    """``recorded`` advanced by this append's highest (offset, hash) per partition."""
    merged = dict(recorded)
    for key, mark in landed.items():
        held = merged.get(key)
        if held is None or mark[0] > held[0]:
            merged[key] = mark
    return merged


def dump_marks(marks: Mapping[tuple[str, int], tuple[int, str]]) -> str:
    """The summary value: sorted, compact, so a replay writes the same bytes."""
    data: dict[str, dict[str, list[int | str]]] = {}
    for (topic, partition), (offset, digest) in sorted(marks.items()):
        data.setdefault(topic, {})[str(partition)] = [offset, digest]
    return json.dumps(data, separators=(",", ":"), sort_keys=True)


class ContentCheck:
    """Checks each (topic, partition)'s recorded mark against the log, once per process."""

    def __init__(self, reader: RecordReader) -> None:
        self._reader = reader
        self._checked: set[tuple[str, int]] = set()
        self._lock = threading.Lock()

    def __call__(
        self,
        table_name: str,
        recorded: Mapping[tuple[str, int], tuple[int, str]],
        partitions: Iterable[tuple[str, int]],
    ) -> None:
        """:class:`LedgerContentChanged` if a partition's mark no longer holds its record."""
        with self._lock:
            for key in sorted(set(partitions) - self._checked):
                mark = recorded.get(key)
                if mark is not None:
                    _compare(table_name, key, mark, self._reader(key[0], key[1], mark[0]))
                self._checked.add(key)


def _compare(
    table_name: str, key: tuple[str, int], mark: tuple[int, str], found: str | Missing
) -> None:
    topic, partition = key
    offset, expected = mark
    if isinstance(found, Unverifiable):
        # Retention on a quiet topic, or DeleteRecords: not a loss of identity. A broker that
        # lost data hands out offsets at or below the mark again, so its log ends at or before
        # the mark (caught below) or holds another record there (caught below).
        log.warning(
            "%s: the record at topic %s partition %s offset %s (the ledger's mark) cannot be "
            "checked: %s",
            table_name,
            topic,
            partition,
            offset,
            found,
        )
        return
    if isinstance(found, Missing):
        what = f"is gone: {found}"
    elif found != expected:
        what = f"is another record (input hash {found}, {expected} landed)"
    else:
        return
    msg = (
        f"{table_name}: the record at topic {topic} partition {partition} offset {offset}, "
        f"the last this table's ledger landed from there, {what}. The broker lost data "
        "under the same topic id (an unclean leader election, a restored disk), so offsets "
        "at or below the ledger's may name other records and would be skipped as already "
        "landed. Land the topic into a new namespace "
        "(IGFLOW_LAKE_NAMESPACE), or drop this namespace's tables to start over; see "
        "DEVELOPERS.md"
    )
    raise LedgerContentChanged(msg)
