"""Which topic a lake ledger's offsets belong to: Kafka's topic id, kept beside the ledger.

Offsets are not identities. A topic deleted and re-created hands out offsets 0, 1, … again for
different records, and the ledger (:mod:`sinks.iceberg`) skips every record at or below its
marks: such records would be dropped as "already committed" without a word. So each append
also records, under ``igflow.topic_ids`` in its snapshot summary, the id of every topic its
ledger names, and an append whose records come from a topic of that name with another id is
refused (:class:`TopicChanged`), which stops the flow.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping

from confluent_kafka import TopicCollection
from confluent_kafka.admin import AdminClient
from pyiceberg.table import Table
from pyiceberg.table.snapshots import ancestors_of

from core.errors import FatalSinkError
from core.tls import Brokers, kafka_connection

__all__ = ["TOPIC_IDS_KEY", "TopicChanged", "TopicIds", "recorded_topic_ids"]

#: Snapshot-summary key: ``{"topic": "topic id"}``.
TOPIC_IDS_KEY = "igflow.topic_ids"
_TIMEOUT_S = 30.0


class TopicChanged(FatalSinkError):
    """The input topic is not the one the lake's ledger was written from."""


class TopicIds:
    """Kafka topic ids by name, asked once per topic and process (Admin ``DescribeTopics``)."""

    def __init__(self, bootstrap: Brokers) -> None:
        self._bootstrap = bootstrap
        self._ids: dict[str, str] = {}
        self._lock = threading.Lock()

    def __call__(self, topic: str) -> str:
        with self._lock:
            held = self._ids.get(topic)
            if held is None:
                admin = AdminClient(kafka_connection(self._bootstrap))
                futures = admin.describe_topics(
                    TopicCollection([topic]), request_timeout=_TIMEOUT_S
                )
                held = self._ids[topic] = str(futures[topic].result(timeout=_TIMEOUT_S).topic_id)
            return held


def recorded_topic_ids(table: Table) -> dict[str, str]:
    """The topic ids of the newest snapshot that records them (``{}`` for none)."""
    for snapshot in ancestors_of(table.current_snapshot(), table.metadata):
        summary = snapshot.summary
        raw = summary.additional_properties.get(TOPIC_IDS_KEY) if summary is not None else None
        if raw is not None:
            ids: dict[str, str] = json.loads(raw)
            return ids
    return {}


def check_topic_ids(
    table_name: str, recorded: Mapping[str, str], current: Mapping[str, str]
) -> dict[str, str]:
    """The ids to record after this append; :class:`TopicChanged` if a topic's id changed."""
    for topic, topic_id in sorted(current.items()):
        held = recorded.get(topic)
        if held is not None and held != topic_id:
            msg = (
                f"{table_name}: topic {topic} is not the one this table's ledger was written "
                f"from (topic id {held} in the ledger, {topic_id} now): the topic was deleted "
                "and re-created, so its offsets name other records and would be skipped as "
                "already landed. Land it into a new namespace (IGFLOW_LAKE_NAMESPACE), or drop "
                "this namespace's tables to start over; see DEVELOPERS.md"
            )
            raise TopicChanged(msg)
    return {**recorded, **current}
