"""decode's compiled signal reader (:mod:`operators.signal_reader`): ``decode_many`` gives what
the per-record ``SignalDecoder.decode`` gives, for any record, any bytes and any batching, and the
compiled path is really taken (it is not a test of the reference against itself)."""

from __future__ import annotations

import contextlib
import gc
import io
import json
import math
import pickle
import struct
import sys
import tracemalloc
from datetime import UTC, datetime, timedelta
from typing import Any

import fastavro
import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

from core import _native
from core.records import Decoded, RawRecord, Rejected
from core.wire import HEADER_SIZE, encode, frame
from operators import signal_reader
from operators.decode import SignalDecoder, _direct_defaults, decode_batch
from operators.signal_reader import Unread, compile_reader
from tests.conftest import SIGNAL_V1, SIGNAL_V2, V1_ID, V2_ID, DictSchemas
from tests.unit.test_batch_equivalence import _CUTS, chunks

#: A writer with a field the reader lacks: resolved, so it has no compiled reader and every
#: record of it takes the reference.
EXTRA_ID = 7
#: A writer whose fields come in another order than the reader's (still read without
#: resolution: same names, same types).
REORDERED_ID = 8


def _extra_writer() -> dict[str, Any]:
    writer = json.loads(SIGNAL_V1.text)
    writer["fields"].append({"name": "note", "type": "string", "default": ""})
    return writer


def _reordered_writer() -> dict[str, Any]:
    writer = json.loads(SIGNAL_V2.text)
    writer["fields"] = writer["fields"][::-1]
    return writer


def _schemas() -> DictSchemas:
    return DictSchemas(
        {
            V1_ID: SIGNAL_V1.text,
            V2_ID: SIGNAL_V2.text,
            EXTRA_ID: json.dumps(_extra_writer()),
            REORDERED_ID: json.dumps(_reordered_writer()),
        }
    )


PARSED = {
    V1_ID: SIGNAL_V1.parsed,
    V2_ID: SIGNAL_V2.parsed,
    EXTRA_ID: fastavro.parse_schema(_extra_writer()),
    REORDERED_ID: fastavro.parse_schema(_reordered_writer()),
}

_ts = st.integers(-62_135_596_800_000_000, 253_402_300_799_999_999).map(
    lambda us: datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)
)
_doubles = st.floats(allow_nan=True, allow_infinity=True)
_records = st.fixed_dictionaries(
    {
        "tenant_id": st.text(max_size=12),
        "signal_id": st.text(max_size=300),  # a length of two varint bytes
        "type": st.text(max_size=6),
        "value": _doubles,
        "weight": st.none() | _doubles,
        "source": st.text(max_size=6),
        "ts": _ts,
        "selectors": st.lists(st.text(max_size=5), max_size=70),  # 70: a two-byte block count
        "note": st.text(max_size=4),
    }
)


def _frame(schema_id: int, record: dict[str, Any]) -> bytes:
    return encode(schema_id, PARSED[schema_id], record)


#: Ways to spoil a frame: cut it, change a byte, add bytes, re-frame it for another writer.
_damage = st.one_of(
    st.just(None),
    st.tuples(st.just("cut"), st.integers(0, 400)),
    st.tuples(st.just("byte"), st.integers(0, 400), st.integers(0, 255)),
    st.tuples(st.just("tail"), st.binary(min_size=1, max_size=3)),
    st.tuples(st.just("id"), st.sampled_from([V1_ID, V2_ID, EXTRA_ID, REORDERED_ID, 99])),
)


def _damaged(value: bytes, damage: Any) -> bytes:
    if damage is None:
        return value
    kind = damage[0]
    if kind == "cut":
        return value[: damage[1] % (len(value) + 1)]
    if kind == "byte":
        at = damage[1] % len(value)
        return value[:at] + bytes([damage[2]]) + value[at + 1 :]
    if kind == "tail":
        return value + damage[1]
    return frame(damage[1], value[HEADER_SIZE:])


def _raw(value: bytes | None, offset: int, error: str | None = None) -> RawRecord:
    return RawRecord("t", offset % 3, offset, b"k", value, 1_700_000_000_000 + offset, error)


def _reference(raws: list[RawRecord]) -> list[Decoded | Rejected]:
    decoder = SignalDecoder(_schemas(), SIGNAL_V2.parsed)
    return [decoder.decode(r) for r in raws]


def _equal(a: list[Any], b: list[Any]) -> bool:
    # NaN != NaN: compare the values' repr and everything else by value.
    def key(x: Any) -> Any:
        if isinstance(x, Decoded):
            s = x.signal
            return (repr(x), s.value if not math.isnan(s.value) else "nan")
        return (repr(x), x)

    return [key(x) for x in a] == [key(x) for x in b]


