"""The hot path's shortcuts (issue 15) give what the computations they replace give, on any input.

Each shortcut is compared with the computation it replaced, kept here as the reference: decode
without per-record schema resolution against fastavro's resolution, the guard's inline skips
against the call-per-field walk, the provenance id written directly against
``json.dumps(sort_keys=True)`` of the manifest dict, the score's 2-place rounding in integers
against rounding a ``Fraction``, records built through their slots' descriptors against the
dataclass ``__init__``. Outputs are compared as pickles, so a NaN,
a ``-0.0``, a timezone or a key order that differs fails.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import pickle
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any, cast

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

from core import records
from core.records import Decoded, PolicyTags, Provenance, RawRecord, Signal, Tagged
from core.settings import ScoreSettings
from core.wire import encode
from operators.avro_indexes import BadIndex, _Compiler, index_guard
from operators.decode import SignalDecoder
from operators.score import Status, TenantScore, _round_ratio, _score_change, round_half_even
from operators.tenancy import TenancyPolicy, manifest, provenance_id, tag
from tests.unit.hotpath_golden import SCHEMAS, V2, _parsed

_IDS = sorted(SCHEMAS)


def _decoder() -> SignalDecoder:
    return SignalDecoder(SCHEMAS.get, V2.parsed)


def _reference() -> SignalDecoder:
    """A decoder that resolves every writer but the reader itself per record (as before)."""
    decoder = _decoder()
    for schema_id in _IDS:
        decoder._writer(schema_id)
    decoder._direct = {
        i: () if decoder._writers[i] is decoder._reader else None for i in decoder._writers
    }
    return decoder


NEW, REFERENCE = _decoder(), _reference()

_text = st.text(max_size=12)
_float = st.floats(allow_nan=True, allow_infinity=True, width=64)
_record = st.fixed_dictionaries(
    {
        "tenant_id": _text,
        "signal_id": _text,
        "type": _text,
        "value": _float,
        "weight": st.none() | _float,
        "source": _text,
        "ts": st.integers(min_value=-62_135_596_800_000_000, max_value=253_402_300_799_999_999).map(
            lambda us: datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)
        ),
        "selectors": st.lists(_text, max_size=3),
        "extra": _text,
    }
)


def _encodable(schema_id: int, record: dict[str, Any]) -> bytes | None:
    rec = dict(record)
    if schema_id == 4:
        rec["value"] = str(rec["value"])
    if schema_id == 7 and rec["weight"] is None:
        rec["weight"] = 1.0
    if schema_id == 8:
        rec["ts"] = (rec["ts"] - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    try:
        return encode(schema_id, _parsed(schema_id), rec)
    except (ValueError, TypeError, OverflowError):
        return None


def test_v1_reads_without_resolution() -> None:
    """The shortcut is taken where it matters: the v1 contract read as v2."""
    decoder = _decoder()
    decoder._writer(1)
    assert decoder._direct[1] == (("selectors", []),)
    decoder._writer(3)
    assert decoder._direct[3] is None  # a field the reader lacks: resolved per record


@settings(max_examples=400, deadline=None)
@given(
    record=_record,
    schema_id=st.sampled_from(_IDS),
    cut=st.integers(min_value=0, max_value=200),
    flip=st.tuples(st.integers(min_value=0, max_value=200), st.integers(1, 255)),
    mutate=st.sampled_from(["none", "cut", "flip", "append"]),
)
def test_decode_equals_per_record_resolution(
    record: dict[str, Any],
    schema_id: int,
    cut: int,
    flip: tuple[int, int],
    mutate: str,
) -> None:
    value = _encodable(schema_id, record)
    if value is None:
        return
    if mutate == "cut":
        value = value[: max(0, len(value) - cut)]
    elif mutate == "flip" and value:
        at = 5 + flip[0] % max(1, len(value) - 5) if len(value) > 5 else 0
        value = value[:at] + bytes([value[at] ^ flip[1]]) + value[at + 1 :]
    elif mutate == "append":
        value += bytes([flip[1]]) * (1 + cut % 3)
    raw = RawRecord("t", 0, 1, b"k", value, 1)
    assert pickle.dumps(NEW.decode(raw)) == pickle.dumps(REFERENCE.decode(raw))


class _CallPerField(_Compiler):
    """The guard's record walk as it was: one call per field."""

    def _record(self, fields: list[dict[str, Any]]) -> Any:
        skips = tuple(self.skip(f["type"]) for f in fields)

        def skip(buf: bytes, pos: int) -> int:
            for one in skips:
                pos = one(buf, pos)
            return pos

        return skip


