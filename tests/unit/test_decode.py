"""decode: every reason code, schema resolution across versions, and laws over random input."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import fastavro
import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

from core.reasons import ReasonCode
from core.records import Decoded, RawRecord, Rejected
from core.wire import encode, frame
from operators.avro_indexes import index_guard
from operators.decode import SignalDecoder
from tests.conftest import SIGNAL_V1, SIGNAL_V2, V1_ID, V2_ID, DictSchemas

REPO = Path(__file__).resolve().parents[2]

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


#: The frame from issue 12: a v1 record whose ``weight`` union index is -1 (byte ``0x01``).
MINUS_ONE_FRAME = bytes.fromhex(
    "00000000011274656e616e742d303826667a2d313435303038352d62326330313730310e6c6174656e63"
    "797867dc0cae4cb63f01000000000000f03f1073656e736f722d61eaebade2baf0b006"
)


def _with_weight_index(index_byte: bytes) -> bytes:
    """A valid v1 frame with a weight of 1.0 whose union branch index byte is replaced."""
    good = encode(V1_ID, SIGNAL_V1.parsed, {**RECORD, "weight": 1.0})
    prefix = encode(V1_ID, SIGNAL_V1.parsed, {**RECORD, "weight": None}).split(b"sensor-a")[0]
    # The null branch encodes as the index alone (0x00): everything before it is the prefix.
    at = len(prefix) - 2  # the index byte, then the source's length byte
    assert good[at] == 0x02  # branch 1 (double), zig-zag
    return good[:at] + index_byte + good[at + 1 :]


def test_a_negative_union_branch_index_is_decode_failed(schemas: DictSchemas) -> None:
    assert _reason(schemas, MINUS_ONE_FRAME) is ReasonCode.DECODE_FAILED
    assert _reason(schemas, _with_weight_index(b"\x01")) is ReasonCode.DECODE_FAILED  # -1
    # -2 selects "null" in fastavro, and the double's 8 bytes then trail the body or shift it.
    assert _reason(schemas, _with_weight_index(b"\x03")) is ReasonCode.DECODE_FAILED
    assert _reason(schemas, _with_weight_index(b"\x04")) is ReasonCode.DECODE_FAILED  # 2
    assert isinstance(_decoder(schemas).decode(_raw(_with_weight_index(b"\x02"))), Decoded)


def test_negative_indexes_inside_arrays_and_enums_are_found(schemas: DictSchemas) -> None:
    # A writer with an extra field the reader lacks (schema drift): an array of a union of an
    # enum and a string. fastavro reads -1 there too; the guard walks into it.
    writer = json.loads(SIGNAL_V1.text)
    writer["fields"].append(
        {
            "name": "extra",
            "type": {
                "type": "array",
                "items": ["null", {"type": "enum", "name": "Level", "symbols": ["LO", "HI"]}],
            },
            "default": [],
        }
    )
    schemas.schemas[9] = json.dumps(writer)
    parsed = fastavro.parse_schema(writer)
    good = encode(9, parsed, {**RECORD, "extra": [None, "HI", "LO"]})
    out = _decoder(schemas).decode(_raw(good))
    assert isinstance(out, Decoded) and out.unknown_fields == ("extra",)
    # The array: count 3 (0x06), then branch 0 (0x00); branch 1 + HI (0x02 0x02); branch 1 + LO.
    assert good.endswith(b"\x06\x00\x02\x02\x02\x00\x00")
    bad_branch = good[:-7] + b"\x06\x00\x01\x02\x02\x00\x00"
    bad_symbol = good[:-7] + b"\x06\x00\x02\x01\x02\x00\x00"
    assert _reason(schemas, bad_branch) is ReasonCode.DECODE_FAILED
    assert _reason(schemas, bad_symbol) is ReasonCode.DECODE_FAILED
    # The same array written as one block with its byte size (negative count) is valid Avro.
    block = b"\x02\x02\x02\x00\x02\x00"
    sized = good[:-7] + b"\x05" + bytes([len(block) * 2]) + block + b"\x00"
    assert isinstance(_decoder(schemas).decode(_raw(sized)), Decoded)


def _ts_frame(micros: int) -> bytes:
    """A v1 frame whose ``ts`` long is ``micros`` (written without the logical type)."""
    plain = json.loads(SIGNAL_V1.text)
    for field in plain["fields"]:
        if field["name"] == "ts":
            field["type"] = "long"
    return encode(V1_ID, fastavro.parse_schema(plain), {**RECORD, "ts": micros})


def test_timestamps_no_datetime_can_hold_are_ts_out_of_range(schemas: DictSchemas) -> None:
    for micros in (2**63 - 1, -(2**63), 253_402_300_800_000_000, -62_135_596_800_000_001):
        assert _reason(schemas, _ts_frame(micros)) is ReasonCode.TS_OUT_OF_RANGE, micros
    for micros in (253_402_300_799_999_999, -62_135_596_800_000_000):
        out = _decoder(schemas).decode(_raw(_ts_frame(micros)))
        assert isinstance(out, Decoded), micros
    # Broken Avro is still DECODE_FAILED, also when its ts is out of range.
    assert _reason(schemas, _ts_frame(2**63 - 1)[:-2]) is ReasonCode.DECODE_FAILED
    assert _reason(schemas, _ts_frame(2**63 - 1) + b"\x00") is ReasonCode.DECODE_FAILED


@settings(max_examples=300, deadline=None)
@given(
    weight=st.none() | st.floats(0, 1e6),
    selectors=st.lists(st.text(max_size=8), max_size=5),
    cut=st.integers(0, 200),
)
def test_the_index_guard_accepts_every_valid_encoding(
    weight: float | None, selectors: list[str], cut: int
) -> None:
    record = {**RECORD, "weight": weight, "selectors": selectors}
    value = encode(V2_ID, SIGNAL_V2.parsed, record)
    guard = index_guard(SIGNAL_V2.parsed)
    assert guard is not None and guard(value, 5)
    # Cut anywhere: the guard answers (never raises); the decoder rejects the cut frame.
    guard(value[: 5 + cut], 5)
    if 5 + cut < len(value):
        out = _decoder(DictSchemas({V2_ID: SIGNAL_V2.text})).decode(_raw(value[: 5 + cut]))
        assert isinstance(out, Rejected)


def _zigzag(n: int) -> bytes:
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_EMPTY = {"type": "record", "name": "Nothing", "fields": []}
#: Arrays whose items take no bytes, and the path the refusal names.
_ZERO_WIDTH = [
    ("null", "junk"),
    (_EMPTY, "junk"),
    ({"type": "fixed", "name": "Zero", "size": 0}, "junk"),
    ({"type": "record", "name": "Nulls", "fields": [{"name": "a", "type": "null"}]}, "junk"),
    ({"type": "array", "items": "null"}, "junk[]"),
]

#: Decodes the bombs in a child process: a decoder that loops does not hang the test run (the
#: loop is fastavro's C code, which no signal or thread interrupts).
_BOMBS = """
import json, sys
from core.records import RawRecord
from core.wire import frame
from operators.decode import SignalDecoder
from tests.conftest import SIGNAL_V2, DictSchemas
cases, body = json.loads(sys.argv[1]), bytes.fromhex(sys.argv[2])
out = []
for i, (items, bomb, honest) in enumerate(cases):
    writer = json.loads(SIGNAL_V2.text)
    junk = {"type": "array", "items": items}
    writer["fields"].append({"name": "junk", "type": junk, "default": []})
    decoder = SignalDecoder(DictSchemas({20 + i: json.dumps(writer)}), SIGNAL_V2.parsed)
    for value in (bytes.fromhex(bomb), bytes.fromhex(honest)):
        raw = RawRecord("t", 0, 0, b"k", frame(20 + i, body + value))
        for got in (decoder.decode(raw), decoder.decode_many([raw])[0]):
            decoded = not hasattr(got, "reason")
            out.append(["DECODED", ""] if decoded else [got.reason.value, got.detail])