@settings(max_examples=300, deadline=None)
@given(
    items=st.lists(
        st.tuples(st.sampled_from([V1_ID, V2_ID, EXTRA_ID, REORDERED_ID]), _records, _damage),
        max_size=25,
    ),
    cuts=_CUTS,
)
def test_decode_many_equals_the_per_record_decode(items: list[Any], cuts: list[int]) -> None:
    raws = [
        _raw(_damaged(_frame(schema_id, record), damage), i)
        for i, (schema_id, record, damage) in enumerate(items)
    ]
    reference = _reference(raws)
    decoder = SignalDecoder(_schemas(), SIGNAL_V2.parsed)
    batched = [x for batch in chunks(raws, cuts) for x in decoder.decode_many(batch)]
    assert _equal(batched, reference)


@settings(max_examples=300, deadline=None)
@given(
    bodies=st.lists(st.binary(max_size=60), max_size=10),
    schema_id=st.sampled_from([V1_ID, V2_ID, REORDERED_ID]),
)
def test_arbitrary_bodies_behind_a_known_header_get_the_reference_answer(
    bodies: list[bytes], schema_id: int
) -> None:
    # The first record makes the decoder fetch the writer (and compile its reader).
    good = _frame(schema_id, {**_example(), "selectors": ["a"]})
    raws = [_raw(v, i) for i, v in enumerate([good, *(frame(schema_id, b) for b in bodies)])]
    decoder = SignalDecoder(_schemas(), SIGNAL_V2.parsed)
    assert _equal(decode_batch(decoder, raws), _reference(raws))


def test_records_the_reader_does_not_take_go_to_the_reference() -> None:
    good = _frame(V1_ID, _example())
    raws = [
        _raw(good, 0),
        _raw(good, 1, error="broker said no"),  # SOURCE_ERROR
        _raw(b"", 2),
        _raw(None, 3),
        _raw(good[:HEADER_SIZE], 4),
        _raw(b"\x01" + good[1:], 5),  # magic byte
        _raw(frame(99, good[HEADER_SIZE:]), 6),  # SCHEMA_UNKNOWN
        _raw(good + b"\x00", 7),  # trailing byte
        _raw(good[:-1], 8),  # truncated
        _raw(_frame(EXTRA_ID, _example()), 9),  # resolved: no compiled reader
    ]
    decoder = SignalDecoder(_schemas(), SIGNAL_V2.parsed)
    out = decoder.decode_many(raws)
    assert _equal(out, _reference(raws))
    assert [type(x).__name__ for x in out] == ["Decoded"] + ["Rejected"] * 8 + ["Decoded"]


class _SubRaw(RawRecord):
    __slots__ = ()


@settings(max_examples=200, deadline=None)
@given(
    items=st.lists(
        st.tuples(
            st.sampled_from([V1_ID, V2_ID, EXTRA_ID, REORDERED_ID]),
            _records,
            _damage,
            st.sampled_from(["plain", "plain", "plain", "sub", "error", "none", "short"]),
        ),
        max_size=25,
    ),
)
def test_the_c_loop_gives_what_its_python_loop_gives(items: list[Any]) -> None:
    # decode_many's loop in C (core._native.decode_run) against decode_many_python: records of
    # a RawRecord subclass (the reference reads those), flagged ones, no value, values shorter
    # than a header, headers alternating, down to the pickles.
    raws: list[RawRecord] = []
    for i, (schema_id, record, damage, kind) in enumerate(items):
        value = _damaged(_frame(schema_id, record), damage)
        if kind == "sub":
            raws.append(_SubRaw(*(getattr(_raw(value, i), f) for f in RawRecord.__slots__)))
        else:
            raws.append(
                _raw(
                    None if kind == "none" else value[:3] if kind == "short" else value,
                    i,
                    "broker error" if kind == "error" else None,
                )
            )
    native, python = (
        SignalDecoder(_schemas(), SIGNAL_V2.parsed),
        SignalDecoder(_schemas(), SIGNAL_V2.parsed),
    )
    for _ in range(2):  # (the first pass fetches the writers and compiles their readers)
        got, expected = native.decode_many(raws), python.decode_many_python(raws)
        assert _equal(got, expected)
        assert [pickle.dumps(x) for x in got] == [pickle.dumps(x) for x in expected]


