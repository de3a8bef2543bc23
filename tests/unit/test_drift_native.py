"""The drift step's plain path in C (``core._native.drift_run``, branch driftc) against its
Python reference (``TenantDrift.push_batch(native=False)``): the same outputs, the same held
state and the same snapshot bytes for any input and any split into batches, also across a
snapshot and resume between batches; it leaves every unusual record to the Python loop having
changed nothing, refuses a misuse, and leaks nothing."""

from __future__ import annotations

import copy
import dataclasses
import gc
import pickle
import random
import sys
from datetime import timedelta
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings

from core import _native
from core.records import Decoded
from core.settings import DriftSettings
from operators import drift as drift_module
from operators import drift_stats
from operators.drift import _RUN_CONFIG, Baseline, TenantDrift, _Batch
from tests.leaks import traced_growth
from tests.unit.test_batch_equivalence import (
    _CLOSE_EVENTS,
    _CUTS,
    _DENSE,
    _DENSE_SETTINGS,
    _dense_items,
    _drift_state,
    chunks,
    close_event_stream,
    exactly_judgeable_stream,
    same,
)
from tests.unit.test_drift import KEY, T0, TYPES, decoded, released


def _pair(drift_settings: DriftSettings, key: str) -> tuple[TenantDrift, TenantDrift]:
    return (
        TenantDrift("tenant-00", drift_settings, None, key),
        TenantDrift("tenant-00", drift_settings, None, key),
    )


def _check_batches(
    native: TenantDrift,
    python: TenantDrift,
    batches: list[list[Decoded]],
    resume: set[int],
    drift_settings: DriftSettings,
    key: str,
) -> None:
    """Both states through ``batches``, compared after each; at the indexes in ``resume`` both
    go on from their snapshots (pickled, or deep-copied as Bytewax does)."""
    for n, batch in enumerate(batches):
        if n in resume:  # both sides (a resumed state's pickle shares fewer objects)
            if n % 2:
                native, python = (pickle.loads(pickle.dumps(s)) for s in (native, python))
                native.bind(drift_settings, None, key)
                python.bind(drift_settings, None, key)
            else:
                native, python = copy.deepcopy(native), copy.deepcopy(python)
        expected = python.push_batch(batch, native=False)
        assert same(native.push_batch(batch), expected)
        assert _drift_state(native) == _drift_state(python)
        assert pickle.dumps(native) == pickle.dumps(python)  # the snapshot, byte for byte
    assert same(native.flush(), python.flush())
    assert pickle.dumps(native) == pickle.dumps(python)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_DENSE, _DENSE_SETTINGS, _CUTS, st.booleans(), st.sets(st.integers(0, 12)))