def _walks(schema: dict[str, Any]) -> tuple[Any, Any]:
    """The full record walk, new and as it was (not cut at the last index, to cover every
    field kind)."""
    named = dict(schema.get("__named_schemas") or {})
    return _Compiler(named).skip(schema), _CallPerField(named).skip(schema)


_WALKS = {i: _walks(_parsed(i)) for i in _IDS}


def _outcome(walk: Any, buf: bytes) -> object:
    try:
        return walk(buf, 5)
    except (BadIndex, IndexError) as exc:
        return type(exc)


@settings(max_examples=400, deadline=None)
@given(
    record=_record,
    schema_id=st.sampled_from(_IDS),
    noise=st.binary(max_size=40),
    at=st.integers(min_value=0, max_value=200),
)
def test_guard_walk_equals_call_per_field(
    record: dict[str, Any], schema_id: int, noise: bytes, at: int
) -> None:
    value = _encodable(schema_id, record) or b"\0" * 5
    for buf in (value, value[:at] + noise, value[:5] + noise, value[:at] + noise + value[at:]):
        new, old = _WALKS[schema_id]
        assert _outcome(new, buf) == _outcome(old, buf)
    guard = index_guard(_parsed(schema_id))
    assert guard is None or guard(value, 5)  # a record fastavro wrote has every index in range


# --- tenant-tag: the provenance id without json.dumps(sort_keys=True) -------------------------


def _reference_manifest(item: Decoded, policy_version: str) -> dict[str, object]:
    """``operators.tenancy.manifest`` as it was."""
    provenance = item.provenance
    return {
        "tenant_id": item.signal.tenant_id,
        "policy_version": policy_version,
        "schema_version": provenance.schema_version,
        "input_hash": provenance.input_hash,
        "kafka_topic": provenance.topic,
        "kafka_partition": provenance.kafka_partition,
        "kafka_offset": provenance.kafka_offset,
    }


def _reference_id(manifest: dict[str, object]) -> str:
    """``operators.tenancy.provenance_id`` as it was."""
    canonical = json.dumps(
        manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    )
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()[:32]


class _Policy:
    """A policy with any version string (tags are not what is compared here)."""

    def __init__(self, version: str) -> None:
        self.version = version

    def tags(self, tenant_id: str) -> PolicyTags:
        return PolicyTags("p", "r", "l", tenant_id[:1] or "-")


class _Int(int):
    pass


class _Str(str):
    __slots__ = ()


_escaped = ["\ud800", "\udfff", '"', "\\", "\x7f", "\x00", "\x1f", "\u00e9", "\U0001f600", "a"]
_any_text = st.text(max_size=20) | st.lists(st.sampled_from(_escaped), max_size=8).map("".join)
_int = st.integers(min_value=-(2**70), max_value=2**70)
_odd_int = _int | st.booleans() | _int.map(_Int)
_odd_text = _any_text | _any_text.map(_Str)


@settings(max_examples=500, deadline=None)
@given(
    tenant=_any_text,
    topic=_any_text,
    digest=_any_text,
    version=_any_text,
    ints=st.tuples(_int, _int, _int),
)
def test_provenance_id_equals_sorted_json(
    tenant: str, topic: str, digest: str, version: str, ints: tuple[int, int, int]
) -> None:
    partition, offset, schema_version = ints
    item = Decoded(
        Signal(tenant, "s", "t", 0.5, None, "src", datetime(2026, 1, 1, tzinfo=UTC)),
        Provenance(topic, partition, offset, schema_version, digest),
    )
    tagged = tag(item, cast(TenancyPolicy, _Policy(version)))
    assert tagged.provenance_id == _reference_id(_reference_manifest(item, version))


@settings(max_examples=200, deadline=None)
@given(tenant=_odd_text, topic=_odd_text, ints=st.tuples(_odd_int, _odd_int, _odd_int))
def test_provenance_id_of_odd_types_equals_sorted_json(
    tenant: str, topic: str, ints: tuple[int, int, int]
) -> None:
    """bools and subclasses of int and str take the general path: still the same id."""
    partition, offset, schema_version = ints
    item = Decoded(
        Signal(tenant, "s", "t", 0.5, None, "src", datetime(2026, 1, 1, tzinfo=UTC)),
        Provenance(topic, partition, offset, schema_version, "ab" * 32),
    )
    tagged = tag(item, cast(TenancyPolicy, _Policy("v")))
    assert tagged.provenance_id == _reference_id(_reference_manifest(item, "v"))
    assert tagged.provenance_id == provenance_id(manifest(item, "v"))