def test_the_c_loop_calls_python_readers_and_passes_their_other_errors_on() -> None:
    decoder = SignalDecoder(_schemas(), SIGNAL_V2.parsed)
    raws = [_raw(_frame(V1_ID, _example()), n) for n in range(4)]
    reference = decoder.decode_many(raws)  # (compiles the writer's reader)
    header = frame(V1_ID, b"")
    native = decoder._readers[header]
    calls: list[int] = []

    def reader(raw: RawRecord, value: bytes) -> Decoded:
        calls.append(raw.offset)
        if raw.offset == 1:
            raise Unread("a body it does not take")  # the reference then decodes it
        return native(raw, value)

    decoder._readers[header] = reader
    got = decoder.decode_many(raws)
    assert calls == [0, 1, 2, 3] and _equal(got, reference)
    counts = [sys.getrefcount(r) for r in raws]
    for _ in range(20):
        decoder.decode_many(raws)
    assert [sys.getrefcount(r) for r in raws] == counts

    def broken(raw: RawRecord, value: bytes) -> Decoded:
        raise RuntimeError("not a reading error")

    decoder._readers[header] = broken
    with pytest.raises(RuntimeError, match="not a reading error"):
        decoder.decode_many(raws)


def _example() -> dict[str, Any]:
    return {
        "tenant_id": "tenant-00",
        "signal_id": "s-1",
        "type": "latency",
        "value": 0.5,
        "weight": 2.0,
        "source": "sensor-a",
        "ts": datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=UTC),
        "selectors": ["x", "y"],
        "note": "n",
    }


