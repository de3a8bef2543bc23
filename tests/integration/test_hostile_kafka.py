"""Hostile Kafka input on the real local stack (issue 12): poison pills and a seeded fuzz run.

Every record the source can read leaves ``igflow run`` accounted for: landed, rejected with a
reason code (DLQ and quarantine table), or counted as a duplicate; the flow never stops.

The signal topic is created with ``max.message.bytes`` of 16 MiB and the DLQ topic with Kafka's
default, so on genuine Kafka too the 10 MB records get in and their rejects must go by reference.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import struct
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

from core.catalog import catalog
from core.envelope import FieldCipher
from core.reasons import ReasonCode
from core.records import Decoded, RawRecord
from core.sealing import DLQ_SEALED_HEADER
from core.settings import Settings
from core.wire import encode
from core.wire import frame as wire_frame
from igflow.workload import SOURCES
from operators.decode import SignalDecoder
from sinks.dlq import DLQ_HEADERS
from tests.conftest import SIGNAL_V1, SIGNAL_V2, DictSchemas
from tests.integration.conftest import (
    finish,
    igflow,
    lake_rows,
    quarantine_rows,
    read_topic,
    tagged_settings,
)
from tests.integration.scratch import Scratch

pytestmark = pytest.mark.integration

_MiB = 1 << 20
#: The signal topic accepts records up to this size (a producer needs as much).
_TOPIC_MAX = 16 * _MiB


@pytest.fixture
def big_settings(stack: Settings, scratch: Scratch) -> Settings:
    """Fresh topics (the signal topic taking 16 MiB records, the DLQ Kafka's default) and lake."""
    settings = tagged_settings(stack, scratch).with_changes("stores", sinks="")
    admin = AdminClient(settings.kafka.client_config())
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
    with SchemaRegistryClient(settings.kafka.registry_config()) as client:
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
                **settings.kafka.client_config(),
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


def _quarantine_by_source(
    settings: Settings, *, opened: bool = False
) -> dict[tuple[int, int], dict[str, Any]]:
    """The quarantine's rows by source; ``opened``: the payloads opened with their tenants' keys
    (the fuzz run compares reasons only, and its rejects are many)."""
    if opened:
        rows = quarantine_rows(settings)
    else:
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
    quarantine = _quarantine_by_source(big_settings, opened=True)
    assert set(dlq) == set(quarantine) == set(big)
    for source, (key, value) in big.items():
        assert value is not None
        headers = dict(dlq[source].headers())
        assert dlq[source].value() is None
        assert headers["igflow.reason"].decode() in {"DECODE_FAILED", "FIELD_INVALID"}
        # The size of the value that was omitted: the sealed one's for a tenant's reject.
        sealed = DLQ_SEALED_HEADER in headers
        omitted = len(value) + (len(FieldCipher(bytes(32), 1).encrypt(b"", b"")) if sealed else 0)
        assert headers["igflow.value.omitted"] == str(omitted).encode()
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


def test_writer_schemas_whose_records_loop_or_recurse_without_end_are_refused(
    big_settings: Settings,
) -> None:
    """Regression: a producer registers a compatible writer (v1 and a field with a default) and
    sends a small record that no reader survives: with an array of nulls, a 20-byte record
    claiming 2^62 of them (fastavro looped that many times reading nothing: the flow froze at
    that record, and again after every restart); with a recursive type, a 200 KB record nested
    200,000 deep (fastavro overflowed the C stack: SIGSEGV, at every restart). Every record of
    those writers is refused unread, named in the DLQ and the quarantine, and the records
    around them land."""
    v1 = _v1_id(big_settings)
    nulls = json.loads(SIGNAL_V1.text)
    nulls["fields"].append(
        {"name": "flags", "type": {"type": "array", "items": "null"}, "default": []}
    )
    link = {
        "type": "record",
        "name": "Link",
        "fields": [{"name": "next", "type": ["null", "Link"]}],
    }
    linked = json.loads(SIGNAL_V1.text)
    linked["fields"].append({"name": "chain", "type": ["null", link], "default": None})
    with SchemaRegistryClient(big_settings.kafka.registry_config()) as client:
        subject = big_settings.kafka.subject
        nulls_id = client.register_schema(subject, Schema(json.dumps(nulls), "AVRO"))
        linked_id = client.register_schema(subject, Schema(json.dumps(linked), "AVRO"))
    now = datetime.now(UTC).replace(microsecond=0)
    sent = _Sent(big_settings)
    valid = list(_valid_stream(v1, now - timedelta(hours=1), 100))
    body = encode(v1, SIGNAL_V1.parsed, _record("tenant-00", "bomb", now))[5:]
    bombs = [
        wire_frame(nulls_id, body + _zigzag(2**62)),  # 2^62 nulls in one block, no end
        wire_frame(nulls_id, body + _zigzag(-(2**62)) + _zigzag(0) + _zigzag(0)),  # sized
        wire_frame(nulls_id, body + _zigzag(0)),  # an honest empty array of the same writer
        wire_frame(linked_id, body + b"\x02" * 200_000 + b"\x00"),  # 200,000 links deep
        wire_frame(linked_id, body + b"\x00"),  # an honest null of the same writer
    ]
    for n, (key, value) in enumerate(valid):
        sent.send(key, value)
        if n % 20 == 10:
            sent.send(b"tenant-00", bombs[n // 20])
    sent.flush()
    refused = {src: v for src, (_k, v) in sent.records.items() if v in bombs}
    assert len(refused) == len(bombs)

    finish(igflow(big_settings, "run"), timeout=180)

    landed = {(r["tenant_id"], r["signal_id"]) for r in lake_rows(big_settings)}
    assert len(landed) == len(valid) and "bomb" not in {s for _t, s in landed}
    dlq = _dlq_by_source(big_settings)
    quarantine = _quarantine_by_source(big_settings)
    assert set(dlq) == set(quarantine) == set(refused)
    for source, value in refused.items():
        headers = dict(dlq[source].headers())
        assert headers["igflow.reason"] == b"SCHEMA_INCOMPATIBLE"
        linked_record = value[1:5] == linked_id.to_bytes(4, "big")
        # The type by its full name (the writer's namespace).
        named = b"recursive type io.intelgraph." if linked_record else b"array flags of items"
        assert (b".Link (" in headers["igflow.detail"]) == linked_record
        assert named in headers["igflow.detail"]
        assert quarantine[source]["reason"] == "SCHEMA_INCOMPATIBLE"


# --- fuzz ------------------------------------------------------------------------------------

#: ``IGFLOW_FUZZ_SEED`` replays a failing run; ``IGFLOW_FUZZ_COUNT`` makes a longer one.
FUZZ_SEED = int(os.environ.get("IGFLOW_FUZZ_SEED", "20261204"))
FUZZ_COUNT = int(os.environ.get("IGFLOW_FUZZ_COUNT", "40000"))

_HOSTILE_TEXT = [
    b"",
    b" ",
    b"\t\n",
    b"\x00",
    b"a\x00b",
    b"\xed\xa0\x80",  # a lone surrogate, as CESU bytes: not UTF-8
    b"\xff\xfe",
    b"\xc3",  # a cut multi-byte sequence
    "\u202e\u0645\U0001f600".encode(),
    b"'; MATCH (n) DETACH DELETE n //",
    b"{{7*7}}",
    b"tenant:*:events",
    b"../../etc/passwd",
    b"x" * 257,
    b"y" * 5000,
]
_HOSTILE_NUMBERS = [
    float("nan"),
    float("inf"),
    float("-inf"),
    -0.0,
    -1.0,
    1.0000000000000002,
    1e308,
    5e-324,
    0.0,
    1.0,
]
_HOSTILE_TS = [2**63 - 1, -(2**63), 0, -1, 253_402_300_800_000_000, 1 << 62]


def _zigzag(n: int) -> bytes:
    n = (n << 1) ^ (n >> 63)
    n &= (1 << 64) - 1
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _avro_v1(
    schema_id: int,
    tenant: bytes,
    signal_id: bytes,
    kind: bytes,
    value: float,
    weight: tuple[int, float | None],
    source: bytes,
    ts_us: int,
) -> bytes:
    """A v1 frame written by hand, so strings may be any bytes and the union index anything."""

    def text(raw: bytes) -> bytes:
        return _zigzag(len(raw)) + raw

    index, weight_value = weight
    body = text(tenant) + text(signal_id) + text(kind) + struct.pack("<d", value)
    body += _zigzag(index) + (b"" if weight_value is None else struct.pack("<d", weight_value))
    body += text(source) + _zigzag(ts_us)
    return wire_frame(schema_id, body)


class _Fuzz:
    """A seeded stream of hostile and valid records; remembers the kind of each."""

    def __init__(self, rng: random.Random, schema_id: int, now_us: int) -> None:
        self.rng = rng
        self.schema_id = schema_id
        self.now_us = now_us
        self.valid: list[tuple[bytes, bytes]] = []
        #: Frames whose union branch index is not 0 or 1 (fastavro would read -1 and -2).
        self.bad_index: set[bytes] = set()

    def text(self) -> bytes:
        return self.rng.choice(_HOSTILE_TEXT)

    def valid_record(self) -> tuple[bytes, bytes]:
        rng = self.rng
        tenant = f"tenant-0{rng.randrange(3)}".encode()
        frame = _avro_v1(
            self.schema_id,
            tenant,
            f"fz-{rng.getrandbits(48):x}".encode(),
            rng.choice([b"latency", b"consistency"]),
            rng.betavariate(8, 2),
            rng.choice([(0, None), (1, rng.uniform(0, 5))]),
            rng.choice(SOURCES).encode(),
            self.now_us - rng.randrange(3_600_000_000),
        )
        self.valid.append((tenant, frame))
        return tenant, frame

    def hostile_record(self) -> tuple[bytes, bytes]:
        rng = self.rng
        fields: list[Any] = [
            f"tenant-0{rng.randrange(3)}".encode(),
            f"fz-{rng.getrandbits(48):x}".encode(),
            b"latency",
            rng.betavariate(8, 2),
            (0, None),
            rng.choice(SOURCES).encode(),
            self.now_us - rng.randrange(3_600_000_000),
        ]
        for _ in range(rng.randrange(1, 3)):  # spoil one or two fields
            at = rng.randrange(7)
            if at in (0, 1, 2, 5):
                fields[at] = self.text()
            elif at == 3:
                fields[3] = rng.choice(_HOSTILE_NUMBERS)
            elif at == 4:
                fields[4] = rng.choice(
                    [(-1, 1.0), (-2, None), (2, None), (1, rng.choice(_HOSTILE_NUMBERS))]
                )
            else:
                fields[6] = rng.choice(_HOSTILE_TS)
        value = _avro_v1(self.schema_id, *fields)
        if fields[4][0] not in (0, 1):
            self.bad_index.add(value)
        return fields[0], value

    def next(self) -> tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]:
        """One record: key, value and Kafka headers."""
        rng = self.rng
        roll = rng.random()
        headers: list[tuple[str, bytes]] = []
        if rng.random() < 0.1:  # junk headers, and now and then a forged release marker
            headers = [("core.release", rng.randbytes(rng.randrange(40))), ("\x00", b"\xff")]
        if roll < 0.35:
            key, value = self.valid_record()
        elif roll < 0.45 and self.valid:  # an exact re-send: a counted duplicate
            key, value = rng.choice(self.valid)
        elif roll < 0.70:
            key, value = self.hostile_record()
        elif roll < 0.80:  # random bytes, sometimes behind a plausible header
            body = rng.randbytes(rng.randrange(120))
            value = rng.choice([b"", wire_frame(self.schema_id, b""), b"\x00\x00\x00\x00"]) + body
            key = rng.choice([None, b"", rng.randbytes(8)])
        elif roll < 0.90:  # a bad magic byte or an unknown schema id
            _key, good = self.valid_record()
            self.valid.pop()
            if rng.random() < 0.5:
                value = bytes([rng.randrange(1, 256)]) + good[1:]
            else:
                value = wire_frame(rng.randrange(10_000, 2**32), good[5:])
            key = b"k"
        else:
            key, value = None, None  # a tombstone
        return key, value, headers


def test_fuzzed_records_are_each_landed_rejected_with_a_code_or_counted_duplicate(
    big_settings: Settings,
) -> None:
    schema_id = _v1_id(big_settings)
    rng = random.Random(FUZZ_SEED)
    now_us = int(datetime.now(UTC).timestamp() * 1_000_000)
    fuzz = _Fuzz(rng, schema_id, now_us)
    sent = _Sent(big_settings)
    truncated: set[bytes] = set()
    _key, frame = fuzz.valid_record()
    fuzz.valid.pop()
    for cut in range(len(frame)):  # a valid frame cut at every length
        truncated.add(frame[:cut])
        sent.send(b"trunc", frame[:cut])
    for _ in range(FUZZ_COUNT):
        key, value, headers = fuzz.next()
        sent.send(key, value, headers=headers)
    for size in (1_100_000, 1_600_000):  # oversized among the rest
        sent.send(b"big", rng.randbytes(size))
    sent.send(
        None,
        _avro_v1(schema_id, b"tenant-00", b"s" * 1_200_000, b"t", 0.5, (0, None), b"a", now_us),
    )
    sent.flush()

    proc = igflow(big_settings, "run")
    _out, err = finish(proc)
    assert "Traceback" not in err

    landed: dict[tuple[int, int], dict[str, Any]] = {}
    for row in lake_rows(big_settings):
        source = (row["kafka_partition"], row["kafka_offset"])
        assert source not in landed, f"{source} landed twice"
        landed[source] = row
    quarantine = _quarantine_by_source(big_settings)
    dlq = _dlq_by_source(big_settings)
    codes = {c.value for c in ReasonCode}
    assert not set(landed) & set(quarantine), "a record both landed and rejected"
    assert {r["reason"] for r in quarantine.values()} <= codes
    # Every reject that is not a held drift batch is in the DLQ too, with the same code.
    rejected = {s for s, r in quarantine.items() if r["stage"] != "drift"}
    assert set(dlq) == rejected
    for source in rejected:
        reason = dict(dlq[source].headers())["igflow.reason"].decode()
        assert reason == quarantine[source]["reason"]
    # What neither landed nor was rejected must be a duplicate of what landed.
    decoder = SignalDecoder(DictSchemas({schema_id: SIGNAL_V1.text}), SIGNAL_V2.parsed)
    keys = {(r["tenant_id"], r["source"], r["signal_id"], r["ts"]) for r in landed.values()}
    duplicates = set(sent.records) - set(landed) - set(quarantine)
    for source in duplicates:
        key, value = sent.records[source]
        decoded = decoder.decode(RawRecord("t", source[0], source[1], key, value))
        assert isinstance(decoded, Decoded), source
        assert decoded.signal.key in keys, f"{source} is neither landed, rejected nor a duplicate"
    # Hostile input never lands: truncations, random bytes and spoiled records are rejected.
    for source, (_key, value) in sent.records.items():
        if value in truncated:
            assert quarantine[source]["reason"] in {"DECODE_FAILED", "EMPTY_PAYLOAD"}
        if value is None or len(value) > _MiB:
            assert source in quarantine
        if value in fuzz.bad_index:
            assert quarantine[source]["reason"] == "DECODE_FAILED"
    for row in landed.values():
        assert "\x00" not in row["signal_id"] + row["type"] + row["source"]
        assert 0.0 <= row["value"] <= 1.0
    total = len(sent.records)
    assert len(landed) + len(quarantine) + len(duplicates) == total
    print(
        f"fuzz seed {FUZZ_SEED}: {total} records, {len(landed)} landed, "
        f"{len(quarantine)} rejected or held, {len(duplicates)} duplicates"
    )
