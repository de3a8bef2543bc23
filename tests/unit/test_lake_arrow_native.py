"""``core._native.lake_columns`` (the lake's Arrow buffers in C) against its reference.

``TableDef.to_arrow`` builds the signals' and scores' batches from the buffers C writes when
``lake_columns`` takes the batch; ``TableDef.python_to_arrow`` (``columns`` + ``column_array``,
i.e. ``pa.array``) stays the reference. For any records, edge values included, the two tables
are equal (schema too) or raise alike, C takes exactly the batches whose values it can copy as
they are, the Parquet bytes the lake's writer settings make of both are identical, and the C
path neither leaks nor changes reference counts.
"""

from __future__ import annotations

import gc
import io
import re
import sys
import tracemalloc
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import hypothesis.strategies as st
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from pyiceberg.io.pyarrow import _get_parquet_writer_kwargs

from core import _native
from core.records import Decoded, PolicyTags, Provenance, ScoreChange, Signal, Tagged
from sinks.lake_tables import SCORES, SIGNALS, TableDef, lane, provenance_values


class _Text(str):
    """A str subclass: C leaves it to the reference."""


class _Float(float):
    pass


class _Int(int):
    pass


class _Stamp(datetime):
    pass


class _Dec(Decimal):
    pass


_TEXT = st.one_of(
    st.sampled_from(["", "a", "tenant-1", "é", "日本語", "\U0001f600", "x" * 300]),
    st.text(max_size=12),
)
_ODD_TEXT = st.sampled_from(["\ud800", "a\udfff"])  # UTF-8 refuses them, so does pyarrow
_FLOAT = st.floats(allow_nan=True, allow_infinity=True)
_INT32 = st.one_of(st.integers(-(2**31), 2**31 - 1), st.sampled_from([-(2**31), 2**31 - 1]))
_ODD_INT32 = st.sampled_from([2**31, -(2**31) - 1])
_INT64 = st.one_of(st.integers(-(2**63), 2**63 - 1), st.sampled_from([-(2**63), 2**63 - 1]))
_ODD_INT64 = st.sampled_from([2**63, -(2**63) - 1])
_ODD_ZONE = st.sampled_from([timezone(timedelta(hours=2)), timezone(timedelta(0), "Z"), None])
_STAMP = st.one_of(
    st.sampled_from(
        [
            datetime(1, 1, 1, tzinfo=UTC),
            datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
            datetime(1970, 1, 1, tzinfo=UTC),
            datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        ]
    ),
    st.datetimes(),
)
_DECIMAL = st.one_of(
    st.decimals(min_value=-999, max_value=999, places=2),
    st.sampled_from(["0.00", "-0.00", "1.00", "999.99", "-999.99", "0.5", "12"]).map(Decimal),
)
_ODD_DECIMAL = st.sampled_from(
    ["1000.00", "0.500", "1E+1", "0E-7", "NaN", "-Infinity", "0.001", "123456789012345678901"]
).map(Decimal)


class _Draw:
    """Draws of a record's values, usual ones (which C copies) but at the ``odd``-th chance of
    an edge (which C hands to the reference), if the record gives that many (``-1``: none)."""

    def __init__(self, draw: st.DrawFn, odd: int) -> None:
        self.draw, self.odd, self.chances = draw, odd, 0

    def rare(self) -> bool:
        self.chances += 1
        return self.chances - 1 == self.odd

    def __call__(self, usual: Any, odd: Any = None) -> Any:
        return self.draw(odd) if odd is not None and self.rare() else self.draw(usual)

    def text(self) -> str:
        return self(_TEXT, _ODD_TEXT) if not self.rare() else _Text(self.draw(_TEXT))

    def stamp(self) -> datetime:
        ts = self.draw(_STAMP)
        zone = self.draw(_ODD_ZONE) if self.rare() else UTC
        if zone is None:
            return ts.replace(tzinfo=None)
        stamp = ts.replace(tzinfo=zone)
        if self.rare():
            stamp = _Stamp(*stamp.timetuple()[:6], stamp.microsecond, tzinfo=zone)
        return stamp

    def provenance(self) -> Provenance:
        partition = self(_INT32, _ODD_INT32)
        return Provenance(
            self.text(),
            _Int(partition) if self.rare() else partition,
            self(_INT64, _ODD_INT64),
            self(st.integers(0, 2**31 - 1), _ODD_INT32),
            self.text(),
        )


