"""The score's changes coalesced per event-time tick (issue 15, point 3).

The law: per tenant, the operator's stream is the last change of each tick of the per-record
reference stream (:class:`operators.score.TenantScore`), whatever the input's order, its split
into batches and epochs, a crash and resume in between, or a snapshot taken before coalescing.
"""

from __future__ import annotations

import copy
import itertools
import pickle
from datetime import UTC, datetime, timedelta
from pathlib import Path

import bytewax.operators as op
import hypothesis.strategies as st
import pytest
from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, TestingSource, run_main
from hypothesis import HealthCheck, given, settings

from core.records import Decoded, PolicyTags, Provenance, ScoreChange, Signal, Tagged
from core.settings import ScoreSettings, SettingError, Settings
from operators.score import TenantScore, TickScore, _build, score
from tests.runs import pairs, random_runs
from tests.score_ticks import closed_by_horizons, last_of_each_tick, tick_of, with_horizons

START = datetime(2026, 1, 1, tzinfo=UTC)
WINDOW = 100.0
TAGS = PolicyTags("benchmarking", "standard-365d", "Restricted-TOS", "US")


def _tagged(ms: int, value: float, weight: float | None, offset: int, tenant: str = "t0") -> Tagged:
    """A tagged signal ``ms`` milliseconds after START."""
    signal = Signal(
        tenant, f"s{offset}", "latency", value, weight, "a", START + timedelta(milliseconds=ms)
    )
    provenance = Provenance("coherence.signals.v1", 0, offset, 1, "h")
    return Tagged(Decoded(signal, provenance), TAGS, "policy-v", f"prov-{offset}")


def _settings(tick: float, close_on: str = "horizon") -> ScoreSettings:
    return ScoreSettings(window_seconds=WINDOW, tick_seconds=tick, close_on=close_on)


def _reference(items: list[Tagged]) -> list[ScoreChange]:
    state = TenantScore(_settings(0.0))
    return [c for i in items if (c := state.add(i)) is not None]


_value = st.sampled_from([0.0, 1.0, 0.5, 0.74, 0.75, 0.49]) | st.floats(0, 1)
_weight = st.none() | st.sampled_from([0.0, 1.0, 3.0]) | st.floats(0, 1e3)
# (ms after START, value, weight): 0..400 s in steps a tick may or may not separate, out of
# order (ticks already closed, inside the window), late (before it).
_signal = st.tuples(st.integers(0, 400_000).map(lambda ms: ms - ms % 250), _value, _weight)
_tick = st.sampled_from([0.0, 0.25, 1.0, 3.0, 7.5, 60.0, 1000.0])


def _items(signals: list[tuple[int, float, float | None]]) -> list[Tagged]:
    return [_tagged(ms, v, w, offset=n) for n, (ms, v, w) in enumerate(signals)]


def _chunks(items: list[Tagged], cuts: list[int]) -> list[list[Tagged]]:
    bounds = sorted({0, len(items), *(c % (len(items) + 1) for c in cuts)})
    return [items[a:b] for a, b in itertools.pairwise(bounds)]


@settings(max_examples=400, deadline=None)
@given(st.lists(_signal, max_size=60), _tick, st.lists(st.integers(0, 60), max_size=8))
def test_the_coalesced_stream_is_the_last_change_of_each_tick_for_any_batching(
    signals: list[tuple[int, float, float | None]], tick: float, cuts: list[int]
) -> None:
    items = _items(signals)
    state = TickScore(_settings(tick))
    out: list[ScoreChange] = []
    for chunk in _chunks(items, cuts):
        out += state.add(chunk)
    out += state.flush()
    assert out == last_of_each_tick(_reference(items), tick)
    assert state.flush() == []
    # At most one change per tick, in order; seq and offsets increase.
    if tick:
        ticks = [tick_of(c.updated_at, tick) for c in out]
        assert ticks == sorted(set(ticks))
    assert [c.seq for c in out] == sorted({c.seq for c in out})
    offsets = [c.provenance.kafka_offset for c in out]
    assert offsets == sorted(set(offsets))


