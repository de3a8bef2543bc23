"""The columnar digest (:func:`core.digest.digest_arrow`) equals the per-value reference
(:func:`core.digest.digest_rows` over ``to_pylist()``), byte for byte, on any Arrow table."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import hypothesis.strategies as st
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings

import core.digest
from core.digest import GroupDigest, digest_arrow, digest_rows, dump_summary
from core.float_hex import float_hex
from sinks.lake_tables import TABLES

_TZ = timezone(timedelta(hours=5, minutes=30))
_INT64 = st.integers(-(2**63), 2**63 - 1)


def _decimals(precision: int, scale: int) -> st.SearchStrategy[Decimal]:
    bound = 10**precision - 1
    return st.integers(-bound, bound).map(lambda i: Decimal(f"{i}E{-scale}"))


#: (Arrow type, its values): every type the lake tables use, and the neighbours the fast paths
#: take too.
_TYPES: list[tuple[pa.DataType, st.SearchStrategy[Any]]] = [
    (pa.string(), st.text()),
    (pa.large_string(), st.text(max_size=5)),
    (pa.binary(), st.binary()),
    (pa.large_binary(), st.binary(max_size=5)),
    (pa.int8(), st.integers(-128, 127)),
    (pa.int32(), st.integers(-(2**31), 2**31 - 1)),
    (pa.int64(), _INT64),
    (pa.uint64(), st.integers(0, 2**64 - 1)),
    (pa.bool_(), st.booleans()),
    (pa.float64(), st.floats()),
    (pa.float64(), st.sampled_from([0.0, -0.0, float("nan"), -float("nan"), float("inf"),
                                    -float("inf"), 5e-324, -2.2250738585072014e-308])),
    (pa.float32(), st.floats(width=32)),
    (pa.decimal128(5, 2), _decimals(5, 2)),
    (pa.decimal128(38, 10), _decimals(38, 10)),
    (pa.decimal128(9, 0), _decimals(9, 0)),
    (pa.timestamp("us", tz="UTC"), st.datetimes(timezones=st.just(UTC))),
    (pa.timestamp("ms", tz="UTC"),
     st.datetimes(timezones=st.just(UTC)).map(lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000))),  # noqa: E501
    (pa.timestamp("us", tz="+05:30"),  # not at year 1 or 9999: to_pylist adds the offset
     st.datetimes(datetime(2, 1, 1), datetime(9998, 1, 1), timezones=st.just(_TZ))),  # noqa: DTZ001
    (pa.list_(pa.string()), st.lists(st.none() | st.text(max_size=3), max_size=4)),
    (pa.large_list(pa.int64()), st.lists(st.none() | _INT64, max_size=3)),
    (pa.list_(pa.list_(pa.binary())), st.lists(st.none() | st.lists(st.binary(max_size=2)), max_size=3)),  # noqa: E501
    (pa.date32(), st.dates()),  # not encodable: raises as the reference does
]  # fmt: skip
_ENCODABLE = _TYPES[:-1]


@st.composite
def _tables(draw: st.DrawFn, types: list[tuple[pa.DataType, Any]] = _ENCODABLE) -> pa.Table:
    """A table of random columns, the grouping columns (or some) among them, rows in chunks."""
    n = draw(st.integers(0, 12))
    columns: dict[str, pa.Array] = {}
    if draw(st.booleans()):
        tenants = st.none() | st.sampled_from(["", "t1", "t2", "ténant"])
        columns["tenant_id"] = pa.array(
            draw(st.lists(tenants, min_size=n, max_size=n)), pa.string()
        )
    if draw(st.booleans()):
        partitions = st.lists(st.integers(-1, 2), min_size=n, max_size=n)
        columns["kafka_partition"] = pa.array(draw(partitions), pa.int32())
    if draw(st.booleans()):
        offsets = st.lists(st.integers(-1, 2**62), min_size=n, max_size=n)
        columns["kafka_offset"] = pa.array(draw(offsets), pa.int64())
    for i in range(draw(st.integers(0, 5))):
        kind, values = draw(st.sampled_from(types))
        nullable = draw(st.booleans())
        cell = (st.none() | values) if nullable else values
        columns[f"c{i}"] = pa.array(draw(st.lists(cell, min_size=n, max_size=n)), kind)
    order = draw(st.permutations(list(columns)))
    data = pa.table({name: columns[name] for name in order}) if columns else pa.table({})
    if n and columns:
        # Chunks and sliced arrays: the columnar path reads Arrow offsets and buffers.
        cut = draw(st.integers(0, n))
        data = pa.concat_tables([data.slice(0, cut), data.slice(cut)])
    return data


def _reference(name: str, data: pa.Table) -> dict[Any, GroupDigest]:
    return digest_rows(name, data.column_names, [tuple(r.values()) for r in data.to_pylist()])


def _both(name: str, data: pa.Table) -> list[dict[Any, GroupDigest]]:
    """``digest_arrow`` columnar (whatever the size) and value by value (the small path)."""
    out = []
    for least in (0, len(data) + 1):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(core.digest, "_COLUMNAR_MIN_ROWS", least)
            out.append(digest_arrow(name, data))
    return out


@settings(max_examples=400, deadline=None)
@given(data=_tables())
def test_the_columnar_digest_equals_the_reference(data: pa.Table) -> None:
    expected = _reference("t", data)
    assert _both("t", data) == [expected, expected]


@settings(max_examples=100, deadline=None)
@given(data=_tables(), rows=st.integers(1, 4))
def test_slices_add_up_to_the_reference(data: pa.Table, rows: int) -> None:
    """Digested a few rows at a time, groups spanning slices sum as one."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(core.digest, "_SLICE_ROWS", rows)
        patch.setattr(core.digest, "_COLUMNAR_MIN_ROWS", 0)
        assert digest_arrow("t", data) == _reference("t", data)


