"""The hot path's shortcuts (issue 15) give what the computations they replace give, on any input.

Each shortcut is compared with the computation it replaced, kept here as the reference: decode
without per-record schema resolution against fastavro's resolution, the guard's inline skips
against the call-per-field walk, the provenance id written directly against
``json.dumps(sort_keys=True)`` of the manifest dict. Outputs are compared as pickles, so a NaN,
a ``-0.0``, a timezone or a key order that differs fails.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import hypothesis.strategies as st
from hypothesis import given, settings

from core.records import Decoded, PolicyTags, Provenance, RawRecord, Signal
from core.wire import encode
from operators.avro_indexes import BadIndex, _Compiler, index_guard
from operators.decode import SignalDecoder
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
