"""The topics ``igflow setup`` creates: explicit partitions and configs, and a DLQ that takes
every record the signal topic does."""

from __future__ import annotations

import os
import time
import uuid

import pytest
import redis
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

from core.catalog import catalog
from core.reasons import ReasonCode
from core.records import RawRecord, Rejected
from core.settings import Settings
from core.store_keys import score_key
from core.tls import Brokers, kafka_connection
from igflow.admin import create_topics
from sinks.dlq import DETAIL_MAX_BYTES, dlq_marks_topic, dlq_max_message_bytes, dlq_message
from sinks.iceberg import ensure_table
from sinks.lake_tables import SIGNALS
from tests.conftest import SIGNAL_V1
from tests.integration.scratch import Scratch

pytestmark = pytest.mark.integration


@pytest.fixture
def topics(stack: Settings, scratch: Scratch) -> Settings:
    """Settings naming two fresh topics, created by ``create_topics``."""
    tag = uuid.uuid4().hex[:10]
    settings = stack.with_changes("kafka", topic=f"it.{tag}.signals", dlq_topic=f"it.{tag}.dlq")
    scratch.topics_of(settings)
    assert sorted(create_topics(settings)) == sorted(
        [f"it.{tag}.signals", f"it.{tag}.dlq", f"it.{tag}.dlq.marks"]
    )
    return settings


def _configs(bootstrap: Brokers, topic: str) -> dict[str, str]:
    admin = AdminClient(kafka_connection(bootstrap))
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    entries = admin.describe_configs([resource])[resource].result(timeout=30)
    return {name: entry.value for name, entry in entries.items()}


def test_setup_creates_topics_with_explicit_partitions_and_configs(topics: Settings) -> None:
    kafka = topics.kafka
    admin = AdminClient(kafka.client_config())
    metadata = admin.list_topics(timeout=30).topics
    for topic in (kafka.topic, kafka.dlq_topic):
        assert len(metadata[topic].partitions) == kafka.partitions
    signals = _configs(kafka.client_config(), kafka.topic)
    dlq = _configs(kafka.client_config(), kafka.dlq_topic)
    assert signals["max.message.bytes"] == str(kafka.max_message_bytes)
    assert dlq["max.message.bytes"] == str(dlq_max_message_bytes(kafka.max_message_bytes))
    assert signals["retention.ms"] == str(kafka.retention_ms)
    assert dlq["retention.ms"] == str(kafka.dlq_retention_ms)
    assert signals["message.timestamp.type"] == dlq["message.timestamp.type"] == "CreateTime"
    after = str(kafka.timestamp_after_max_ms)
    assert signals["message.timestamp.after.max.ms"] == dlq["message.timestamp.after.max.ms"]
    assert signals["message.timestamp.after.max.ms"] == after
    marks = dlq_marks_topic(kafka.dlq_topic)
    assert len(metadata[marks].partitions) == 1
    assert _configs(kafka.client_config(), marks)["cleanup.policy"] == "compact"
    assert create_topics(topics) == []  # idempotent


def _produce(bootstrap: Brokers, topic: str, value: bytes, max_bytes: int) -> KafkaError | None:
    errors: list[KafkaError | None] = []
    producer = Producer({**kafka_connection(bootstrap), "message.max.bytes": max_bytes})
    producer.produce(
        topic,
        key=b"tenant-big",
        value=value,
        partition=0,
        on_delivery=lambda err, _msg: errors.append(err),
    )
    assert producer.flush(30) == 0
    return errors[0]