@settings(max_examples=300, deadline=None)
@given(st.lists(_signal, max_size=50), _tick, st.integers(0, 50), st.booleans(), st.booleans())
def test_a_snapshot_resumes_as_if_uninterrupted(
    signals: list[tuple[int, float, float | None]],
    tick: float,
    cut: int,
    pickled: bool,
    old_format: bool,
) -> None:
    """The pending change travels in the snapshot. ``old_format``: the snapshot of the
    per-record operator (a bare TenantScore, taken at a point where the coalesced stream had
    caught up with it: tick 0) resumes under coalescing."""
    items = _items(signals)
    cut = min(cut, len(items))
    expected_every = _reference(items)
    if old_format:
        reference = TenantScore(_settings(0.0))
        before = [c for i in items[:cut] if (c := reference.add(i)) is not None]
        snap: TickScore | TenantScore = reference
    else:
        state = TickScore(_settings(tick))
        before = state.add(items[:cut])
        snap = state
    resumed_from = pickle.loads(pickle.dumps(snap)) if pickled else copy.deepcopy(snap)
    del snap  # the crash
    resumed = TickScore.resume(resumed_from, _settings(tick))
    after = resumed.add(items[cut:]) + resumed.flush()
    if old_format:
        seen = len(before)
        assert before == expected_every[:seen]
        assert after == last_of_each_tick(expected_every[seen:], tick)
    else:
        assert before + after == last_of_each_tick(expected_every, tick)


def test_a_status_that_flips_and_back_inside_a_tick_is_not_published() -> None:
    items = [
        _tagged(0, 0.8, 1.0, 0),  # HEALTHY
        _tagged(100, 0.2, 10.0, 1),  # CRITICAL, same tick
        _tagged(200, 1.0, 100.0, 2),  # HEALTHY again, same tick
        _tagged(1_000, 0.0, 1000.0, 3),  # CRITICAL in the next tick: closes the first
    ]
    state = TickScore(_settings(1.0))
    out = state.add(items)
    assert [(c.status, c.seq, c.provenance_id) for c in out] == [("HEALTHY", 3, "prov-2")]
    [last] = state.flush()
    assert (last.status, last.seq) == ("CRITICAL", 4)


def test_an_out_of_order_signal_belongs_to_the_tick_of_the_tenants_event_time() -> None:
    state = TickScore(_settings(1.0))
    assert state.add([_tagged(5_000, 0.5, 1.0, 0)]) == []
    # ts in tick 2, long closed; W stays in tick 5: its change replaces tick 5's pending one.
    assert state.add([_tagged(2_000, 1.0, 1.0, 1)]) == []
    [change] = state.flush()
    assert change.updated_at == START + timedelta(seconds=5)
    assert (change.seq, change.provenance_id, change.score) == (2, "prov-1", 0.75)


def test_a_signal_that_changes_nothing_still_closes_the_tick() -> None:
    state = TickScore(_settings(1.0))
    assert state.add([_tagged(0, 0.5, 1.0, 0)]) == []
    [change] = state.add([_tagged(1_500, 0.5, 1.0, 1)])  # same score: no change of its own
    assert change.seq == 1
    assert state.flush() == []


def test_the_tick_setting() -> None:
    assert Settings().score.tick_seconds == 0.1
    assert Settings().score.close_on == "horizon"
    with pytest.raises(SettingError, match="close_on"):
        Settings().with_changes("score", close_on="wall_clock")
    with pytest.raises(SettingError, match="tick_seconds"):
        Settings().with_changes("score", tick_seconds=-1)
    with pytest.raises(ValueError, match="tick_seconds"):
        TickScore(_settings(1e-7))


# --- closed by the drift step's horizon --------------------------------------------------------

#: Per signal: no horizon, or one this many ms ahead of the newest ts so far.
_ahead = st.none() | st.integers(0, 3_000).map(lambda ms: ms - ms % 125)
_with_ahead = st.tuples(_signal, _ahead)