@st.composite
def _signal_item(draw: st.DrawFn, odd: int) -> Tagged:
    d = _Draw(draw, odd)
    value = d(_FLOAT)
    signal = Signal(
        d.text(),
        d.text(),
        d.text(),
        _Float(value) if d.rare() else value,
        d(st.one_of(st.none(), _FLOAT)),
        d.text(),
        d.stamp(),
    )
    tags = PolicyTags(*(d.text() for _ in range(4)))
    item = Tagged(Decoded(signal, d.provenance()), tags, d.text(), d.text())
    if d.rare():  # a value of another type where the field says float
        object.__setattr__(signal, "value", draw(st.sampled_from([1, True])))
    return item


@st.composite
def _score_item(draw: st.DrawFn, odd: int) -> ScoreChange:
    d = _Draw(draw, odd)
    count, score_2dp = d(_INT64, _ODD_INT64), d(_DECIMAL, _ODD_DECIMAL)
    return ScoreChange(
        d.text(),
        d(_FLOAT),
        d.text(),
        d.stamp(),
        _Int(count) if d.rare() else count,
        d(_FLOAT),
        d.text(),
        d.provenance(),
        _Dec(score_2dp) if d.rare() else score_2dp,
        d(_INT64, _ODD_INT64),
    )


@st.composite
def _batch(draw: st.DrawFn, item: Any) -> list[Any]:
    """A batch of usual records (C takes it), or one record of it with one edge (C does not)."""
    items = draw(st.lists(item(-1), max_size=12))
    if items and draw(st.booleans()):
        items[draw(st.integers(0, len(items) - 1))] = draw(item(draw(st.integers(0, 40))))
    return items


_PLAIN = re.compile(r"-?[0-9]+(\.[0-9]+)?")


def _plain_decimal(d: Any) -> bool:
    """What C converts: an exact Decimal written [-]digits[.digits], at most 2 places, < 10**5
    once scaled (``la_unscaled``)."""
    if type(d) is not Decimal or not _PLAIN.fullmatch(text := str(d)):
        return False
    places = len(text.split(".")[1]) if "." in text else 0
    digits = sum(c.isdigit() for c in text)
    return (
        places <= 2
        and digits <= 18
        and abs(int(text.replace(".", "").replace("-", ""))) * 10 ** (2 - places) < 10**5
    )


def _plain(value: Any, kind: str) -> bool:
    """Whether C copies ``value`` of a column of ``kind`` as it is."""
    if kind == "str":
        if type(value) is not str:
            return False
        try:
            value.encode()
        except UnicodeEncodeError:
            return False
        return True
    if kind == "float":
        return type(value) is float
    if kind == "weight":
        return value is None or type(value) is float
    if kind == "int32":
        return type(value) is int and -(2**31) <= value < 2**31
    if kind == "int64":
        return type(value) is int and -(2**63) <= value < 2**63
    if kind == "ts":
        return type(value) is datetime and value.tzinfo is UTC
    assert kind == "decimal"
    return _plain_decimal(value)


_PROVENANCE_KINDS = ("str", "int32", "int64", "int32", "str")


def _signal_plain(item: Tagged) -> bool:
    s, p, t = item.decoded.signal, item.decoded.provenance, item.tags
    pairs = [
        (s.tenant_id, "str"),
        (s.signal_id, "str"),
        (s.type, "str"),
        (s.value, "float"),
        (s.weight, "weight"),
        (s.source, "str"),
        (s.ts, "ts"),
        *zip(
            provenance_values(p),
            _PROVENANCE_KINDS,
            strict=True,
        ),
        (item.provenance_id, "str"),
        (item.policy_version, "str"),
        *((v, "str") for v in (t.purpose, t.retention, t.license, t.residency)),
    ]
    return all(_plain(v, k) for v, k in pairs)