print(json.dumps(out))
"""


def test_a_writer_with_an_array_of_items_that_take_no_bytes_is_refused_unread() -> None:
    """Regression: a 20-byte record whose writer schema adds an array of nulls (a compatible
    change: the field has a default) claimed 2^62 items, and fastavro looped that many times
    reading nothing (a poison pill: the flow froze). Every record of such a writer is refused
    before it is read, whatever its count, with the array named."""
    body = encode(V2_ID, SIGNAL_V2.parsed, RECORD)[5:]
    cases = []
    for items, path in _ZERO_WIDTH:
        nested = path.endswith("[]")
        inner = _zigzag(1) + _zigzag(2**62) + _zigzag(0) if nested else b""
        bomb = _zigzag(1) + inner + _zigzag(0) if nested else _zigzag(2**62)
        cases.append((items, bomb.hex(), _zigzag(0).hex()))
    done = subprocess.run(
        [sys.executable, "-c", _BOMBS, json.dumps(cases), body.hex()],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,  # TimeoutExpired: a decoder froze
        check=True,
    )
    results = json.loads(done.stdout)
    assert len(results) == 4 * len(_ZERO_WIDTH)
    for at, (reason, detail) in enumerate(results):
        path = _ZERO_WIDTH[at // 4][1]
        assert reason == "SCHEMA_INCOMPATIBLE"
        assert f"array {path} of items that take no bytes" in detail


def test_arrays_of_items_that_take_bytes_still_decode(schemas: DictSchemas) -> None:
    """Only zero-width items are refused: an array of unions decodes; a lying count there ends
    at the record's last byte."""
    writer = json.loads(SIGNAL_V2.text)
    writer["fields"].append(
        {"name": "extra", "type": {"type": "array", "items": ["null", "string"]}, "default": []}
    )
    schemas.schemas[12] = json.dumps(writer)
    parsed = fastavro.parse_schema(writer)
    good = encode(12, parsed, {**RECORD, "selectors": [], "extra": [None, "x"]})
    out = _decoder(schemas).decode(_raw(good))
    assert isinstance(out, Decoded) and out.unknown_fields == ("extra",)
    assert good.endswith(b"\x04\x00\x02\x02x\x00")  # count 2, null, "x", end
    lying = good[:-6] + _zigzag(2**62) + b"\x00\x00"
    assert _reason(schemas, lying) is ReasonCode.DECODE_FAILED


