"""``igflow produce``: a deterministic workload into the signal topic, at a given rate."""

from __future__ import annotations

import dataclasses
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

from core.contracts import signal_contracts
from core.errors import RegistryError
from core.partitioning import JAVA_PARTITIONER
from core.settings import Settings
from igflow.workload import WorkloadSpec, generate

__all__ = ["ProduceReport", "end_offsets", "produce"]


@dataclasses.dataclass(frozen=True, slots=True)
class ProduceReport:
    """What was produced, by kind (``valid``, ``duplicate``, bad kinds)."""

    kinds: dict[str, int]
    seconds: float

    @property
    def total(self) -> int:
        """All messages acknowledged by the broker."""
        return sum(self.kinds.values())


def produce(
    settings: Settings,
    spec: WorkloadSpec,
    *,
    schema_version: int = 1,
    rate: float = 0.0,
    progress: Callable[[int], None] | None = None,
) -> ProduceReport:
    """Produce the workload; returns once every message is acknowledged.

    The writer schema is looked up in the registry (it must be registered: ``igflow setup``),
    so its id is the registry's, as with confluent-kafka's AvroSerializer.
    """
    contract = signal_contracts()[schema_version - 1]
    with SchemaRegistryClient(settings.kafka.registry_config()) as client:
        registered = client.lookup_schema(settings.kafka.subject, Schema(contract.text, "AVRO"))
    schema_id = registered.schema_id
    if schema_id is None:
        msg = f"{contract.path.name} has no id under {settings.kafka.subject}"
        raise RegistryError(msg)
    producer = Producer(
        {
            **settings.kafka.client_config(),
            "acks": "all",
            "linger.ms": 20,
            "batch.num.messages": 5000,
            "queue.buffering.max.messages": 200_000,
            **JAVA_PARTITIONER,
        }
    )
    failures: list[str] = []

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            failures.append(str(err))

    kinds: Counter[str] = Counter()
    start = time.perf_counter()
    for n, message in enumerate(
        generate(
            dataclasses.replace(spec, selectors=schema_version >= 2), schema_id, contract.parsed
        )
    ):
        if rate > 0:
            wait = start + n / rate - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
        while True:
            try:
                producer.produce(
                    settings.kafka.topic, message.value, message.key, on_delivery=delivered
                )
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
        kinds[message.kind] += 1
        if progress is not None and n % 1000 == 999:
            progress(n + 1)
    remaining = producer.flush(60)
    if remaining or failures:
        msg = f"{remaining} messages unacknowledged, {len(failures)} failed: {failures[:3]}"
        raise KafkaException(msg)
    return ProduceReport(dict(kinds), time.perf_counter() - start)


def end_offsets(settings: Settings, topic: str, timeout_s: float = 10.0) -> dict[int, int]:
    """The high watermark of every partition of ``topic`` (empty when the topic is missing)."""
    consumer = Consumer({**settings.kafka.client_config(), "group.id": "igflow-admin"})
    try:
        meta = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
        if meta is None or meta.error is not None:
            return {}
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)[1]
            for p in sorted(meta.partitions)
        }
    finally:
        consumer.close()


def print_progress(total: int) -> Callable[[int], None]:
    """A progress callback that rewrites one line on standard error."""

    def show(done: int) -> None:
        sys.stderr.write(f"\rproduced {done:,}/{total:,} ({100 * done / max(total, 1):.0f}%)")
        sys.stderr.flush()

    return show