@settings(max_examples=50, deadline=None)
@given(data=_tables(types=[_TYPES[-1]]))
def test_unencodable_values_raise_as_in_the_reference(data: pa.Table) -> None:
    try:
        expected = _reference("t", data)
    except TypeError:
        with pytest.raises(TypeError):
            _both("t", data)
    else:  # no date column drawn, or only nulls in it
        assert _both("t", data) == [expected, expected]


def test_a_naive_timestamp_raises() -> None:
    data = pa.table({"ts": pa.array([datetime(2026, 1, 1)], pa.timestamp("us"))})  # noqa: DTZ001
    with pytest.raises(ValueError, match="naive"):
        _both("t", data)


def test_grouping_columns_of_other_types_take_the_reference_path() -> None:
    data = pa.table(
        {
            "tenant_id": pa.array([1, 0, None], pa.int64()),
            "kafka_partition": pa.array([0, None, 0], pa.int32()),
            "kafka_offset": pa.array([3.0, 1.0, 2.0]),
        }
    )
    expected = _reference("t", data)
    assert _both("t", data) == [expected, expected]


def _lake_rows(kind: pa.DataType, i: int) -> Any:
    """A value of each lake column type, a few of them tricky."""
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return ["", "é", "t1", "a|b"][i % 4]
    if pa.types.is_integer(kind):
        return [0, -1, 2**31 - 1, 7][i % 4]
    if pa.types.is_floating(kind):
        return [0.0, -0.0, float("nan"), 1e-310][i % 4]
    if pa.types.is_decimal(kind):
        return [Decimal("-0.10"), Decimal("999.99"), Decimal("0.00"), Decimal("1.00")][i % 4]
    if pa.types.is_timestamp(kind):
        return datetime(1969, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC) + timedelta(days=i)
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        return [b"", b"\x00", b"payload", b"\xff"][i % 4]
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return [[], [""], ["a", "b"], ["ab"]][i % 4]
    raise AssertionError(kind)


@pytest.mark.parametrize("definition", TABLES, ids=lambda t: t.name)
def test_every_lake_table_digests_as_the_reference(definition: Any) -> None:
    schema = definition.schema.as_arrow()
    rows = [
        {f.name: None if (i % 3 == 2 and f.nullable) else _lake_rows(f.type, i) for f in schema}
        for i in range(9)
    ]
    data = pa.Table.from_pylist(rows, schema=schema)
    expected = _reference(definition.name, data)
    assert _both(definition.name, data) == [expected, expected]