def _score_plain(item: ScoreChange) -> bool:
    p = item.provenance
    if type(item) is not ScoreChange or type(p) is not Provenance:
        return False
    pairs = [
        (item.tenant_id, "str"),
        (item.score, "float"),
        (item.status, "str"),
        (item.updated_at, "ts"),
        (item.window_count, "int64"),
        (item.window_weight, "float"),
        (item.provenance_id, "str"),
        *zip(
            provenance_values(p),
            _PROVENANCE_KINDS,
            strict=True,
        ),
        (item.score_2dp, "decimal"),
        (item.seq, "int64"),
    ]
    return all(_plain(v, k) for v, k in pairs)


def _outcome(build: Any) -> tuple[str, Any]:
    try:
        return "ok", build()
    except (pa.ArrowException, ValueError, TypeError, OverflowError, UnicodeError) as e:
        return "raised", type(e)


TAKEN: dict[str, list[bool]] = {}


def _check(table: TableDef[Any], items: list[Any], plain: bool) -> None:
    taken = _native.lake_columns(items, table.native_plan) is not None
    assert taken == (plain and bool(items))
    TAKEN.setdefault(table.name, []).append(taken)
    got, want = (
        _outcome(lambda: table.to_arrow(items)),
        _outcome(lambda: table.python_to_arrow(items)),
    )
    assert got[0] == want[0]
    if got[0] == "raised":
        assert got[1] is want[1]
        return
    assert got[1].schema.equals(want[1].schema, check_metadata=True)
    assert _bits(got[1]).equals(_bits(want[1]))
    assert _parquet(got[1]) == _parquet(want[1])


def _bits(table: pa.Table) -> pa.Table:
    """``table`` with its doubles as their bits (int64): equal where a NaN is the same NaN."""
    return pa.table(
        [_viewed(c) for c in table.columns],
        names=table.column_names,
    )


def _viewed(column: pa.ChunkedArray) -> pa.ChunkedArray:
    if not pa.types.is_float64(column.type):
        return column
    return pa.chunked_array([c.view(pa.int64()) for c in column.chunks], type=pa.int64())


def _parquet(table: pa.Table) -> bytes:
    """The Parquet file of ``table`` with the lake writer's settings (sinks/lake_write.py takes
    ``_get_parquet_writer_kwargs`` of the table's properties; these are the defaults')."""
    out = io.BytesIO()
    with pq.ParquetWriter(out, table.schema, **_get_parquet_writer_kwargs({})) as writer:
        writer.write(table)
    return out.getvalue()


@settings(max_examples=300, deadline=None)
@given(_batch(_signal_item))
def test_signal_batches_equal_the_reference(items: list[Tagged]) -> None:
    _check(SIGNALS, items, all(map(_signal_plain, items)))


@settings(max_examples=300, deadline=None)
@given(_batch(_score_item))
def test_score_batches_equal_the_reference(items: list[ScoreChange]) -> None:
    _check(SCORES, items, all(map(_score_plain, items)))


@settings(max_examples=200, deadline=None)
@given(st.lists(_score_item(-1), min_size=1, max_size=6), st.integers(0, 5))
def test_any_split_of_a_batch_gives_its_rows(items: list[ScoreChange], cut: int) -> None:
    """The batch path holds for any batching: two slices' tables concatenate to the whole's."""
    assert all(map(_score_plain, items))
    whole = SCORES.to_arrow(items)
    parts = [SCORES.to_arrow(items[:cut]), SCORES.to_arrow(items[cut:])]
    assert _bits(pa.concat_tables([p for p in parts if p.num_rows])).equals(_bits(whole))


def _workload(n: int) -> tuple[list[Tagged], list[ScoreChange]]:
    """The benchmark's records, each a copy of its own down to its fields' records (the
    workload's records share them; the edge tests change them in place)."""
    from benchmarks.lake_append import workload

    signals, scores = workload(n)
    return [_fresh_signal(t) for t in signals], [
        replace(s, provenance=replace(s.provenance)) for s in scores
    ]


