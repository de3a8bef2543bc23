"""The C exchange of runs between processes (``core/_native.c`` exchange_pack/exchange_unpack,
``core.records.Records.__reduce__``) against its reference, the columns
(``core.records._reduce_columns``): any run of records of any class holding any values loads
as the same records, field by field (``compare=False`` ones too) and type by type, by either
path; the C path takes exactly the values it claims to (the others pickle as columns); bad
bytes are refused, never read past; nothing leaks."""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import math
import pickle
import struct
import sys
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

import core.records as records
from core import _native
from core.reasons import ReasonCode
from core.records import Decoded, Provenance, RawRecord, Records, Signal
from operators.batching import RunLogic
from tests.leaks import traced_growth

CLASSES = list(records._FIELDS)
MAX_DEPTH = 8  # EX_MAX_DEPTH
PLUS_TWO = timezone(timedelta(hours=2))


class _Text(str):
    pass


class _Stamp(datetime):
    pass


class _Real(float):
    pass


class _Count(int):
    pass


class _Blob(bytes):
    pass


class _Pair(tuple[int, ...]):
    pass


def _takes(value: Any, depth: int) -> bool:
    """Whether the C exchange takes ``value`` at ``depth`` (a run's record's fields are at 1)."""
    kind = type(value)
    if value is None or kind in (float, bool, bytes):
        return True
    if kind is str:
        try:
            value.encode()
        except UnicodeEncodeError:
            return False
        return True
    if kind is int:
        return -(2**63) <= value < 2**63
    if kind is datetime:
        return value.tzinfo is None or value.tzinfo is UTC
    if kind is tuple:
        return depth < MAX_DEPTH and all(_takes(x, depth + 1) for x in value)
    if kind in records._FIELDS:
        return depth < MAX_DEPTH and _takes_fields(value, depth + 1)
    return False


def _takes_fields(record: Any, depth: int) -> bool:
    return all(_takes(getattr(record, f.name), depth) for f in dataclasses.fields(record))


def _key(value: Any) -> Any:
    """``value`` down to every field and type: a float by its bits (NaN, -0.0), a datetime
    with its fold and whether its zone is ``UTC`` itself."""
    kind = type(value)
    if isinstance(value, float):
        return (kind, struct.pack("<d", value))
    if isinstance(value, datetime):
        return (kind, repr(value), value.fold, value.tzinfo is UTC)
    if kind is tuple:
        return (kind, [_key(x) for x in value])
    if dataclasses.is_dataclass(value):
        return (kind, [_key(getattr(value, f.name)) for f in dataclasses.fields(value)])
    return (kind, value)


def _record(cls: type[Any], values: list[Any]) -> Any:
    """A record of ``cls`` holding ``values`` over and over (types are not checked)."""
    obj = object.__new__(cls)
    for i, f in enumerate(dataclasses.fields(cls)):
        object.__setattr__(obj, f.name, values[i % len(values)])
    return obj


_WORDS = st.sampled_from(["", "t0", "t1", "é", "日本", "a\x00b"])  # equal values: back refs
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.integers(),  # beyond 64 bits: the columns' job
    st.floats(),  # NaN, infinities, -0.0
    st.sampled_from([math.nan, -0.0, math.inf, -math.inf, 5e-324]),
    _WORDS,
    st.text(max_size=6),
    st.sampled_from(["\ud800", "a\udfff"]),  # lone surrogates: the columns' job
    _WORDS.map(_Text),
    st.floats().map(_Real),
    st.integers(-5, 5).map(_Count),
    st.binary(max_size=3).map(_Blob),
    st.lists(st.integers(0, 3), max_size=2).map(lambda x: _Pair(x)),
    st.binary(max_size=8),
    st.datetimes(timezones=st.sampled_from([None, UTC, PLUS_TWO])),
    st.datetimes().map(lambda d: d.replace(tzinfo=UTC, fold=1)),
    st.datetimes().map(lambda d: _Stamp(2026, 1, 1, tzinfo=UTC) if d.day % 2 else d),
    st.sampled_from([Decimal("1.25"), ReasonCode.SCHEMA_DRIFT, bytearray(b"x"), [1]]),
)