def test_the_compiled_path_is_taken_for_readers_without_resolution(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    decoder = SignalDecoder(_schemas(), SIGNAL_V2.parsed)
    raws = [_raw(_frame(i, _example()), n) for n, i in enumerate([V1_ID, V2_ID, REORDERED_ID])]
    first = decoder.decode_many(raws)  # fetches the writers through the reference
    # Keyed by the frame's header, the magic byte and the schema id.
    assert sorted(decoder._readers) == [frame(i, b"") for i in (V1_ID, V2_ID, REORDERED_ID)]
    # Now every record must come from a compiled reader: the reference is not called.
    calls: list[RawRecord] = []
    reference = decoder.decode
    monkeypatch.setattr(decoder, "decode", lambda raw: calls.append(raw) or reference(raw))
    again = decoder.decode_many(raws)
    assert calls == [] and _equal(again, first)
    # Built slot by slot in the compiled reader: the very records the reference builds, down
    # to their pickles (recovery snapshots, the hot path's golden pickles).
    assert [pickle.dumps(x) for x in again] == [pickle.dumps(x) for x in _reference(raws)]
    assert [hash(x.signal) for x in again] == [hash(x.signal) for x in _reference(raws)]
    selectors = [x.signal.selectors for x in again if isinstance(x, Decoded)]
    assert selectors == [(), ("x", "y"), ("x", "y")]
    extra = _raw(_frame(EXTRA_ID, _example()), 9)
    decoder.decode_many([extra])
    assert calls == [extra] and frame(EXTRA_ID, b"") not in decoder._readers


def test_unusual_but_valid_encodings_fall_back() -> None:
    fields = SIGNAL_V1.parsed["fields"]
    read = compile_reader(fields, (("selectors", []),), V1_ID)
    assert read is not None
    value = _frame(V1_ID, _example())
    assert read(_raw(value, 0), value).signal.signal_id == "s-1"
    # A union index written in two bytes (0x82 0x00 is 1, not canonical): valid Avro that the
    # reader leaves to the reference.
    at = value.index(b"\x02" + struct.pack("<d", 2.0))
    padded = value[:at] + b"\x82\x00" + value[at + 1 :]
    with pytest.raises(Unread):
        read(_raw(padded, 1), padded)
    decoder = SignalDecoder(_schemas(), SIGNAL_V2.parsed)
    out = decoder.decode_many([_raw(value, 0), _raw(padded, 1)])
    assert _equal(out, _reference([_raw(value, 0), _raw(padded, 1)]))
    # Ten-byte varints are never read here (fastavro's 64-bit arithmetic decides them).
    with pytest.raises(Unread):
        signal_reader._varint(b"\xff" * 9 + b"\x01", 0)
    assert signal_reader._varint(b"\xff" * 8 + b"\x7f", 0) == (-(2**62), 9)


def test_types_it_does_not_read_get_no_reader() -> None:
    assert compile_reader([{"name": "tenant_id", "type": "int"}], (), V1_ID) is None
    # A signal field that neither the writer nor a default gives.
    assert compile_reader([{"name": "tenant_id", "type": "string"}], (), V1_ID) is None


def _both(schema_id: int) -> tuple[Any, Any]:
    """The C reader and its Python reference, compiled for writer ``schema_id``."""
    parsed = PARSED[schema_id]
    direct = _direct_defaults(parsed, SIGNAL_V2.parsed) if schema_id != V2_ID else ()
    assert direct is not None
    native = compile_reader(parsed["fields"], direct, schema_id)
    python = compile_reader(parsed["fields"], direct, schema_id, native=False)
    assert isinstance(native, _native.Reader)
    assert python is not None and not isinstance(python, _native.Reader)
    return native, python


def _outcome(read: Any, raw: RawRecord, value: bytes) -> Any:
    """What ``read`` gives: the record's pickle, repr and NaN-safe value, or that it refused."""
    try:
        x = read(raw, value)
    except signal_reader.READ_ERRORS:
        return "refused"
    # NaN hashes by identity (Python 3.10+): no value nor hash to compare for one.
    nans = [v for v in (x.signal.value, x.signal.weight) if isinstance(v, float) and v != v]
    plain = None if nans else (x.signal.value, hash(x.signal))
    return (_values_pickle(x), repr(x), plain, x.horizon)


def _values_pickle(x: Any) -> bytes:
    """``x``'s pickle without the memo (``Pickler.fast``): every value written where it occurs,
    so two records whose equal strings are one object in one of them (the C reader's shared
    tenant, type and source) and two in the other pickle alike."""
    out = io.BytesIO()
    pickler = pickle.Pickler(out)
    pickler.fast = True
    pickler.dump(x)
    return out.getvalue()


@settings(max_examples=400, deadline=None)
@given(
    schema_id=st.sampled_from([V1_ID, V2_ID, REORDERED_ID]),
    record=_records,
    damage=_damage,
    body=st.none() | st.binary(max_size=80),
)
def test_the_c_reader_gives_what_the_python_reader_gives(
    schema_id: int, record: dict[str, Any], damage: Any, body: bytes | None
) -> None:
    """Accepts exactly what its Python reference accepts, into the same records (down to their
    pickles), for valid frames, spoilt ones and arbitrary bodies."""
    native, python = _both(schema_id)
    value = _damaged(_frame(schema_id, record), damage)
    if body is not None:
        value = frame(schema_id, body)
    raw = _raw(value, 5)
    assert _outcome(native, raw, value) == _outcome(python, raw, value)


def test_the_c_reader_refuses_what_is_not_bytes_and_keeps_nothing() -> None:
    native, _python = _both(V2_ID)
    value = _frame(V2_ID, _example())
    with pytest.raises(Unread):
        native(_raw(value, 0), bytearray(value))
    with pytest.raises(TypeError):
        native(_raw(value, 0))
    spoilt = [value[:n] for n in range(HEADER_SIZE, len(value))] + [value + b"\x00"]
    # Nothing leaks, neither from a record read nor from one refused half-way (each field
    # already read must be released): the traced memory does not grow with the calls.
    tracemalloc.start()
    try:
        for rounds in (200, 2000):
            gc.collect()
            before = tracemalloc.get_traced_memory()[0]
            for i in range(rounds):
                native(_raw(value, i), value)
                for bad in spoilt:
                    with contextlib.suppress(Unread):
                        native(_raw(bad, i), bad)
            gc.collect()
            grown = tracemalloc.get_traced_memory()[0] - before
        assert grown < 64_000, grown
    finally:
        tracemalloc.stop()
    # Nor a reference to what it reads from (that would keep every fetch alive).
    raw = RawRecord("t", 1, 10**9, b"k", value, 10**12, None)
    held = [raw, raw.topic, raw.offset, raw.timestamp_ms, value]
    counts = [sys.getrefcount(x) for x in held]
    for _ in range(50):
        native(raw, value)
        with contextlib.suppress(Unread):
            native(raw, spoilt[-1])
    assert [sys.getrefcount(x) for x in held] == counts


def test_the_c_reader_shares_the_few_repeated_strings() -> None:
    """Tenant, type and source: one str object for every record with the same ASCII bytes (no
    allocation per record, nor its freeing at the end of the flow); the signal id, a non-ASCII
    value and a value longer than the table holds are each record's own, and every value is
    what the Python reader reads."""
    native, python = _both(V2_ID)
    long_type = "t" * 65
    records = [
        _example(),
        {**_example(), "ts": datetime(1, 1, 1, tzinfo=UTC)},  # the same signal id
        {**_example(), "signal_id": "s-3", "source": "sensör", "type": long_type},
        {**_example(), "signal_id": "s-4", "source": "sensör", "type": long_type},
    ]
    values = [_frame(V2_ID, r) for r in records]
    got = [native(_raw(v, n), v) for n, v in enumerate(values)]
    assert got == [python(_raw(v, n), v) for n, v in enumerate(values)]
    first, second, third, fourth = (x.signal for x in got)
    assert first.tenant_id is second.tenant_id is third.tenant_id
    assert first.type is second.type and first.source is second.source
    assert first.signal_id == second.signal_id == "s-1" and first.signal_id is not second.signal_id
    assert third.source == fourth.source == "sensör" and third.source is not fourth.source
    assert third.type == fourth.type == long_type and third.type is not fourth.type
    assert second.ts == datetime(1, 1, 1, tzinfo=UTC) and second.ts.tzinfo is UTC