def _fresh_signal(t: Tagged) -> Tagged:
    d = t.decoded
    decoded = replace(d, signal=replace(d.signal), provenance=replace(d.provenance))
    return replace(t, decoded=decoded, tags=replace(t.tags))


def test_the_benchmark_workload_takes_the_c_path_and_writes_the_same_parquet() -> None:
    signals, scores = _workload(2000)
    for table, items in ((SIGNALS, signals), (SCORES, scores)):
        assert _native.lake_columns(items, table.native_plan) is not None
        got, want = table.to_arrow(items), table.python_to_arrow(items)
        assert got.equals(want)
        assert _parquet(got) == _parquet(want)


def test_a_tuple_of_items_takes_the_reference() -> None:
    _, scores = _workload(10)
    assert SCORES.to_arrow(tuple(scores)).equals(SCORES.python_to_arrow(scores))


def test_a_bad_plan_raises() -> None:
    with pytest.raises(TypeError):
        _native.lake_columns([], ((("x",), 0),))
    with pytest.raises(TypeError):
        _native.lake_columns([], (((ScoreChange.seq,), 9),))
    with pytest.raises(ValueError):
        _native.lake_columns([], (((ScoreChange.score_2dp,), 6, Decimal, 40, 2),))


def test_no_leak_and_reference_counts_unchanged() -> None:
    signals, scores = _workload(300)
    odd = [*scores[:-1], ScoreChange(**{**_fields(scores[-1]), "score_2dp": Decimal("1.234")})]
    cases = ((SIGNALS, signals), (SCORES, scores), (SCORES, odd))
    watched = [x for s in signals[:5] for x in (s.decoded.signal.tenant_id, s.decoded.signal.ts)]
    watched += [s.score_2dp for s in scores[:5]] + [odd[-1].score_2dp]
    before = [sys.getrefcount(x) for x in watched]
    for table, items in cases:  # warm up
        _native.lake_columns(items, table.native_plan)
    gc.collect()
    tracemalloc.start()
    try:
        start = tracemalloc.take_snapshot()
        for _ in range(200):
            for table, items in cases:
                _native.lake_columns(items, table.native_plan)
        gc.collect()
        grown = sum(
            d.size_diff
            for d in tracemalloc.take_snapshot().compare_to(start, "filename")
            if d.size_diff > 0
        )
    finally:
        tracemalloc.stop()
    assert grown < 20_000
    assert [sys.getrefcount(x) for x in watched] == before


def _fields(item: ScoreChange) -> dict[str, Any]:
    return {f: getattr(item, f) for f in ScoreChange.__dataclass_fields__}


def test_the_properties_exercised_both_paths() -> None:
    """(Run after them, in file order.) Both the C path and the fallback were taken, often."""
    for name in ("signals", "scores"):
        taken = TAKEN.get(name, [])
        assert sum(taken) >= 30, (name, sum(taken), len(taken))
        assert len(taken) - sum(taken) >= 30, (name, sum(taken), len(taken))


class _SubScore(ScoreChange):
    __slots__ = ()


def _set(obj: Any, **values: Any) -> Any:
    for name, value in values.items():
        object.__setattr__(obj, name, value)
    return obj


