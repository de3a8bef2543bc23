"""Hostile Kafka input on the real local stack (issue 12): poison pills and a seeded fuzz run.

Every record the source can read leaves ``igflow run`` accounted for: landed, rejected with a
reason code (DLQ and quarantine table), or counted as a duplicate; the flow never stops.

The signal topic is created with ``max.message.bytes`` of 16 MiB and the DLQ topic with Kafka's
default, so on genuine Kafka too the 10 MB records get in and their rejects must go by reference.
"""

from __future__ import annotations

import hashlib
import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

from igflow.admin import catalog
from igflow.settings import Settings
from igflow.wire import encode
from sinks.dlq import DLQ_HEADERS
from tests.conftest import SIGNAL_V1
from tests.integration.conftest import finish, igflow, lake_rows, read_topic

pytestmark = pytest.mark.integration

_MiB = 1 << 20
#: The signal topic accepts records up to this size (a producer needs as much).
_TOPIC_MAX = 16 * _MiB


@pytest.fixture
def big_settings(stack: Settings) -> Settings:
    """Fresh topics (the signal topic taking 16 MiB records, the DLQ Kafka's default) and lake."""
    tag = uuid.uuid4().hex[:10]
    settings = (
        stack.with_changes("kafka", topic=f"it.{tag}.signals", dlq_topic=f"it.{tag}.dlq")
        .with_changes("lake", namespace=f"it_{tag}", batch_max_rows=500, batch_max_seconds=0.5)
        .with_changes("stores", sinks="")
    )
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap})
    topics = [
        NewTopic(
            settings.kafka.topic,
            num_partitions=settings.kafka.partitions,
            config={"max.message.bytes": str(_TOPIC_MAX)},
        ),
        NewTopic(settings.kafka.dlq_topic, num_partitions=settings.kafka.partitions),
    ]
    for future in admin.create_topics(topics, operation_timeout=30).values():
        future.result()
    return settings


def _v1_id(settings: Settings) -> int:
    with SchemaRegistryClient({"url": settings.kafka.schema_registry_url}) as client:
        registered = client.lookup_schema(settings.kafka.subject, Schema(SIGNAL_V1.text, "AVRO"))
    assert registered.schema_id is not None
    return registered.schema_id


def _record(tenant: str, signal_id: str, ts: datetime, **fields: Any) -> dict[str, Any]:
    return {
        "tenant_id": tenant,
        "signal_id": signal_id,
        "type": "latency",
        "value": 0.5,
        "weight": None,
        "source": "sensor-a",
        "ts": ts,
        **fields,
    }


class _Sent:
    """What was produced, by (partition, offset): the key and value, acknowledged."""

    def __init__(self, settings: Settings) -> None:
        self._topic = settings.kafka.topic
        self._producer = Producer(
            {
                "bootstrap.servers": settings.kafka.bootstrap,
                "acks": "all",
                "linger.ms": 5,
                "message.max.bytes": _TOPIC_MAX,
            }
        )
        self.records: dict[tuple[int, int], tuple[bytes | None, bytes | None]] = {}
        self._failures: list[str] = []

    def send(self, key: bytes | None, value: bytes | None, **kwargs: Any) -> None:
        def delivered(err: Any, msg: Any) -> None:
            if err is not None:
                self._failures.append(str(err))
            else:
                self.records[(msg.partition(), msg.offset())] = (key, value)

        self._producer.produce(self._topic, value, key, on_delivery=delivered, **kwargs)
        self._producer.poll(0)

    def flush(self) -> None:
        assert self._producer.flush(60) == 0
        assert not self._failures, self._failures[:3]


def _dlq_by_source(settings: Settings) -> dict[tuple[int, int], Any]:
    out: dict[tuple[int, int], Any] = {}
    for msg in read_topic(settings, settings.kafka.dlq_topic):
        headers = dict(msg.headers())
        assert set(DLQ_HEADERS) <= set(headers)
        source = (int(headers["igflow.source.partition"]), int(headers["igflow.source.offset"]))
        assert source not in out, f"{source} dead-lettered twice"
        out[source] = msg
    return out