def test_the_c_path_equals_the_python_loop_for_any_input_and_split(
    specs: list[Any],
    drift_settings: DriftSettings,
    cuts: list[int],
    with_key: bool,
    resume: set[int],
) -> None:
    """Dense and sparse records, canaries, markers (valid, forged), unknown fields, late
    records, any settings: C and the Python loop give the same outputs and states."""
    key = KEY if with_key else ""
    items = _dense_items(specs)
    native, python = _pair(drift_settings, key)
    batches = chunks(items, [c * 3 // 2 for c in cuts])
    _check_batches(native, python, batches, resume, drift_settings, key)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_CLOSE_EVENTS, st.integers(0, 2**32), _CUTS, st.integers(1, 3), st.sets(st.integers(0, 12)))
def test_the_c_path_equals_the_python_loop_where_records_close_batches(
    specs: list[Any], seed: int, cuts: list[int], learn: int, resume: set[int]
) -> None:
    """The benchmarks' shape (every record a close event while learning, then extended batches
    judged through their windows; drifted stretches, late records): the same decisions."""
    drift_settings, items = close_event_stream(specs, seed, learn)
    native, python = _pair(drift_settings, KEY)
    batches = chunks(items, [c * 5 for c in cuts])
    _check_batches(native, python, batches, resume, drift_settings, KEY)


def _run(state: TenantDrift, items: list[Decoded], start: int = 0) -> tuple[int, list[Any]]:
    out: list[Any] = []
    checks = state._release_key is not None
    got = _native.drift_run(state, state.__dict__, items, start, out, _RUN_CONFIG, checks)
    return got, out


def test_it_takes_a_plain_run_whole() -> None:
    """Not a path that always hands back: plain records of the tenant go through C to the end
    (opening, joining and closing batches, releasing what they decide)."""
    drift_settings = DriftSettings(batch_size=3, reference_values=0, reference_batches=1)
    items = [decoded(0.5, n, ts=T0 + timedelta(seconds=n)) for n in range(10)]
    state = TenantDrift("tenant-00", drift_settings, None, KEY)
    got, out = _run(state, items)
    assert got == len(items)
    python = TenantDrift("tenant-00", drift_settings, None, KEY)
    assert same(out, python.push_batch(items, native=False))
    assert pickle.dumps(state) == pickle.dumps(python)


class _Sub(Decoded):
    __slots__ = ()


def _unusual(item: Decoded, at: int) -> list[tuple[str, Decoded]]:
    signal = item.signal
    fields = [getattr(item, f) for f in Decoded.__dataclass_fields__]
    odd = [
        ("unknown fields", dataclasses.replace(item, unknown_fields=("colour",))),
        (
            "canary type",
            dataclasses.replace(item, signal=dataclasses.replace(signal, type="canary")),
        ),
        (
            "other tenant",
            dataclasses.replace(item, signal=dataclasses.replace(signal, tenant_id="x")),
        ),
        ("a marker", released(item)),
        ("a forged marker", released(item, key="forged")),
        ("a subclass", _Sub(*fields)),
    ]
    if at:  # (the first record sets the event time, whatever it compares with)
        naive = dataclasses.replace(signal, ts=signal.ts.replace(tzinfo=None))
        odd.append(("a naive time", dataclasses.replace(item, signal=naive)))
    return odd


@pytest.mark.parametrize("at", [0, 3])
def test_it_leaves_an_unusual_record_to_python_having_changed_nothing(at: int) -> None:
    drift_settings = DriftSettings(batch_size=50)
    plain = [decoded(0.5, n, ts=T0 + timedelta(seconds=n)) for n in range(6)]
    for reason, odd in _unusual(plain[at], at):
        state = TenantDrift("tenant-00", drift_settings, None, KEY)
        items = [*plain[:at], odd, *plain[at + 1 :]]
        got, _ = _run(state, items[:at])
        before = pickle.dumps(state)
        got, out = _run(state, items, at)
        assert (got, out) == (at, []), reason
        assert pickle.dumps(state) == before, reason
    # Without a release key, a marker is a plain record's header: C takes it.
    state = TenantDrift("tenant-00", drift_settings, None, "")
    assert _run(state, [released(plain[0])])[0] == 1


def test_an_old_snapshots_batch_without_extended_is_read_as_not_extended() -> None:
    """A batch pickled before ``extended`` existed (the slot unset): C reads it as the loop's
    ``getattr(batch, "extended", False)`` does."""
    drift_settings = DriftSettings(batch_size=50, min_batch_size=1)
    items = [decoded(0.5, n, ts=T0 + timedelta(milliseconds=n)) for n in range(8)]
    states = _pair(drift_settings, KEY)
    for state in states:
        state.push_batch(items[:2], native=False)
        for batch in state._open.values():
            del batch.extended
    native, python = states
    assert same(native.push_batch(items[2:]), python.push_batch(items[2:], native=False))
    assert pickle.dumps(native) == pickle.dumps(python)


def test_it_refuses_a_misuse() -> None:
    state = TenantDrift("tenant-00", DriftSettings(), None, KEY)
    items = [decoded(0.5, 0)]
    attrs = state.__dict__
    with pytest.raises(TypeError):
        _native.drift_run(state, attrs, items, 0, [], _RUN_CONFIG)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        _native.drift_run(state, attrs, tuple(items), 0, [], _RUN_CONFIG, True)
    with pytest.raises(TypeError):
        _native.drift_run(state, attrs, items, 0, [], _RUN_CONFIG[:-1], True)
    swapped = (_RUN_CONFIG[1], _RUN_CONFIG[0], *_RUN_CONFIG[2:])
    with pytest.raises(TypeError):
        _native.drift_run(state, attrs, items, 0, [], swapped, True)
    with pytest.raises(ValueError):
        _native.drift_run(state, attrs, items, -1, [], _RUN_CONFIG, True)
    assert state.pending == 0


def test_the_python_loop_is_the_reference_when_c_is_absent(monkeypatch: pytest.MonkeyPatch) -> None:
    items = [decoded(0.5, n, ts=T0 + timedelta(seconds=n)) for n in range(30)]
    native, python = _pair(DriftSettings(batch_size=4, reference_values=8), KEY)
    monkeypatch.setattr(drift_module, "_drift_run", None)
    assert same(python.push_batch(items), native.push_batch(items, native=False))


def test_it_leaks_nothing() -> None:
    drift_settings = DriftSettings(batch_size=7, reference_values=20, min_batch_size=3)
    # Records that join open batches (0.1 s apart), close them by size and by time (every
    # tenth a second later), while learning and after.
    items = [
        decoded(
            random.Random(n).random(),
            n,
            type=TYPES[n % 3],
            ts=T0 + timedelta(seconds=n // 10 + n % 10 / 10),
        )
        for n in range(400)
    ]
    held = [*items, *(i.signal for i in items), *(i.signal.ts for i in items)]
    counts = [sys.getrefcount(x) for x in held]
    for _ in range(3):
        state = TenantDrift("tenant-00", drift_settings, None, KEY)
        state.push_batch(items)
        state.flush()
        del state
    gc.collect()
    assert [sys.getrefcount(x) for x in held] == counts

    def caches_cleared() -> None:  # the statistics' caches by id (bounded, not leaks)
        drift_stats._ARRAYS.clear()
        drift_stats._CUTS.clear()
        drift_stats._REF_CUTS.clear()
        gc.collect()

    def rounds(n: int) -> None:
        for _ in range(n):
            state = TenantDrift("tenant-00", drift_settings, None, KEY)
            state.push_batch(items)
            state.flush()
            del state

    grown = traced_growth(rounds, (3, 60), caches_cleared)
    # (a leaked _Entry or _Batch per record or batch: over 1 MB in 60 rounds)
    assert grown < 16_000, grown


def test_a_callbacks_error_propagates_as_the_loops() -> None:
    """A close that raises (here: a baseline-free type whose check fails) raises out of
    push_batch from C as from the loop, with the same state left behind."""
    drift_settings = DriftSettings(batch_size=2, reference_values=0, reference_batches=1)
    items = [decoded(0.5, n, ts=T0 + timedelta(seconds=n)) for n in range(4)]
    states = _pair(drift_settings, KEY)
    errors = []
    for native, state in zip((True, False), states, strict=True):

        def boom(key: Any, batch: _Batch, *, recompute: bool = True) -> None:
            raise RuntimeError("close")

        state._close = boom  # type: ignore[method-assign]
        with pytest.raises(RuntimeError) as info:
            state.push_batch(items, native=native)
        errors.append(str(info.value))
        del state._close
    assert errors[0] == errors[1]
    assert pickle.dumps(states[0]) == pickle.dumps(states[1])


def test_an_extended_batch_closes_when_its_window_makes_it_judgeable_exactly() -> None:
    """``size + window == min_batch_size`` exactly closes an extended batch, in C as in the
    loop (a case too narrow for the property tests to find by chance): the scenario of
    ``test_drift_inline_path_leaves_a_batch_judgeable_through_its_window_to_the_reference``."""
    drift_settings, items = exactly_judgeable_stream()
    native, python = _pair(drift_settings, KEY)
    out = native.push_batch(items)
    assert same(out, python.push_batch(items, native=False))
    # The batch of 34-47 closed at 47 and let its records out; 48 opened the next one.
    assert [d.provenance.kafka_offset for d in out][-1] == len(items) - 2
    assert native.pending == 1
    assert pickle.dumps(native) == pickle.dumps(python)


# ------------------------------------------ the snapshot's deep copy (Bytewax, every epoch)


def _generic_deepcopy(state: TenantDrift) -> TenantDrift:
    """``copy.deepcopy`` as it was before _Entry, _Batch and _TypeState had their own
    ``__deepcopy__``: the generic path (``__reduce_ex__``, ``_reconstruct``)."""
    with pytest.MonkeyPatch.context() as patch:
        for cls in (drift_module._Entry, drift_module._Batch, drift_module._TypeState):
            patch.delattr(cls, "__deepcopy__")
        return copy.deepcopy(state)


def _mutables(state: TenantDrift) -> list[Any]:
    """The mutable objects a TenantDrift holds."""
    held: list[Any] = [state._fifo, state._open, state._types, *state._fifo]
    for batch in state._open.values():
        held += [batch, batch.entries, batch.values]
    for kind in state._types.values():
        held += [kind, kind.learning, kind.window]
    return held


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_DENSE, _DENSE_SETTINGS, st.integers(0, 120))
def test_the_snapshot_copy_is_the_generic_deepcopy(
    specs: list[Any], drift_settings: DriftSettings, cut: int
) -> None:
    """The state's deep copy (its classes' own __deepcopy__) against the generic one: the same
    pickle bytes (so the same sharing inside), nothing mutable shared with the original, the
    copy's held entries the ones its open batches hold, and both go on alike."""
    items = _dense_items(specs)
    state = TenantDrift("tenant-00", drift_settings, None, KEY)
    state.push_batch(items[:cut])
    if cut % 3 == 0:  # a batch from a snapshot older than `extended`
        for batch in state._open.values():
            del batch.extended
    fast, slow = copy.deepcopy(state), _generic_deepcopy(state)
    assert pickle.dumps(fast) == pickle.dumps(slow)
    if cut % 3:
        assert _drift_state(fast) == _drift_state(state)
    assert not {id(x) for x in _mutables(fast)} & {id(x) for x in _mutables(state)}
    held = {id(e) for e in fast._fifo}
    assert all(id(e) in held for b in fast._open.values() for e in b.entries)
    for other in (fast, slow):
        other._release_key = state._release_key
    rest = items[cut:]
    expected = state.push_batch(rest, native=False)
    assert same(fast.push_batch(rest), expected)
    assert same(slow.push_batch(rest, native=False), expected)
    assert pickle.dumps(fast) == pickle.dumps(slow)


def test_the_snapshot_copy_of_odd_values_is_the_generic_deepcopy() -> None:
    """Values that are not floats (an int, a list) and a window that is not a deque of
    samples take deepcopy's path: still the generic copy."""
    state = TenantDrift("tenant-00", DriftSettings(batch_size=50), None, KEY)
    state.push_batch([decoded(0.5, n, ts=T0 + timedelta(milliseconds=n)) for n in range(3)])
    (batch,) = state._open.values()
    batch.values[1] = [7]
    state._types["latency"] = drift_module._TypeState(None)
    state._types["latency"].learning = [1, 2.5]
    state._types["latency"].window = [(0.1, 0.2)]  # type: ignore[assignment]
    fast, slow = copy.deepcopy(state), _generic_deepcopy(state)
    assert pickle.dumps(fast) == pickle.dumps(slow)
    assert fast._open["latency"].values[1] is not batch.values[1]
    assert fast._types["latency"].window is not state._types["latency"].window


def test_a_passed_close_keeps_the_first_of_equal_deadlines_as_min_does() -> None:
    """The next deadline after a passed close is min()'s: the first open batch's of equal
    deadlines (equal datetimes, distinct objects), which the snapshot's pickle tells apart."""
    drift_settings = DriftSettings(
        batch_size=3, min_batch_size=3, batch_seconds=60.0, window_batches=2, bins=4
    )
    refs = {"tenant-00": {kind: [i / 40 for i in range(40)] for kind in TYPES}}
    baseline = Baseline.from_mapping(refs, drift_settings.bins)
    states = [TenantDrift("tenant-00", drift_settings, baseline, KEY) for _ in range(2)]
    items = [
        decoded(0.5, 0, type=TYPES[0]),  # opens a batch due at T0 + 60 s
        decoded(0.5, 1, type=TYPES[1]),  # another, due at an equal, distinct T0 + 60 s
        # the third type's first batch (its state made by _decide), then a second one: the
        # close that C takes, the next deadline recomputed over the first two
        *(decoded(v, 2 + i, type=TYPES[2]) for i, v in enumerate((0.2, 0.5, 0.8) * 2)),
    ]
    outs = [states[0].push_batch(items), states[1].push_batch(items, native=False)]
    assert same(outs[0], outs[1])
    native, python = states
    assert native._next_deadline is native._open[TYPES[0]].deadline
    assert python._next_deadline is python._open[TYPES[0]].deadline
    assert len(native._types[TYPES[2]].window) == 2  # both batches passed, into its window
    assert pickle.dumps(native) == pickle.dumps(python)