_SIGNAL_EDGES = {
    "zone +2": lambda t: _set(t.signal, ts=t.signal.ts.astimezone(timezone(timedelta(hours=2)))),
    "zone Z": lambda t: _set(t.signal, ts=t.signal.ts.replace(tzinfo=timezone(timedelta(0), "Z"))),
    "naive": lambda t: _set(t.signal, ts=t.signal.ts.replace(tzinfo=None)),
    "datetime subclass": lambda t: _set(t.signal, ts=_Stamp(2024, 1, 1, tzinfo=UTC)),
    "str subclass": lambda t: _set(t.signal, tenant_id=_Text("t")),
    "surrogate": lambda t: _set(t.tags, residency="\ud800"),
    "int value": lambda t: _set(t.signal, value=1),
    "bool value": lambda t: _set(t.signal, value=True),
    "float subclass": lambda t: _set(t.signal, weight=_Float(0.5)),
    "int32 overflow": lambda t: _set(t.provenance, kafka_partition=2**31),
    "int32 underflow": lambda t: _set(t.provenance, schema_version=-(2**31) - 1),
    "int subclass": lambda t: _set(t.provenance, kafka_partition=_Int(1)),
    "int64 overflow": lambda t: _set(t.provenance, kafka_offset=2**63),
}
_SCORE_EDGES = {
    "three places": lambda s: _set(s, score_2dp=Decimal("0.001")),
    "trailing zero": lambda s: _set(s, score_2dp=Decimal("0.500")),
    "too many digits": lambda s: _set(s, score_2dp=Decimal("1000.00")),
    "exponent": lambda s: _set(s, score_2dp=Decimal("1E+1")),
    "nan": lambda s: _set(s, score_2dp=Decimal("NaN")),
    "decimal subclass": lambda s: _set(s, score_2dp=_Dec("0.25")),
    "float decimal": lambda s: _set(s, score_2dp=0.25),
    "int64 underflow": lambda s: _set(s, seq=-(2**63) - 1),
    "record subclass": lambda s: _SubScore(**_fields(s)),
}


@pytest.mark.parametrize("edge", sorted(_SIGNAL_EDGES))
def test_a_signal_edge_goes_to_the_reference(edge: str) -> None:
    signals, _ = _workload(4)
    _SIGNAL_EDGES[edge](signals[2])
    assert not _signal_plain(signals[2])
    _check(SIGNALS, signals, False)


@pytest.mark.parametrize("edge", sorted(_SCORE_EDGES))
def test_a_score_edge_goes_to_the_reference(edge: str) -> None:
    _, scores = _workload(4)
    scores[2] = _SCORE_EDGES[edge](scores[2]) or scores[2]
    assert not _score_plain(scores[2])
    _check(SCORES, scores, False)


def test_extreme_usual_values_take_the_c_path() -> None:
    signals, scores = _workload(6)
    _set(signals[0].signal, ts=datetime(1, 1, 1, tzinfo=UTC), weight=None, value=float("nan"))
    _set(signals[1].signal, ts=datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC))
    _set(signals[1].signal, tenant_id="", signal_id="日本語\U0001f600", weight=float("-inf"))
    _set(signals[2].provenance, kafka_partition=-(2**31), kafka_offset=-(2**63))
    _set(signals[3].provenance, schema_version=2**31 - 1, kafka_offset=2**63 - 1)
    _set(signals[4].signal, ts=datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC))
    for i, text in enumerate(["-0.00", "999.99", "-999.99", "0", "12", "0.5"]):
        _set(scores[i], score_2dp=Decimal(text))
    _check(SIGNALS, signals, True)
    _check(SCORES, scores, True)


@given(st.lists(_signal_item(-1), max_size=8), st.lists(_score_item(-1), max_size=8))
def test_the_getters_read_what_the_records_properties_give(
    signals: list[Tagged], scores: list[ScoreChange]
) -> None:
    """The signals' and scores' C getters (provenance, tenant) and their lanes per tenant
    (:meth:`TableDef.lanes`, the replay plan's) are what each record's own attributes and
    ``lane`` give."""
    for item in signals:
        assert SIGNALS.provenance(item) is item.provenance
        assert SIGNALS.tenant(item) is item.signal.tenant_id
    for change in scores:
        assert SCORES.provenance(change) is change.provenance
        assert SCORES.tenant(change) is change.tenant_id
    assert SIGNALS.lanes(signals) == [lane("signals", i.signal.tenant_id) for i in signals]
    assert SCORES.lanes(scores) == [lane("scores", c.tenant_id) for c in scores]
    assert SCORES.lanes(scores) == list(map(SCORES.lane, scores))
