"""The DLQ's twin of :func:`igflow.lake_reader.open_sealed`: a dead letter's value, opened.

With ``seal.enabled`` (the default) the DLQ holds the original value of a reject that carries a
tenant, and a serving store's dead letter (the item as JSON), sealed with the tenant's ``dlq``
keys (:mod:`core.sealing`). Such a message has the header ``igflow.sealed`` (``dlq/<column>``,
or ``shredded`` when the value was withheld because the tenant was offboarded) and names what
the value is bound to in ``igflow.sealed.tenant`` and ``igflow.sealed.row``::

    from confluent_kafka import Consumer
    from core.settings import Settings
    from igflow.dlq_reader import open_dead_letter
    from tenancy.sealing import sealer_of

    settings = Settings.load()
    sealer = sealer_of(settings)
    ...  # msg = consumer.poll(...) on settings.kafka.dlq_topic
    original = open_dead_letter(sealer, msg.key(), msg.value(), msg.headers())

A message that was never sealed (sealing off, or a record that carries no tenant) is returned
as is. Messages sealed before the two binding headers existed are opened with the binding
derived as they were sealed: the keyholder from the lane (``stage:tenant``) or the message key,
the row from the ``igflow.source.*`` headers.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from core.envelope import DecryptError
from core.errors import ConfigError
from core.kafka_start import eof_config
from core.sealing import (
    DLQ_SEALED_HEADER,
    DLQ_SEALED_ROW_HEADER,
    DLQ_SEALED_TENANT_HEADER,
    SHREDDED_HEADER_VALUE,
    is_sealed,
    kafka_row,
    keyholder,
    legacy_keyholder,
)
from core.settings import Settings
from tenancy.keys import KeysDestroyed
from tenancy.sealing import Sealer

__all__ = [
    "Headers",
    "Withheld",
    "open_dead_letter",
    "read_dead_letters",
    "sealed_binding",
    "show",
]

Headers = Sequence[tuple[str, bytes | str | None]] | None


class Withheld(KeysDestroyed):
    """A dead letter whose value was withheld at sealing: its tenant was already offboarded."""


def _text(headers: Headers) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in headers or ():
        if isinstance(value, bytes):
            out[name] = value.decode("utf-8", "replace")
        else:
            out[name] = value or ""
    return out


def sealed_binding(key: bytes | None, headers: Headers) -> tuple[str, str, str, str] | None:
    """``(keyholder, scope, column, row)`` a sealed dead letter is bound to; ``None`` when the
    message says it is not sealed. :class:`Withheld` when its value was withheld (shredded)."""
    h = _text(headers)
    marker = h.get(DLQ_SEALED_HEADER)
    if marker is None:
        return None
    if marker == SHREDDED_HEADER_VALUE:
        tenant = h.get(DLQ_SEALED_TENANT_HEADER) or "its tenant"
        msg = f"the value was withheld: {tenant}'s keys were destroyed (offboarded)"
        raise Withheld(msg)
    scope, _, column = marker.partition("/")
    holder = h.get(DLQ_SEALED_TENANT_HEADER)
    row = h.get(DLQ_SEALED_ROW_HEADER)
    if holder is None:  # sealed before the binding headers existed: as that release did
        lane_tenant = h.get("igflow.lane", "").partition(":")[2]
        claimed = lane_tenant or (key or b"").decode("utf-8", "replace")
        reason = h.get("igflow.reason")
        holder = legacy_keyholder(claimed, reason) or keyholder(claimed, reason) or ""
    if row is None:
        row = kafka_row(
            h.get("igflow.source.topic", ""),
            int(h.get("igflow.source.partition", "-1")),
            int(h.get("igflow.source.offset", "-1")),
        )
    return holder, scope, column, row


def open_dead_letter(
    sealer: Sealer, key: bytes | None, value: bytes | None, headers: Headers
) -> bytes | None:
    """The value of a DLQ message as it was before sealing (the original record's bytes, or a
    serving store's item as JSON); as is when it was never sealed. Raises
    :class:`~tenancy.keys.KeysDestroyed` (:class:`Withheld` included) when its tenant was
    offboarded, :class:`~core.envelope.DecryptError` when it does not open there (tampered,
    copied from another message)."""
    binding = sealed_binding(key, headers)
    if binding is None or value is None or not is_sealed(value):
        return value
    holder, scope, column, row = binding
    return sealer.open(holder, scope, column, row, value)


def _header(headers: Headers, name: str) -> str | None:
    return _text(headers).get(name)


def show(sealer: Sealer, msg: Any) -> dict[str, Any]:
    """What ``igflow dlq show`` prints of DLQ message ``msg`` (a confluent-kafka message): where
    it is, why, the original's coordinates, and its value opened (base64; ``None`` when there
    is none to show) with ``status``: ``plain`` (never sealed), ``opened``, ``shredded`` (the
    tenant was offboarded: the key is gone), ``does not open`` (tampered or misplaced), or
    ``by reference`` (the value is kept in the quarantine table)."""
    headers = msg.headers()
    status, value, note = "plain", msg.value(), None
    try:
        binding = sealed_binding(msg.key(), headers)
        if binding is not None and value is not None:
            status = "opened"
        value = open_dead_letter(sealer, msg.key(), value, headers)
    except KeysDestroyed as exc:
        status, value, note = "shredded", None, str(exc)
        binding = None
    except DecryptError as exc:
        status, value, note = "does not open", None, str(exc)
    if _header(headers, "igflow.value.omitted") is not None:
        status = "by reference"
    return {
        "partition": msg.partition(),
        "offset": msg.offset(),
        "reason": _header(headers, "igflow.reason"),
        "detail": _header(headers, "igflow.detail"),
        "source": "/".join(
            _header(headers, f"igflow.source.{part}") or "-"
            for part in ("topic", "partition", "offset")
        ),
        "sink": _header(headers, "igflow.sink"),
        "sealed_tenant": _header(headers, DLQ_SEALED_TENANT_HEADER),
        "sealed_row": _header(headers, DLQ_SEALED_ROW_HEADER),
        "status": status,
        "note": note,
        "value": None if value is None else base64.b64encode(value).decode("ascii"),
        "value_bytes": None if value is None else len(value),
    }


def read_dead_letters(settings: Settings, timeout_s: float = 30.0) -> Iterator[Any]:
    """Every message of the DLQ topic (committed ones only), each partition to its end."""
    return read_to_end(settings, settings.kafka.dlq_topic, timeout_s)


def read_to_end(settings: Settings, topic: str, timeout_s: float = 30.0) -> Iterator[Any]:
    """Every message of ``topic`` that a consumer sees (``read_committed``: none of an aborted
    transaction), each partition read until the broker reports its end. ``ConfigError`` when
    the topic is missing or not read to its end in ``timeout_s``."""
    consumer = Consumer(
        eof_config(
            {
                **settings.kafka.client_config(),
                "group.id": f"igflow-read-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
            }
        )
    )
    try:
        meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if meta is None or meta.error is not None:
            text = f"no topic {topic}"
            raise ConfigError(text)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions])
        remaining = set(meta.partitions)
        deadline = time.monotonic() + timeout_s
        while remaining and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            error = msg.error()
            if error is not None and error.code() == KafkaError._PARTITION_EOF:
                remaining.discard(msg.partition())
            elif error is None:
                yield msg
        if remaining:
            text = f"could not read {topic} to its end in {timeout_s:g} s: {sorted(remaining)}"
            raise ConfigError(text)
    finally:
        consumer.close()