def _horizoned(pairs: list[tuple[tuple[int, float, float | None], int | None]]) -> list[Tagged]:
    return with_horizons(_items([p for p, _ in pairs]), [a for _, a in pairs])


@settings(max_examples=400, deadline=None)
@given(st.lists(_with_ahead, max_size=60), _tick, st.lists(st.integers(0, 60), max_size=8))
def test_horizons_close_ticks_as_the_law_says_for_any_batching(
    pairs: list[tuple[tuple[int, float, float | None], int | None]],
    tick: float,
    cuts: list[int],
) -> None:
    items = _horizoned(pairs)
    per_item, at_end = closed_by_horizons(items, _settings(tick))
    # Per record: each change leaves right after the item that closes its tick.
    one = TickScore(_settings(tick))
    assert [one.add([i]) for i in items] == per_item
    assert one.flush() == at_end
    # Any batching: the same stream.
    state = TickScore(_settings(tick))
    out: list[ScoreChange] = []
    for chunk in _chunks(items, cuts):
        out += state.add(chunk)
    out += state.flush()
    expected = [c for changes in per_item for c in changes] + at_end
    assert out == expected
    # A subsequence of the per-record stream, ending with its last change; seq increases.
    every = _reference(items)
    assert [c.seq for c in out] == sorted({c.seq for c in out})
    assert all(every[c.seq - 1] == c for c in out)
    assert out[-1:] == every[-1:]
    # close_on = "signal": horizons are ignored (the stream before horizons existed).
    signal_only = TickScore(_settings(tick, "signal"))
    assert signal_only.add(items) + signal_only.flush() == last_of_each_tick(every, tick)


@settings(max_examples=300, deadline=None)
@given(st.lists(_with_ahead, max_size=50), _tick, st.integers(0, 50), st.booleans())
def test_a_snapshot_with_a_horizon_resumes_as_if_uninterrupted(
    pairs: list[tuple[tuple[int, float, float | None], int | None]],
    tick: float,
    cut: int,
    pickled: bool,
) -> None:
    items = _horizoned(pairs)
    cut = min(cut, len(items))
    state = TickScore(_settings(tick))
    before = state.add(items[:cut])
    snap = pickle.loads(pickle.dumps(state)) if pickled else copy.deepcopy(state)
    del state  # the crash
    resumed = TickScore.resume(snap, _settings(tick))
    after = resumed.add(items[cut:]) + resumed.flush()
    per_item, at_end = closed_by_horizons(items, _settings(tick))
    assert before + after == [c for changes in per_item for c in changes] + at_end


def test_a_snapshot_from_before_horizons_resumes() -> None:
    """A TickScore pickled before the horizon existed (no ``_open_from``, no ``_by_horizon``)
    resumes with no tick closed by a horizon, and takes horizons from then on."""
    state = TickScore(_settings(1.0))
    assert state.add([_tagged(500, 0.5, 1.0, 0)]) == []
    old = state.__getstate__()
    del old["_open_from"], old["_by_horizon"]
    restored = TickScore.__new__(TickScore)
    restored.__setstate__(old)
    resumed = TickScore.resume(restored, _settings(1.0))
    [change] = resumed.add(with_horizons([_tagged(600, 1.0, 1.0, 1)], [1_000]))
    assert (change.seq, change.provenance_id) == (2, "prov-1")


