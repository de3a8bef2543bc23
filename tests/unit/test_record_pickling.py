"""The records' pickle state, with names looked up once per class (``core.records``), is what
``dataclasses`` (and ``_getstate_untraced``/``_setstate_with_defaults``, the reference) give:
the same state lists, so the same bytes in recovery snapshots and between processes."""

from __future__ import annotations

import copy
import dataclasses
import pickle
from datetime import UTC, datetime
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

import core.records as records
from core.records import _getstate_untraced, _setstate_with_defaults

CLASSES = [
    obj
    for obj in vars(records).values()
    if isinstance(obj, type)
    and dataclasses.is_dataclass(obj)
    and obj.__module__ == records.__name__
]


#: The optional last fields of the records pickled by ``_getstate_untraced``.
_OPTIONAL = ("trace", "horizon")


def _reference_state(record: Any) -> list[Any]:
    """The state dataclasses' own ``__getstate__`` (or ``_getstate_untraced``) gives."""
    if dataclasses.fields(record)[-1].name in _OPTIONAL:  # the records with _getstate_untraced
        return _getstate_untraced(record)
    return [getattr(record, f.name) for f in dataclasses.fields(record)]


def _filled(cls: type[Any], last: Any = "last") -> Any:
    """An instance whose every field holds a distinct value (types are not checked)."""
    record = object.__new__(cls)
    fields = dataclasses.fields(cls)
    for i, f in enumerate(fields):
        value = last if i == len(fields) - 1 else (f"v{i}", i)
        object.__setattr__(record, f.name, value)
    return record


def test_every_record_class_is_covered() -> None:
    names = {cls.__name__ for cls in CLASSES}
    assert {"RawRecord", "Decoded", "Tagged", "ScoreChange", "Signal", "Provenance"} <= names


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
@pytest.mark.parametrize("last", ["last", None])
def test_state_and_round_trip_match_the_reference(cls: type[Any], last: Any) -> None:
    record = _filled(cls, last)
    state = record.__getstate__()
    assert state == _reference_state(record)
    back = pickle.loads(pickle.dumps(record))
    assert [getattr(back, f.name) for f in dataclasses.fields(cls)] == [
        getattr(record, f.name) for f in dataclasses.fields(cls)
    ]


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_a_short_state_resumes_as_the_reference_does(cls: type[Any]) -> None:
    """A snapshot taken before a record's last field existed (or an untraced record)."""
    full = _filled(cls)
    short = [getattr(full, f.name) for f in dataclasses.fields(cls)][:-1]
    mine, reference = object.__new__(cls), object.__new__(cls)
    mine.__setstate__(short)
    if dataclasses.fields(cls)[-1].name in _OPTIONAL:
        _setstate_with_defaults(reference, short)
        last = dataclasses.fields(cls)[-1].name
        assert getattr(mine, last) is None and getattr(reference, last) is None
    for f in dataclasses.fields(cls)[:-1]:
        assert getattr(mine, f.name) == getattr(full, f.name)


def test_a_decoded_without_trace_or_horizon_pickles_as_before_both_existed() -> None:
    """An untraced record without a horizon (all but the last of a drift release) keeps the
    state, so the bytes, of a record from before either field; a traced one, those of a traced
    record from before the horizon; an old short state resumes with neither."""
    signal = records.Signal("t", "s", "latency", 0.5, None, "a", datetime(2026, 1, 1, tzinfo=UTC))
    provenance = records.Provenance("topic", 0, 1, 1, "h")
    plain = records.Decoded(signal, provenance, 5, None, ())
    assert plain.__getstate__() == [signal, provenance, 5, None, ()]
    traced = records.Decoded(signal, provenance, 5, None, (), "00-tr")
    assert traced.__getstate__() == [signal, provenance, 5, None, (), "00-tr"]
    at = datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC)
    carrier = records.Decoded(signal, provenance, 5, None, (), None, at)
    assert carrier.__getstate__() == [signal, provenance, 5, None, (), None, at]
    assert pickle.loads(pickle.dumps(carrier)).horizon == at
    old = object.__new__(records.Decoded)
    old.__setstate__([signal, provenance, 5, None, ()])
    assert (old.trace, old.horizon) == (None, None)
    assert old == carrier  # the horizon is bookkeeping: not compared


# Runs pickled as columns (core.records.Records): what crosses between processes at by_tenant.