def test_a_known_digest_is_pinned() -> None:
    """The encoding, fixed: a change here breaks every ledger and snapshot summary written."""
    data = pa.table(
        {
            "tenant_id": ["t1", None],
            "kafka_partition": pa.array([0, 0], pa.int32()),
            "kafka_offset": pa.array([5, 9], pa.int64()),
            "value": [-0.0, float("nan")],
            "score_2dp": pa.array([Decimal("1.00"), None], pa.decimal128(5, 2)),
            "ts": pa.array([datetime(2026, 1, 1, tzinfo=UTC)] * 2, pa.timestamp("us", tz="UTC")),
            "matched": pa.array([["a"], []], pa.list_(pa.string())),
            "payload": [b"\x00", b""],
        }
    )
    got = [dump_summary(d) for d in (*_both("t", data), _reference("t", data))]
    assert got == [_PINNED] * 3


#: Computed by the per-value code before the columnar path existed (commit ac564ba).
_PINNED = (
    '{"|0":[9,9,1,"75d81933251e821cafc6f28e143fa92b5960f38d70a582435b311097d784ffc3"],'
    '"t1|0":[5,5,1,"e70a1e999d6aff440865d2a9675019d2506b725917b71e3e16ef47314b2b8389"]}'
)


def test_float_hex_of_any_bit_pattern() -> None:
    """Every exponent (normal, subnormal, zero, inf/NaN) and random mantissas, both signs."""
    rng = np.random.default_rng(15)
    exponents = np.repeat(np.arange(2048, dtype=np.uint64), 40)
    mantissas = rng.integers(0, 1 << 52, len(exponents), dtype=np.uint64)
    mantissas[::40] = 0
    mantissas[1::40] = (1 << 52) - 1
    bits = (exponents << np.uint64(52)) | mantissas
    bits = np.concatenate([bits, bits | np.uint64(1 << 63)])
    floats = pa.array(bits.view(np.float64))
    mask = rng.random(len(floats)) < 0.1
    with_nulls = pa.array(bits.view(np.float64), mask=mask)
    assert float_hex(floats, np.ones(len(floats), bool)).to_pylist() == [
        float.hex(v).encode() for v in floats.to_pylist()
    ]
    assert float_hex(with_nulls, ~mask).to_pylist() == [
        b"" if v is None else float.hex(v).encode() for v in with_nulls.to_pylist()
    ]


@given(st.lists(st.binary(max_size=300), max_size=60), st.integers(0, 7))
def test_the_native_row_hashes_equal_hashlib(rows: list[bytes], skip: int) -> None:
    """``core._rowhash`` frames and hashes each row as ``hashlib.sha256`` does: empty rows, rows
    across SHA-256's 64-byte blocks, a sliced array (its offsets not starting at 0)."""
    values = pa.array([b"x" * skip, *rows], pa.large_binary()).slice(1)
    got = core.digest._row_hashes(pa.record_batch({"c": values}))
    expected = [
        hashlib.sha256(b"R" + _be(5 + len(r)) + b"B" + _be(len(r)) + r).digest() for r in rows
    ]
    assert [b"".join(int(x).to_bytes(4, "big") for x in limbs) for limbs in got] == expected


def _be(n: int) -> bytes:
    return n.to_bytes(4, "big")


def test_the_native_float_hex_of_any_bit_pattern() -> None:
    """The native encoder writes ``float.hex`` for every exponent (normal, subnormal, zero,
    inf/NaN) and random mantissas, both signs, nulls among them."""
    rng = np.random.default_rng(16)
    exponents = np.repeat(np.arange(2048, dtype=np.uint64), 8)
    mantissas = rng.integers(0, 1 << 52, len(exponents), dtype=np.uint64)
    mantissas[::8] = 0
    mantissas[1::8] = (1 << 52) - 1
    bits = (exponents << np.uint64(52)) | mantissas
    bits = np.concatenate([bits, bits | np.uint64(1 << 63)])
    mask = rng.random(len(bits)) < 0.05
    data = pa.table({"v": pa.array(bits.view(np.float64), mask=mask)})
    assert digest_arrow("t", data) == _reference("t", data)