def test_a_horizon_closes_the_tick_without_waiting_for_the_next_signal() -> None:
    state = TickScore(_settings(1.0))
    # W at 0.9 s; the drift step has seen 1.2 s (a held record): tick 0 closes now.
    [change] = state.add(with_horizons([_tagged(900, 0.5, 1.0, 0)], [300]))
    assert (change.seq, change.updated_at) == (1, START + timedelta(milliseconds=900))
    # A horizon in the open tick closes it too: the release it ended let out the tick so far.
    [change] = state.add(with_horizons([_tagged(1_100, 1.0, 1.0, 1)], [0]))
    assert change.seq == 2
    # Now tick 2 is the first open one (tick 1 is published): a change at W 1.15 s belongs to
    # it, and a horizon still in tick 1 does not close it (at most one change per tick of the
    # drift step's event time).
    assert state.add(with_horizons([_tagged(1_150, 0.0, 1.0, 2)], [0])) == []
    assert state.add(with_horizons([_tagged(1_900, 0.0, 1.0, 3)], [0])) == []
    [change] = state.add(with_horizons([_tagged(2_050, 1.0, 1.0, 4)], [0]))  # H in tick 2
    assert (change.seq, change.provenance_id) == (5, "prov-4")
    assert state.flush() == []


def test_a_change_in_a_tick_a_horizon_closed_belongs_to_the_first_open_tick() -> None:
    """The rule that keeps at most one change per tick: tick 0 was published at the horizon;
    the held record released after it (ts 0.95 s, W still 0.95 s) changes the score in tick 1,
    the first open one, and is published when tick 1 closes, not as a second change of tick 0."""
    state = TickScore(_settings(1.0))
    [first] = state.add(with_horizons([_tagged(900, 0.5, 1.0, 0)], [300]))
    assert tick_of(first.updated_at, 1.0) == tick_of(START, 1.0)
    assert state.add([_tagged(950, 1.0, 1.0, 1)]) == []  # W in tick 0, closed: tick 1's
    assert state.add([_tagged(1_500, 1.0, 1.0, 2)]) == []  # tick 1 again (W moves into it)
    [late] = state.add([_tagged(2_000, 1.0, 1.0, 3)])  # W into tick 2: tick 1 closes
    assert (late.seq, late.provenance_id) == (3, "prov-2")
    # Without the horizon the same signals give tick 0 two changes folded into one (seq 2).
    plain = TickScore(_settings(1.0, "signal"))
    items = with_horizons(
        [
            _tagged(m, v, 1.0, n)
            for n, (m, v) in enumerate([(900, 0.5), (950, 1.0), (1_500, 1.0), (2_000, 1.0)])
        ],
        [300, None, None, None],
    )
    assert [c.seq for c in plain.add(items)] == [2, 3]


# --- in the engine: batches, epochs, a crash and a resume ------------------------------------


def _flow(
    items: list[object], out: list[tuple[str, ScoreChange]], tick: float, batch: int
) -> Dataflow:
    flow = Dataflow("score_ticks_test")
    up = op.input("in", flow, TestingSource(items, batch_size=batch))
    keyed = random_runs("by_tenant", up, lambda i: i.signal.tenant_id, seed=batch)
    op.output("out", pairs("out_pairs", score("score", keyed, _settings(tick))), TestingSink(out))
    return flow


def _two_tenants(
    signals: list[tuple[int, float, float | None]], ahead: list[int | None] | None = None
) -> list[Tagged]:
    """The signals alternately of tenants a and b; ``ahead``: each one's horizon (drift's)."""
    items = [
        _tagged(ms, v, w, offset=n, tenant=("a", "b")[n % 2])
        for n, (ms, v, w) in enumerate(signals)
    ]
    if ahead is None:
        return items
    by_offset: dict[int, Tagged] = {}
    for tenant in ("a", "b"):
        mine = [i for i in items if i.signal.tenant_id == tenant]
        marks = [ahead[i.provenance.kafka_offset] for i in mine]
        by_offset.update((i.provenance.kafka_offset, i) for i in with_horizons(mine, marks))
    return [by_offset[n] for n in range(len(items))]


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    st.lists(_with_ahead, min_size=1, max_size=60),
    _tick,
    st.integers(1, 9),
    st.integers(0, 60),
)
def test_in_the_engine_any_batching_and_a_crash_give_the_same_changes(
    tmp_path_factory: pytest.TempPathFactory,
    pairs: list[tuple[tuple[int, float, float | None], int | None]],
    tick: float,
    batch: int,
    crash_at: int,
) -> None:
    """With drift horizons on some records (the law: ``closed_by_horizons``)."""
    items = _two_tenants([p for p, _ in pairs], [a for _, a in pairs])
    path: Path = tmp_path_factory.mktemp("recovery")
    init_db_dir(path, 1)
    recovery = RecoveryConfig(str(path), timedelta(0))
    crash_at = min(crash_at, len(items))
    crashing: list[object] = [*items[:crash_at], TestingSource.ABORT(), *items[crash_at:]]
    out: list[tuple[str, ScoreChange]] = []
    # An epoch per batch: the resume starts right after the last snapshot.
    run_main(
        _flow(crashing, out, tick, batch), epoch_interval=timedelta(0), recovery_config=recovery
    )
    run_main(
        _flow(crashing, out, tick, batch), epoch_interval=timedelta(0), recovery_config=recovery
    )
    for tenant in ("a", "b"):
        mine = [i for i in items if i.signal.tenant_id == tenant]
        per_item, at_end = closed_by_horizons(mine, _settings(tick))
        expected = [c for changes in per_item for c in changes] + at_end
        assert [c for k, c in out if k == tenant] == expected