# --- score: the 2-place rounding in integers, without a Fraction per change -------------------


def _reference_round(value: Fraction, places: int = 2) -> Decimal:
    """``operators.score.round_half_even`` as it was."""
    scaled = value * 10**places
    q, r = divmod(scaled.numerator, scaled.denominator)
    twice = 2 * r
    if twice > scaled.denominator or (twice == scaled.denominator and q % 2):
        q += 1
    digits = tuple(int(c) for c in str(abs(q)))
    return Decimal((1 if q < 0 else 0, digits, -places))


def _same_decimal(a: Decimal, b: Decimal) -> bool:
    return a.as_tuple() == b.as_tuple() and pickle.dumps(a) == pickle.dumps(b)


_big = st.integers(min_value=-(2**300), max_value=2**300)


@settings(max_examples=1000, deadline=None)
@given(
    num=_big | st.integers(-1000, 1000),
    den=(_big | st.integers(-1000, 1000)).filter(bool),
    shift=st.integers(min_value=0, max_value=1100),
    places=st.integers(min_value=0, max_value=6),
)
def test_rounding_in_integers_equals_rounding_the_fraction(
    num: int, den: int, shift: int, places: int
) -> None:
    """Unreduced ratios too (the score's sums over powers of two): ``num * 2**k / den * 2**k``."""
    expected = _reference_round(Fraction(num, den), places)
    assert _same_decimal(round_half_even(Fraction(num, den), places), expected)
    assert _same_decimal(_round_ratio(num << shift, den << shift, places), expected)


def test_rounding_ties_in_integers() -> None:
    for q in range(-300, 301):  # every x.xx5 between -1.5 and 1.5, as an unreduced ratio
        num, den = (2 * q + 1) << 60, 200 << 60
        assert _same_decimal(_round_ratio(num, den, 2), _reference_round(Fraction(num, den)))


def _two_places(num: int, den: int) -> Decimal:
    """A ScoreChange's ``score_2dp`` for the score ``num / den`` (from the double, unless near
    a tie)."""
    at = datetime(2026, 1, 1, tzinfo=UTC)
    provenance = Provenance("t", 0, 0, 1, "h")
    noted = ("t", provenance, "p", at, 1, 1, 0)
    return _score_change(noted, num, den, Status.WARN, 1, None).score_2dp