def test_a_timestamp_further_ahead_than_the_topic_allows_is_refused(topics: Settings) -> None:
    """A producer cannot stamp a record further into the future than
    ``kafka.timestamp_after_max_ms`` (and so, with validate's skew, cannot move its tenant's
    event time, and score window, an hour ahead as Kafka 4's default would let it)."""
    kafka = topics.kafka
    now_ms = int(time.time() * 1000)

    def produce_at(ts_ms: int) -> KafkaError | None:
        errors: list[KafkaError | None] = []
        producer = Producer(kafka.client_config())
        producer.produce(
            kafka.topic,
            key=b"tenant-ahead",
            value=b"x",
            partition=0,
            timestamp=ts_ms,
            on_delivery=lambda err, _msg: errors.append(err),
        )
        assert producer.flush(30) == 0
        return errors[0]

    refused = produce_at(now_ms + kafka.timestamp_after_max_ms + 600_000)
    assert refused is not None and refused.code() == KafkaError.INVALID_TIMESTAMP
    assert produce_at(now_ms + kafka.timestamp_after_max_ms // 2) is None


def test_the_largest_signal_record_can_be_dead_lettered(topics: Settings) -> None:
    kafka = topics.kafka
    big = kafka.max_message_bytes + 10_000  # the producer's own cap is not what refuses
    # The broker enforces the signal topic's limit ...
    refused = _produce(kafka.client_config(), kafka.topic, b"x" * kafka.max_message_bytes, big)
    assert refused is not None and refused.code() == KafkaError.MSG_SIZE_TOO_LARGE
    # ... and a record just inside it lands, and goes to the DLQ whole, with its headers.
    value = os.urandom(kafka.max_message_bytes - 1_000)
    assert _produce(kafka.client_config(), kafka.topic, value, big) is None
    record = RawRecord(kafka.topic, 0, 0, b"tenant-big", value)
    rejected = Rejected(ReasonCode.DECODE_FAILED, "é" * 4_000, record)
    message = dlq_message(rejected)
    producer = Producer(
        {
            **kafka.client_config(),
            "message.max.bytes": dlq_max_message_bytes(kafka.max_message_bytes),
        }
    )
    errors: list[KafkaError | None] = []
    producer.produce(
        kafka.dlq_topic,
        key=message.key,
        value=message.value,
        headers=message.headers,
        partition=0,
        on_delivery=lambda err, _msg: errors.append(err),
    )
    assert producer.flush(30) == 0
    assert errors == [None]
    consumer = Consumer(
        {
            **kafka.client_config(),
            "group.id": f"it-{uuid.uuid4().hex}",
            "fetch.max.bytes": 4 * kafka.max_message_bytes,
        }
    )
    try:
        consumer.assign([TopicPartition(kafka.dlq_topic, 0, 0)])
        got = consumer.poll(30)
        assert got is not None and got.error() is None
        assert got.value() == value
        headers = dict(got.headers() or [])
        assert headers["igflow.reason"] == b"DECODE_FAILED"
        assert 0 < len(headers["igflow.detail"]) <= DETAIL_MAX_BYTES
        headers["igflow.detail"].decode()  # cut on a character boundary
    finally:
        consumer.close()


def test_a_tests_scratch_names_are_dropped_when_it_ends(stack: Settings) -> None:
    """The fixtures' clean-up (tests/integration/scratch.py) removes what it was given: topics,
    a namespace and the ones named after it, a tenant's serving entries, a subject."""
    scratch = Scratch(stack)
    tag = uuid.uuid4().hex[:10]
    settings = stack.with_changes(
        "kafka", topic=f"it.{tag}.signals", dlq_topic=f"it.{tag}.dlq"
    ).with_changes("lake", namespace=f"it_{tag}")
    scratch.lake_of(scratch.topics_of(settings))
    create_topics(settings)
    cat = catalog(settings)
    for namespace in (f"it_{tag}", f"it_{tag}_replay"):
        ensure_table(cat, namespace, SIGNALS)
    tenant = f"it-drop-{tag}"
    scratch.tenants.add(tenant)
    hot = redis.Redis.from_url(stack.stores.redis_url)
    hot.set(score_key(tenant), "1")
    subject = f"it.{tag}-value"
    scratch.subjects.add(subject)
    with SchemaRegistryClient(stack.kafka.registry_config()) as client:
        client.register_schema(subject, Schema(SIGNAL_V1.text, "AVRO"))

    scratch.drop()

    admin = AdminClient(stack.kafka.client_config())
    assert not {settings.kafka.topic, settings.kafka.dlq_topic} & set(
        admin.list_topics(timeout=30).topics
    )
    names = {".".join(n) for n in cat.list_namespaces()}
    assert not {f"it_{tag}", f"it_{tag}_replay"} & names
    assert hot.exists(score_key(tenant)) == 0
    hot.close()
    with SchemaRegistryClient(stack.kafka.registry_config()) as client:
        assert subject not in client.get_subjects()