_NESTED = """
import json, sys
from core.records import RawRecord
from core.wire import frame
from operators.decode import SignalDecoder
from tests.conftest import SIGNAL_V2, DictSchemas
writer, body = json.loads(sys.argv[1]), bytes.fromhex(sys.argv[2])
decoder = SignalDecoder(DictSchemas({30: json.dumps(writer)}), SIGNAL_V2.parsed)
out = []
for depth in (0, 1_000, 200_000):
    # `chain` a union of null and a Link: branch 1 (0x02) per level, then null (0x00).
    raw = RawRecord("t", 0, depth, b"k", frame(30, body + b"\\x02" * depth + b"\\x00"))
    for got in (decoder.decode(raw), decoder.decode_many([raw])[0]):
        out.append([got.reason.value, got.detail] if hasattr(got, "reason") else ["DECODED", ""])
print(json.dumps(out))
"""


@pytest.mark.parametrize(
    "chain",
    [
        [
            "null",
            {
                "type": "record",
                "name": "Link",
                "fields": [{"name": "next", "type": ["null", "Link"]}],
            },
        ],
        [
            "null",
            {
                "type": "record",
                "name": "Ping",
                "namespace": "x.y",
                "fields": [
                    {
                        "name": "pong",
                        "type": [
                            "null",
                            {
                                "type": "record",
                                "name": "Pong",
                                "fields": [{"name": "ping", "type": ["null", "Ping"]}],
                            },
                        ],
                    }
                ],
            },
        ],
    ],
)
def test_a_writer_with_a_recursive_type_is_refused_unread(chain: list[object]) -> None:
    """Regression: a compatible writer with a recursive type (a linked list, or two types that
    hold each other) and a 200 KB record nested 200,000 levels deep: fastavro recursed past the
    C stack and the process died (SIGSEGV) at that record, again after every restart; 1,000
    levels raised a RecursionError the decoder did not catch. Every record of such a writer is
    refused unread, the type named."""
    writer = json.loads(SIGNAL_V2.text)
    writer["fields"].append({"name": "chain", "type": chain, "default": None})
    body = encode(V2_ID, SIGNAL_V2.parsed, RECORD)[5:]
    done = subprocess.run(
        [sys.executable, "-c", _NESTED, json.dumps(writer), body.hex()],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]  # -11: the stack overflowed
    results = json.loads(done.stdout)
    assert len(results) == 6
    for reason, detail in results:
        assert reason == "SCHEMA_INCOMPATIBLE"
        assert "recursive type" in detail
        assert "Link" in detail or "x.y.Ping, x.y.Pong" in detail