# A score near a decimal tie (q + 1/2) / 100 of its 2 places, or at one, over the denominators a
# window's sums have (a power of two times a count or a total weight): 0 and 1 e-9 apart and
# less, where the double and the exact value can round apart.
_near_tie = st.builds(
    lambda q, den, off, shift: ((((2 * q + 1) * den) // 200 + off) << shift, den << shift),
    st.integers(0, 99),
    st.integers(1, 2**80),
    st.integers(-3, 3),
    st.integers(0, 200),
).filter(lambda nd: 0 <= nd[0] <= nd[1])


@settings(max_examples=2000, deadline=None)
@given(
    st.tuples(st.integers(0, 2**300), st.integers(1, 2**300)).filter(lambda nd: nd[0] <= nd[1])
    | st.tuples(st.integers(-(2**70), 2**70), st.integers(1, 2**70))
    | _near_tie
)
def test_a_changes_two_places_are_the_exact_rounding(ratio: tuple[int, int]) -> None:
    """The double's fast path (scores in [0, 1]) gives what rounding in integers gives."""
    num, den = ratio
    assert _same_decimal(_two_places(num, den), _round_ratio(num, den, 2))


def test_a_changes_two_places_at_every_tie_are_the_exact_rounding() -> None:
    for q in range(100):  # every x.xx5 in [0, 1], exactly and one part in 2**k either side
        for k in (0, 30, 60, 200):
            for off in (-1, 0, 1):
                num, den = ((2 * q + 1) << k) + off, 200 << k
                exact = _reference_round(Fraction(num, den))
                assert _same_decimal(_two_places(num, den), exact)


_value = st.floats(min_value=0.0, max_value=1.0) | st.sampled_from([0.125, 0.375, 0.165, 1 / 3])
_weight = st.none() | st.floats(min_value=0.0, max_value=1e300) | st.sampled_from([0.0, 5e-324])


@settings(max_examples=150, deadline=None)
@given(
    signals=st.lists(
        st.tuples(_value, _weight, st.integers(min_value=0, max_value=20_000)), max_size=60
    ),
    window=st.sampled_from([60.0, 3600.0, 86400.0]),
)
def test_every_change_rounds_the_exact_score(
    signals: list[tuple[float, float | None, int]], window: float
) -> None:
    state = TenantScore(ScoreSettings(window_seconds=window))
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for i, (value, weight, seconds) in enumerate(signals):
        s = Signal("t", f"s{i}", "x", value, weight, "src", start + timedelta(seconds=seconds))
        item = Decoded(s, Provenance("t", 0, i, 1, "h"))
        change = state.add(Tagged(item, PolicyTags("p", "r", "l", "x"), "v", f"{i:032x}"))
        if change is not None:
            exact = state.exact
            assert exact is not None
            assert _same_decimal(change.score_2dp, _reference_round(exact))
            assert change.score == float(exact)


# --- records: __init__ through the slots' descriptors ----------------------------------------

_RECORDS = [
    obj
    for obj in vars(records).values()
    if isinstance(obj, type)
    and dataclasses.is_dataclass(obj)
    and obj.__module__ == records.__name__
]


def _reference_instance(cls: type, values: list[object]) -> object:
    """What the dataclass-generated ``__init__`` does: ``object.__setattr__`` per field."""
    obj = object.__new__(cls)
    for f, value in zip(dataclasses.fields(cls), values, strict=True):
        object.__setattr__(obj, f.name, value)
    return obj


def test_every_record_class_has_the_slot_init() -> None:
    assert len(_RECORDS) == 11
    for cls in _RECORDS:
        assert cls.__init__.__qualname__ == f"{cls.__qualname__}.__init__"
        assert cls.__init__.__module__ == records.__name__
        hints = cls.__init__.__annotations__
        assert list(hints) == [f.name for f in dataclasses.fields(cls)] + ["return"]
        params = list(inspect.signature(cls).parameters.values())
        fields = dataclasses.fields(cls)
        assert [p.name for p in params] == [f.name for f in fields]
        for p, f in zip(params, fields, strict=True):
            expected = inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default
            assert p.default is expected


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_records_built_by_the_slot_init_equal_the_dataclass_ones(data: st.DataObject) -> None:
    values = st.none() | st.integers() | st.text(max_size=5) | st.floats() | st.tuples()
    for cls in _RECORDS:
        fields = dataclasses.fields(cls)
        given_values = [data.draw(values) for _ in fields]
        reference = _reference_instance(cls, given_values)
        positional = cls(*given_values)
        keywords = cls(**{f.name: v for f, v in zip(fields, given_values, strict=True)})
        for obj in (positional, keywords):
            assert pickle.dumps(obj) == pickle.dumps(reference)
            assert repr(obj) == repr(reference)
            with pytest.raises(dataclasses.FrozenInstanceError):
                setattr(obj, fields[0].name, 1)
        required = [f for f in fields if f.default is dataclasses.MISSING]
        with pytest.raises(TypeError):
            cls(*given_values[: len(required) - 1])
        defaults = [f.default for f in fields if f.default is not dataclasses.MISSING]
        short = cls(*given_values[: len(required)])
        assert [getattr(short, f.name) for f in fields[len(required) :]] == defaults


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_records_built_by_a_slot_maker_equal_the_dataclass_ones(data: st.DataObject) -> None:
    """records.slot_maker: a plain record of the class (type, fields, pickle, hash, still
    frozen), for every record class."""
    values = st.none() | st.integers() | st.text(max_size=5) | st.floats() | st.tuples()
    for cls in _RECORDS:
        make = records.slot_maker(cls)
        fields = dataclasses.fields(cls)
        given_values = [data.draw(values) for _ in fields]
        reference = _reference_instance(cls, given_values)
        obj = make(*given_values)
        assert type(obj) is cls
        assert pickle.dumps(obj) == pickle.dumps(reference)
        assert repr(obj) == repr(reference)
        assert obj == reference
        assert hash(obj) == hash(reference)
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(obj, fields[0].name, 1)
        with pytest.raises(TypeError):
            make(*given_values[:-1])


def test_a_slot_maker_refuses_a_class_it_cannot_build() -> None:
    @dataclasses.dataclass(frozen=True)
    class Unslotted(records._Immutable):
        a: int

    @dataclasses.dataclass(frozen=True, slots=True)
    class NotImmutable:
        a: int

    for cls in (Unslotted, NotImmutable):
        with pytest.raises(TypeError, match="slot_maker"):
            records.slot_maker(cls)