def _quarantine_by_source(settings: Settings) -> dict[tuple[int, int], dict[str, Any]]:
    table = catalog(settings).load_table(f"{settings.lake.namespace}.quarantine")
    rows = table.scan().to_arrow().to_pylist()
    return {(r["kafka_partition"], r["kafka_offset"]): r for r in rows}


def _valid_stream(schema_id: int, start: datetime, count: int) -> Iterator[tuple[bytes, bytes]]:
    for i in range(count):
        tenant = f"tenant-0{i % 3}"
        ts = start + timedelta(seconds=i)
        record = _record(tenant, f"ok-{i}", ts, value=(i % 10) / 10)
        yield tenant.encode(), encode(schema_id, SIGNAL_V1.parsed, record)


def test_poison_pills_of_1_5_and_10_mb_leave_as_rejects_by_reference(
    big_settings: Settings,
) -> None:
    schema_id = _v1_id(big_settings)
    now = datetime.now(UTC).replace(microsecond=0)
    rng = random.Random(12)
    sent = _Sent(big_settings)
    valid = list(_valid_stream(schema_id, now - timedelta(hours=1), 300))
    pills = [
        # A valid frame of an unknown tenant, just over 1 MiB (the record).
        (None, encode(schema_id, SIGNAL_V1.parsed, _record("nobody", "p" * _MiB, now))),
        # 5 MB that are not Avro at all.
        (b"k", rng.randbytes(5 * _MiB)),
        # 10 MB in a registered tenant's type, with a 2 MiB key.
        (
            b"K" * (2 * _MiB),
            encode(schema_id, SIGNAL_V1.parsed, _record("tenant-00", "big", now, type="t" * 10**7)),
        ),
    ]
    assert [len(v) // 1_000_000 for _k, v in pills] == [1, 5, 10]
    # Mixed traffic: the pills among valid records, so records behind them must get through.
    for n, (key, value) in enumerate(valid):
        sent.send(key, value)
        if n in (50, 150, 250):
            sent.send(*pills[(n - 50) // 100])
    sent.flush()
    big = {src: kv for src, kv in sent.records.items() if len(kv[1] or b"") > _MiB}
    assert len(big) == 3

    # Before issue 12 this run crashed on the first pill (MSG_SIZE_TOO_LARGE from the DLQ
    # producer), and again at the same record after every restart.
    finish(igflow(big_settings, "run"))

    landed = {(r["tenant_id"], r["signal_id"]) for r in lake_rows(big_settings)}
    assert len(landed) == len(valid) and "big" not in {s for _t, s in landed}
    dlq = _dlq_by_source(big_settings)
    quarantine = _quarantine_by_source(big_settings)
    assert set(dlq) == set(quarantine) == set(big)
    for source, (key, value) in big.items():
        assert value is not None
        headers = dict(dlq[source].headers())
        assert dlq[source].value() is None
        assert headers["igflow.reason"].decode() in {"DECODE_FAILED", "FIELD_INVALID"}
        assert headers["igflow.value.omitted"] == str(len(value)).encode()
        assert (
            headers["igflow.value.kept_in"] == f"{big_settings.lake.namespace}.quarantine".encode()
        )
        assert headers["igflow.input_hash"] == hashlib.sha256(value).hexdigest().encode()
        if key is not None and len(key) > 1024:
            assert dlq[source].key() is None
            assert headers["igflow.key.omitted"] == str(len(key)).encode()
        else:
            assert dlq[source].key() == key
        # The exact bytes are kept in the quarantine table, under the same coordinates.
        row = quarantine[source]
        assert row["payload"] == value and row["kafka_key"] == key
        assert row["input_hash"] == hashlib.sha256(value).hexdigest()
