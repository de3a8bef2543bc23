"""Publishing signals to Kafka: the flow's own checks first, then an acknowledged produce.

The API owns no business rule: a signal is checked by :func:`core.signal_rules.check`, the
function the flow's validate step runs, against the same tenant registry and settings, with the
Kafka timestamp the record will carry (the produce time, set explicitly), so whatever the API
accepts the flow accepts too, unless the tenant registry changes in between (then the flow's
verdict goes to the DLQ with its reason, as for any producer). That includes the contract's
field size limits (``validate.max_*``): an oversized field is ``FIELD_INVALID`` (REST 422), and a
record Kafka refuses as too large anyway is ``RECORD_TOO_LARGE`` (REST 413), never the outage
code ``KAFKA_UNAVAILABLE``.

Records are serialized by confluent-kafka's ``AvroSerializer`` with the newest contract, looked up
(never registered) in the schema registry under the topic's subject, keyed by tenant like every
producer's, and sent with ``acks=all``; :meth:`SignalPublisher.publish` returns only once the
broker has acknowledged the record, with its partition and offset. Provenance travels in headers:
``igflow.ingest.via`` (``graphql``, ``rest`` or ``webhook``), ``igflow.ingest.principal`` (the
authenticated subject), ``igflow.ingest.request_sha256`` (SHA-256 of the HTTP body) and the
W3C ``traceparent`` of the publish span (:mod:`core.tracing`), when tracing is on or the client
sent one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import threading
import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from core import tracing
from core.contracts import signal_contracts
from core.errors import IgflowError
from core.partitioning import JAVA_PARTITIONER
from core.reasons import ReasonCode
from core.records import Decoded, Provenance, Rejected, Signal, input_hash
from core.settings import Settings
from core.signal_rules import check
from core.tenants import TenantDirectory

__all__ = ["Delivery", "PublishRejected", "SignalPublisher", "derived_signal_id"]


class PublishRejected(IgflowError):
    """The signal was not produced: invalid (the flow's reason code) or the broker failed."""

    def __init__(self, reason: ReasonCode, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclasses.dataclass(frozen=True, slots=True)
class Delivery:
    """Where the broker put an acknowledged signal."""

    signal_id: str
    topic: str
    partition: int
    offset: int
    #: SHA-256 of the exact record value: the ``input_hash`` of the landed row's provenance.
    input_hash: str


def derived_signal_id(signal: Signal) -> str:
    """A stable id from the signal's content, for producers that send none.

    A retried publish of the same signal gets the same id, so the flow's dedupe (keyed by
    ``(tenant_id, source, signal_id, ts)``) lands it once.
    """
    canonical = json.dumps(
        [
            signal.tenant_id,
            signal.type,
            repr(signal.value),
            None if signal.weight is None else repr(signal.weight),
            signal.source,
            signal.ts.isoformat(),
            list(signal.selectors),
        ],
        separators=(",", ":"),
    )
    return "sig-" + hashlib.sha256(canonical.encode()).hexdigest()[:32]


class SignalPublisher:
    """One producer per process; a thread serves its delivery callbacks."""

    def __init__(self, settings: Settings, tenants: TenantDirectory) -> None:
        self._settings = settings
        self._tenants = tenants
        tracing.configure(settings.tracing, "api")
        self._topic = settings.kafka.topic
        self._timeout = settings.api.publish_timeout_seconds
        contract = signal_contracts()[-1]
        self._schema_version = contract.version
        self._registry = SchemaRegistryClient(settings.kafka.registry_config())
        subject = settings.kafka.subject
        self._serializer = AvroSerializer(
            self._registry,
            contract.text,
            conf={
                "auto.register.schemas": False,
                "subject.name.strategy": lambda _ctx, _name: subject,
            },
        )
        self._producer = Producer(
            {
                **settings.kafka.client_config(),
                "acks": "all",
                "linger.ms": 2,
                "message.timeout.ms": max(1000, round(self._timeout * 1000)),
                "socket.connection.setup.timeout.ms": 3000,
                **JAVA_PARTITIONER,
            }
        )
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="igflow-api-producer", daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.05)

    def check(self, signal: Signal, now_ms: int) -> Rejected | None:
        """The flow's validate verdict on ``signal`` produced at ``now_ms`` (None: valid)."""
        provenance = Provenance(self._topic, -1, -1, self._schema_version, "")
        verdict = check(
            Decoded(signal, provenance, kafka_timestamp_ms=now_ms),
            self._tenants,
            self._settings.validate,
        )
        return verdict if isinstance(verdict, Rejected) else None

    async def publish(
        self,
        signal: Signal,
        *,
        via: str,
        principal: str,
        body: bytes,
        traceparent: str | None = None,
    ) -> Delivery:
        """Check, serialize and produce ``signal``; returns once the broker acknowledged it.

        :class:`PublishRejected` with the flow's reason code if the signal is invalid, or
        ``KAFKA_UNAVAILABLE`` if the broker did not acknowledge within the timeout.

        Traced (:func:`core.tracing.publishing`) as a ``PRODUCER`` span under the client's
        ``traceparent``; the record carries the span's ``traceparent`` header to the flow.
        """
        attributes = {"igflow.tenant_id": signal.tenant_id, "igflow.ingest.via": via}
        with tracing.publishing(traceparent, attributes) as span:
            try:
                delivery = await self._publish(signal, via, principal, body, span.header)
            except PublishRejected as exc:
                span.failed(exc.reason.value)
                raise
            span.set(
                {
                    "igflow.signal_id": delivery.signal_id,
                    "messaging.destination.name": delivery.topic,
                    "messaging.kafka.destination.partition": delivery.partition,
                    "messaging.kafka.message.offset": delivery.offset,
                }
            )
            return delivery

    async def _publish(
        self, signal: Signal, via: str, principal: str, body: bytes, traceparent: str | None
    ) -> Delivery:
        now_ms = time.time_ns() // 1_000_000
        # In a thread: the tenant registry refreshes from Postgres now and then, and the
        # serializer asks the schema registry for the id on first use; neither may block the loop.
        value = await asyncio.to_thread(self._checked, signal, now_ms)
        loop = asyncio.get_running_loop()
        acked: asyncio.Future[Message] = loop.create_future()

        def delivered(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                loop.call_soon_threadsafe(_settle, acked, KafkaException(err), None)
            else:
                loop.call_soon_threadsafe(_settle, acked, None, msg)

        headers: list[tuple[str, str | bytes | None]] = [
            ("igflow.ingest.via", via.encode()),
            ("igflow.ingest.principal", principal.encode()),
            ("igflow.ingest.request_sha256", hashlib.sha256(body).hexdigest().encode()),
        ]
        if traceparent is not None:
            headers.append((tracing.TRACEPARENT, traceparent.encode()))
        try:
            self._producer.produce(
                self._topic,
                value,
                signal.tenant_id.encode(),
                on_delivery=delivered,
                timestamp=now_ms,
                headers=headers,
            )
            msg = await asyncio.wait_for(acked, self._timeout + 1.0)
        except KafkaException as exc:
            # Too large for the producer or the topic: the client's record, not an outage.
            error = exc.args[0] if exc.args else None
            if isinstance(error, KafkaError) and error.code() == KafkaError.MSG_SIZE_TOO_LARGE:
                raise PublishRejected(
                    ReasonCode.RECORD_TOO_LARGE, "the serialized signal is larger than Kafka takes"
                ) from exc
            raise PublishRejected(
                ReasonCode.KAFKA_UNAVAILABLE, "the broker did not acknowledge the signal"
            ) from exc
        except (BufferError, TimeoutError) as exc:
            raise PublishRejected(
                ReasonCode.KAFKA_UNAVAILABLE, "the broker did not acknowledge the signal"
            ) from exc
        partition, offset = msg.partition(), msg.offset()
        assert partition is not None and offset is not None
        return Delivery(signal.signal_id, self._topic, partition, offset, input_hash(value))

    def _checked(self, signal: Signal, now_ms: int) -> bytes:
        rejected = self.check(signal, now_ms)
        if rejected is not None:
            raise PublishRejected(rejected.reason, rejected.detail)
        return self._serialize(signal)

    def _serialize(self, signal: Signal) -> bytes:
        record: dict[str, Any] = {
            "tenant_id": signal.tenant_id,
            "signal_id": signal.signal_id,
            "type": signal.type,
            "value": signal.value,
            "weight": signal.weight,
            "source": signal.source,
            "ts": signal.ts,
            "selectors": list(signal.selectors),
        }
        data = self._serializer(record, SerializationContext(self._topic, MessageField.VALUE))
        assert isinstance(data, bytes)
        return data

    def ready(self, timeout_s: float = 2.0) -> str:
        """``ok`` if the broker answers a metadata request for the topic, else why not."""
        try:
            meta = self._producer.list_topics(self._topic, timeout=timeout_s)
        except KafkaException as exc:
            return type(exc).__name__
        topic = meta.topics.get(self._topic)
        if topic is None or topic.error is not None:
            return "topic missing"
        return "ok"

    def registry_ready(self) -> str:
        """``ok`` if the schema registry lists the topic's subject."""
        try:
            subjects = self._registry.get_subjects()
        except Exception as exc:
            return type(exc).__name__
        return "ok" if self._settings.kafka.subject in subjects else "subject missing"

    def close(self) -> None:
        tracing.flush()
        self._producer.flush(self._timeout)
        self._stop.set()
        self._poller.join(timeout=2.0)
        self._registry.close()


def _settle(
    future: asyncio.Future[Message], error: BaseException | None, msg: Message | None
) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        assert msg is not None
        future.set_result(msg)
