"""decode: every reason code, schema resolution across versions, and laws over random input."""

from __future__ import annotations

from datetime import UTC, datetime

import hypothesis.strategies as st
from hypothesis import given, settings

from igflow.reasons import ReasonCode
from igflow.records import Decoded, RawRecord, Rejected
from igflow.wire import encode, frame
from operators.decode import SignalDecoder
from tests.conftest import SIGNAL_V1, SIGNAL_V2, V1_ID, V2_ID, DictSchemas

RECORD = {
    "tenant_id": "tenant-00",
    "signal_id": "s-1",
    "type": "latency",
    "value": 0.5,
    "weight": None,
    "source": "sensor-a",
    "ts": datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=UTC),
}


def _raw(value: bytes | None, offset: int = 0) -> RawRecord:
    return RawRecord("t", 0, offset, b"k", value)


def _decoder(schemas: DictSchemas) -> SignalDecoder:
    return SignalDecoder(schemas, SIGNAL_V2.parsed)


def test_a_v1_record_decodes_with_provenance(schemas: DictSchemas) -> None:
    value = encode(V1_ID, SIGNAL_V1.parsed, RECORD)
    out = _decoder(schemas).decode(_raw(value, offset=42))
    assert isinstance(out, Decoded)
    assert out.signal.ts == RECORD["ts"]
    assert out.signal.selectors == ()  # v2's default, read from a v1 writer
    assert out.provenance.kafka_offset == 42
    assert out.provenance.schema_version == V1_ID
    assert len(out.provenance.input_hash) == 64


def test_a_v2_record_keeps_its_selectors(schemas: DictSchemas) -> None:
    value = encode(V2_ID, SIGNAL_V2.parsed, {**RECORD, "selectors": ["a", "b"]})
    out = _decoder(schemas).decode(_raw(value))
    assert isinstance(out, Decoded)
    assert out.signal.selectors == ("a", "b")


def test_writer_schemas_are_fetched_once_per_id(schemas: DictSchemas) -> None:
    decoder = _decoder(schemas)
    value = encode(V1_ID, SIGNAL_V1.parsed, RECORD)
    for offset in range(10):
        decoder.decode(_raw(value, offset))
    assert schemas.calls == 1


def _reason(schemas: DictSchemas, value: bytes | None) -> ReasonCode:
    out = _decoder(schemas).decode(_raw(value))
    assert isinstance(out, Rejected)
    assert out.record.value == value  # the original bytes travel with the reject
    return out.reason


def test_each_kind_of_bad_input_gets_its_reason(schemas: DictSchemas) -> None:
    good = encode(V1_ID, SIGNAL_V1.parsed, RECORD)
    assert _reason(schemas, None) is ReasonCode.EMPTY_PAYLOAD
    assert _reason(schemas, b"") is ReasonCode.EMPTY_PAYLOAD
    assert _reason(schemas, b"\x00\x00") is ReasonCode.DECODE_FAILED
    assert _reason(schemas, b'{"tenant_id": "json"}') is ReasonCode.DECODE_FAILED
    assert _reason(schemas, good[:-3]) is ReasonCode.DECODE_FAILED
    assert _reason(schemas, good + b"\x00") is ReasonCode.DECODE_FAILED
    assert _reason(schemas, frame(999, good[5:])) is ReasonCode.SCHEMA_UNKNOWN
    schemas.schemas[7] = (
        '{"type": "record", "name": "Other", "fields": [{"name": "x", "type": "int"}]}'
    )
    assert _reason(schemas, frame(7, b"\x02")) is ReasonCode.SCHEMA_INCOMPATIBLE


_text = st.text(min_size=1, max_size=20)


@settings(max_examples=200, deadline=None)
@given(
    tenant=_text,
    signal_id=_text,
    value=st.floats(0, 1),
    weight=st.none() | st.floats(0, 1e6),
    micros=st.integers(0, 4_102_444_800_000_000),
)
def test_decode_inverts_encode(
    tenant: str, signal_id: str, value: float, weight: float | None, micros: int
) -> None:
    ts = datetime.fromtimestamp(micros // 1_000_000, UTC).replace(microsecond=micros % 1_000_000)
    record = {
        **RECORD,
        "tenant_id": tenant,
        "signal_id": signal_id,
        "value": value,
        "weight": weight,
        "ts": ts,
    }
    out = _decoder(DictSchemas({V1_ID: SIGNAL_V1.text})).decode(
        _raw(encode(V1_ID, SIGNAL_V1.parsed, record))
    )
    assert isinstance(out, Decoded)
    s = out.signal
    assert (s.tenant_id, s.signal_id, s.value, s.weight, s.ts) == (
        tenant,
        signal_id,
        value,
        weight,
        ts,
    )


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_raise_and_always_get_a_result(value: bytes) -> None:
    out = _decoder(DictSchemas({V1_ID: SIGNAL_V1.text, V2_ID: SIGNAL_V2.text})).decode(_raw(value))
    assert isinstance(out, Decoded | Rejected)


def test_unknown_ids_are_remembered_for_a_while(schemas: DictSchemas) -> None:
    decoder = SignalDecoder(schemas, SIGNAL_V2.parsed, unknown_ttl_s=60)
    bogus = frame(999, encode(V1_ID, SIGNAL_V1.parsed, RECORD)[5:])
    for _ in range(5):
        assert isinstance(decoder.decode(_raw(bogus)), Rejected)
    assert schemas.calls == 1
    # With no memory, a schema registered in the meantime is found at once.
    eager = SignalDecoder(schemas, SIGNAL_V2.parsed, unknown_ttl_s=0)
    assert isinstance(eager.decode(_raw(bogus)), Rejected)
    schemas.schemas[999] = SIGNAL_V1.text
    assert isinstance(eager.decode(_raw(bogus)), Decoded)