#: Signals on a coarse grid: many land exactly on the window's edge (evicted, or late).
_on_edges = st.tuples(
    st.tuples(st.integers(0, 16).map(lambda k: k * 25_000), _value, _weight), _ahead
)


@settings(max_examples=400, deadline=None)
@given(
    st.lists(_with_ahead, max_size=60) | st.lists(_on_edges, max_size=40),
    _tick,
    st.lists(st.integers(0, 60), max_size=8),
)
def test_add_keeps_the_window_exactly_as_fold_per_record(
    pairs: list[tuple[tuple[int, float, float | None], int | None]],
    tick: float,
    cuts: list[int],
) -> None:
    """TickScore.add runs TenantScore.fold inline (issue 15): after every batch its window
    (the exact sums, the heap, the last change, seq) is the state fold leaves per record, and
    every change it publishes is one fold made (so evictions, late signals, zero weights and
    the status thresholds agree); the change waiting for its tick is the one fold captured,
    pickled byte for byte as it (the recovery snapshot)."""
    items = _horizoned(pairs)
    state = TickScore(_settings(tick))
    reference = TenantScore(_settings(tick))
    folded: dict[int, ScoreChange] = {}
    captured: dict[int, tuple[object, ...]] = {}
    done = 0
    for chunk in _chunks(items, cuts):
        for item in items[done : done + len(chunk)]:
            capture = reference.fold(item)
            if capture is not None:
                change = _build(capture)
                folded[change.seq] = change
                captured[change.seq] = capture
        done += len(chunk)
        for change in state.add(chunk):
            assert folded[change.seq] == change
            assert repr(folded[change.seq]) == repr(change)
        assert state.reference.__getstate__() == reference.__getstate__()
        assert pickle.dumps(state.reference) == pickle.dumps(reference)
        pending = state.__getstate__()["_pending"]
        if pending is not None:
            assert pickle.dumps(pending) == pickle.dumps(captured[pending[-1]])
    # (the changes published at the end were folded too)
    assert all(folded[c.seq] == c for c in state.flush())


def test_add_raises_on_a_negative_weight_and_keeps_what_it_had_taken() -> None:
    """A signal fold refuses (weight < 0) raises from add too, after the signals before it
    were taken: the state is fold's after them, and the next batch goes on from there."""
    items = _items([(0, 0.5, 1.0), (250, 0.9, 2.0)])
    bad = _tagged(500, 0.1, -1.0, offset=2)
    state = TickScore(_settings(0.0))
    reference = TenantScore(_settings(0.0))
    expected = [c for i in items if (c := reference.add(i)) is not None]
    with pytest.raises(ValueError, match="weight must be >= 0"):
        state.add([*items, bad])
    assert state.reference.__getstate__() == reference.__getstate__()
    assert len(expected) == 2
    later = _tagged(750, 0.2, 1.0, offset=3)
    assert state.add([later]) == [reference.add(later)]