_TEXT = st.text(max_size=8)
_WHEN = st.datetimes(timezones=st.just(UTC))
_raws = st.builds(
    records.RawRecord,
    _TEXT,
    st.integers(0, 8),
    st.integers(0, 2**40),
    st.none() | st.binary(max_size=8),
    st.none() | st.binary(max_size=16),
    st.none() | st.integers(0, 2**42),
    st.none() | _TEXT,
    st.lists(st.tuples(_TEXT, st.binary(max_size=4)), max_size=2).map(tuple),
)
_signals = st.builds(
    records.Signal,
    _TEXT,
    _TEXT,
    _TEXT,
    st.floats(0, 1),
    st.none() | st.floats(0, 10),
    _TEXT,
    _WHEN,
    st.lists(_TEXT, max_size=3).map(tuple),
)
_provenances = st.builds(
    records.Provenance, _TEXT, st.integers(0, 8), st.integers(0, 2**40), st.integers(1, 9), _TEXT
)
_decoded = st.builds(
    records.Decoded,
    _signals,
    _provenances,
    st.none() | st.integers(0, 2**42),
    st.none() | _raws,
    st.lists(_TEXT, max_size=2).map(tuple),
    st.none() | _TEXT,
    st.none() | _WHEN,
)


def _fields_of(record: Any) -> Any:
    """Every field, nested records' too: ``==`` leaves out the ``compare=False`` ones."""
    if not dataclasses.is_dataclass(record):
        return record
    return [_fields_of(getattr(record, f.name)) for f in dataclasses.fields(record)]


def _columns_round_trip(run: records.Records[Any]) -> Any:
    """``run`` through the reference pickled form (columns), which the C exchange replaced
    where it takes every value."""
    fn, args = records._reduce_columns(run)
    return pickle.loads(pickle.dumps(fn(*args)))


def _same(back: Any, run: list[Any]) -> None:
    assert type(back) is records.Records
    assert back == run
    assert [_fields_of(r) for r in back] == [_fields_of(r) for r in run]
    assert [type(r) for r in back] == [type(r) for r in run]


@given(st.lists(_decoded, max_size=20))
@settings(max_examples=200, deadline=None)
def test_a_run_of_decoded_loads_as_the_same_records(run: list[records.Decoded]) -> None:
    """Some with a raw record and some without (its column then pickles value by value), with
    and without trace and horizon (compare=False: checked field by field)."""
    packed = records.Records(run)
    _same(pickle.loads(pickle.dumps(("tenant", packed)))[1], run)
    _same(_columns_round_trip(packed), run)
    _same(copy.deepcopy(packed), run)
    _same(copy.copy(packed), run)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
@given(size=st.integers(0, 6), last=st.sampled_from(["last", None]))
def test_a_run_of_any_record_class_loads_as_the_same_records(
    cls: type[Any], size: int, last: Any
) -> None:
    run = [_filled(cls, last if i % 2 else f"{last}{i}") for i in range(size)]
    _same(pickle.loads(pickle.dumps(records.Records(run))), run)
    _same(_columns_round_trip(records.Records(run)), run)


def test_a_run_of_several_classes_or_other_objects_pickles_as_a_list() -> None:
    """By the reference (columns); the C exchange takes a mix of record classes, not other
    objects."""
    signal = records.Signal("t", "s", "latency", 0.5, None, "a", datetime(2026, 1, 1, tzinfo=UTC))
    provenance = records.Provenance("topic", 0, 1, 1, "h")
    for run in ([signal, provenance], [signal, 3], [(1, 2), (3, 4)], []):
        packed = records.Records(run)
        assert records._reduce_columns(packed) == (records.Records, (run,))
        if run and run[1] is provenance:
            assert packed.__reduce__()[0] is records._exchange_unpack
        else:
            assert packed.__reduce__() == (records.Records, (run,))
        _same(pickle.loads(pickle.dumps(packed)), run)
        _same(_columns_round_trip(packed), run)


def test_a_run_of_tenant_runs_pickles_by_the_exchange_or_as_columns() -> None:
    """``by_tenant``'s runs are Records (operators.batching.tenant_runs)."""
    from operators.batching import tenant_runs

    at = datetime(2026, 1, 1, tzinfo=UTC)
    items = [
        records.Decoded(
            records.Signal(f"t{i % 2}", f"s{i}", "latency", 0.5, None, "a", at),
            records.Provenance("topic", 0, i, 1, "h"),
        )
        for i in range(6)
    ]
    runs = tenant_runs(items, lambda d: d.signal.tenant_id)
    assert [type(run) for _, run in runs] == [records.Records, records.Records]
    assert runs[0][1].__reduce__()[0] is records._exchange_unpack  # the C exchange
    assert records._reduce_columns(runs[0][1])[0] is records._unpack  # its reference
    assert pickle.loads(pickle.dumps(runs)) == runs