def _values(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(inner, max_size=3).map(tuple),
        st.builds(_record, st.sampled_from(CLASSES), st.lists(inner, min_size=1, max_size=4)),
    )


_anything = st.recursive(_scalars, _values, max_leaves=8)
_records = st.builds(_record, st.sampled_from(CLASSES), st.lists(_anything, min_size=1, max_size=8))


def _round_trips(run: list[Any]) -> None:
    packed = Records(run)
    want = [_key(r) for r in run]
    back = pickle.loads(pickle.dumps(packed))
    assert type(back) is Records
    assert [_key(r) for r in back] == want
    fn, args = records._reduce_columns(packed)
    columns = pickle.loads(pickle.dumps(fn(*args)))
    assert type(columns) is Records
    assert [_key(r) for r in columns] == want
    taken = bool(run) and all(_takes_fields(r, 1) for r in run)
    assert (packed.__reduce__()[0] is records._exchange_unpack) is taken


@given(st.lists(_records, max_size=8))
@settings(max_examples=300, deadline=None)
def test_any_run_loads_as_the_same_records_by_either_path(run: list[Any]) -> None:
    _round_trips(run)


@given(st.lists(st.builds(_record, st.just(Decoded), st.lists(_anything, min_size=1)), max_size=6))
@settings(max_examples=200, deadline=None)
def test_a_run_of_one_class_loads_as_the_same_records(run: list[Any]) -> None:
    _round_trips(run)


def test_every_record_class_goes_through_the_c_path() -> None:
    """Each class with plain values (``Decimal`` and enum fields aside: the columns')."""
    for cls in CLASSES:
        names = [f.name for f in dataclasses.fields(cls)]
        run = [_record(cls, [f"{name}{i}" for name in names]) for i in range(3)]
        assert Records(run).__reduce__()[0] is records._exchange_unpack, cls
        _round_trips(run)


@pytest.mark.parametrize("depth", range(1, 12))
def test_nesting_past_the_limit_goes_to_the_columns(depth: int) -> None:
    """Tuples and records nested ``depth`` deep: the C path up to its limit, columns past it."""
    value: Any = "x"
    for _ in range(depth):
        value = (value,)
    _round_trips([_record(Signal, [value]), _record(Signal, ["y"])])
    record: Any = _record(Provenance, ["x"])
    for _ in range(depth):
        record = _record(Provenance, [record, "x", "x", "x", "x"])
    _round_trips([record])
    assert (Records([record]).__reduce__()[0] is records._exchange_unpack) is (depth < MAX_DEPTH)


def _decoded(i: int, tenant: str) -> Decoded:
    at = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=i)
    raw = RawRecord("signals", 0, i, tenant.encode(), b"\x00\xff", 17, None, (("h", b"v"),))
    return Decoded(
        Signal("".join(tenant), f"s{i}", "latency", 0.5, None, "a", at, ("x",)),
        Provenance("signals", 0, i, 1, f"{i:064x}"),
        17,
        raw,
        (),
        "00-trace" if i % 2 else None,
        at if i == 2 else None,
    )


def test_equal_strings_load_as_one_object_and_the_bytes_head_with_the_fingerprint() -> None:
    run = Records([_decoded(i, "tenant-" + "x" * (i % 1 + 1)) for i in range(4)])
    assert len({id(d.signal.tenant_id) for d in run}) == 4  # equal, not the same object
    fn, (data,) = run.__reduce__()
    assert data[:8] == records._exchange_fingerprint(records._EXCHANGE_TABLE)
    back = fn(data)
    assert len({id(d.signal.tenant_id) for d in back}) == 1
    assert [_key(d) for d in back] == [_key(d) for d in run]
    assert back[2].horizon == run[2].horizon and back[1].trace == "00-trace"