_WALK = """
import fastavro, sys
from operators.avro_indexes import index_guard
fields = [
    {"name": "a", "type": {"type": "array", "items": "string"}},
    {"name": "b", "type": ["null", "string"]},
]
guard = index_guard(fastavro.parse_schema({"type": "record", "name": "R", "fields": fields}))
print([guard(bytes.fromhex(v), 0) for v in sys.argv[1:]])
"""


def test_the_index_guard_refuses_a_negative_length_instead_of_looping() -> None:
    """Regression: the guard's walk of an array of strings over random bytes (a count of 2^60,
    then lengths of -1) stayed in place; fastavro refuses negative lengths before a guard runs
    in the decoder, but the walk must end on any bytes (a hypothesis example hung 6 minutes)."""
    values = [
        _zigzag(2**60) + _zigzag(-1) * 4,  # the count, then a length that moves back a byte
        _zigzag(1) + _zigzag(-1) + _zigzag(0) + b"\x00",
        _zigzag(1) + _zigzag(1) + b"x" + _zigzag(0) + b"\x00",  # valid: ["x"], null
    ]
    done = subprocess.run(
        [sys.executable, "-c", _WALK, *(v.hex() for v in values)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,  # TimeoutExpired: the walk looped
        check=True,
    )
    assert done.stdout.strip() == "[False, False, True]"


_DEEP = """
import json, sys
from core.records import RawRecord
from core.wire import frame
from operators.decode import SignalDecoder
from tests.conftest import SIGNAL_V2, DictSchemas
body = bytes.fromhex(sys.argv[1])
v2 = json.loads(SIGNAL_V2.text)
schemas, out = {}, []
for n, depth in enumerate((10, 300, 1_000, 3_000)):
    # Records X(depth-1) > ... > X0 {s: string}, written as text (json.dumps recurses too).
    nested = '{"type": "record", "name": "X0", "fields": [{"name": "s", "type": "string"}]}'
    for i in range(1, depth):
        field = f'{{"name": "f", "type": {nested}}}'
        nested = f'{{"type": "record", "name": "X{i}", "fields": [{field}]}}'
    fields = json.dumps(v2["fields"])[:-1] + f', {{"name": "deep", "type": {nested}}}]'
    head = json.dumps({k: v for k, v in v2.items() if k != "fields"})[:-1]
    schemas[50 + n] = head + f', "fields": {fields}}}'
schemas[60] = '{"a":' * 100_000 + "1" + "}" * 100_000
decoder = SignalDecoder(DictSchemas(schemas), SIGNAL_V2.parsed)
for schema_id in sorted(schemas):
    raw = RawRecord("t", 0, 0, b"k", frame(schema_id, body + b"\\x02x"))
    got = decoder.decode(raw)
    out.append([got.reason.value, got.detail] if hasattr(got, "reason") else ["DECODED", ""])
print(json.dumps(out))
"""


def test_writers_nested_past_the_recursion_limit_are_rejects_not_crashes() -> None:
    """Regression: a writer schema whose JSON nests deeper than ``json.loads`` can follow (1,000
    records, each three JSON levels; or any JSON 100,000 deep) raised a RecursionError out of
    the decoder, which stopped the flow at its first record, again after every restart. Its
    records are now refused (``does not parse``); 300 records deep still decodes (fastavro
    reads that deep: the JSON limit comes first)."""
    body = encode(V2_ID, SIGNAL_V2.parsed, RECORD)[5:]
    done = subprocess.run(
        [sys.executable, "-c", _DEEP, body.hex()],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(done.stdout)
    assert [reason for reason, _detail in results] == [
        "DECODED",  # 10 records deep
        "DECODED",  # 300
        "SCHEMA_INCOMPATIBLE",  # 1,000
        "SCHEMA_INCOMPATIBLE",  # 3,000
        "SCHEMA_INCOMPATIBLE",  # not a schema: JSON 100,000 deep
    ]
    for schema_id, (_reason, detail) in zip((52, 53, 60), results[2:], strict=True):
        assert detail.startswith(f"schema id {schema_id} does not parse: RecursionError")
