"""The records' pickle state, with names looked up once per class (``core.records``), is what
``dataclasses`` (and ``_getstate_untraced``/``_setstate_with_defaults``, the reference) give:
the same state lists, so the same bytes in recovery snapshots and between processes."""

from __future__ import annotations

import dataclasses
import pickle
from typing import Any

import pytest

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
    from datetime import UTC, datetime

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