def test_refuses_a_run_of_other_classes_and_bad_bytes() -> None:
    data = _native.exchange_pack(Records([_decoded(i, "t") for i in range(3)]))
    assert data is not None
    with pytest.raises(ValueError, match="record classes differ"):
        _native.exchange_unpack(b"\x00" * 8 + data[8:])
    for n in range(len(data)):  # every cut: refused, never read past the end
        with pytest.raises(ValueError):
            _native.exchange_unpack(data[:n])
    with pytest.raises(ValueError, match="malformed"):
        _native.exchange_unpack(data + b"\x00")
    loaded = 0
    for at in range(8, len(data)):  # any byte changed: loads a run or is refused, no crash
        for byte in (0, 0xFF, data[at] ^ 1):
            with contextlib.suppress(ValueError):
                run = _native.exchange_unpack(data[:at] + bytes([byte]) + data[at + 1 :])
                assert type(run) is list and len(run) == 3
                loaded += 1
    assert 0 < loaded < 3 * (len(data) - 8)


def test_a_lone_surrogate_goes_to_the_columns() -> None:
    run = [_record(Signal, ["t"]), _record(Signal, ["a\udfff"])]
    assert _native.exchange_pack(run) is None
    _round_trips(run)


def test_a_slot_never_set_or_a_foreign_item_goes_to_the_columns() -> None:
    empty = object.__new__(Provenance)
    assert _native.exchange_pack([empty]) is None
    assert _native.exchange_pack([_decoded(0, "t"), 3]) is None
    assert _native.exchange_pack([]) == records._exchange_fingerprint(records._EXCHANGE_TABLE) + (
        b"\x00" * 4
    )
    assert Records([]).__reduce__() == (Records, ([],))


def test_nothing_leaks() -> None:
    runs = [Records([_decoded(i, f"t{j}") for i in range(20)]) for j in range(5)]
    refused = Records([*runs[0], _record(Signal, [2**70] * 8)])  # refused at its last record
    datas = [_native.exchange_pack(run) for run in runs]
    cut = datas[0][: len(datas[0]) - 5]

    def rounds(n: int) -> None:
        for _ in range(n):
            for run in runs:
                pickle.loads(pickle.dumps(run))
            assert _native.exchange_pack(refused) is None
            try:
                _native.exchange_unpack(cut)
            except ValueError:
                pass
            else:
                raise AssertionError("a cut run loaded")

    rounds(50)
    grown = traced_growth(rounds, (200, 200))
    assert grown < 16_000, grown
    # Nor a reference to what a record holds.
    first = runs[0][0]
    s = first.signal
    held = [first, s, s.signal_id, s.tenant_id, s.ts, first.raw, first.raw.key, runs[0]]
    held += [first.raw.headers, first.provenance, first.provenance.input_hash]
    counts = [sys.getrefcount(x) for x in held]
    rounds(50)
    gc.collect()
    assert [sys.getrefcount(x) for x in held] == counts
    # What a load builds is owned by the run it gives: one reference each.
    back = _native.exchange_unpack(datas[1])
    assert {sys.getrefcount(back[i]) for i in range(len(back))} == {2}  # the list's + the call's
    assert {sys.getrefcount(back[i].signal) for i in range(len(back))} == {2}
    del back


class _Keep:
    """An inner logic that keeps what it is handed (as a state would)."""

    def __init__(self) -> None:
        self.kept: list[Any] = []

    def on_batch(self, values: list[Any]) -> tuple[list[Any], bool]:
        self.kept.append(values)
        return [], False


def test_a_run_never_reaches_a_state() -> None:
    """The claim the format rests on (no versioning): a step's state, so a recovery snapshot,
    never holds a :class:`Records`; :class:`RunLogic` hands its inner logic a new plain list."""
    for values in ([Records([1, 2])], [Records([1]), Records([2])]):
        inner = _Keep()
        RunLogic(inner).on_batch(values)  # type: ignore[arg-type]
        assert type(inner.kept[0]) is list
