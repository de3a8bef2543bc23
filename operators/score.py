"""score: each tenant's coherence score over a sliding window of event time, computed exactly.

Contract, per tenant (the step is keyed by ``tenant_id``; each tenant has one
:class:`TenantScore`):

- ``W`` is the tenant's newest ``signal.ts`` seen; the window holds the signals with ``ts`` in
  ``(W - window, W]``. Event time only, never the wall clock, so a replay reproduces every score.
- The score is the weighted mean of ``value`` over the window; a ``None`` weight counts as 1.0.
  When the window's total weight is 0 (every weight in it is 0.0) the score is the *unweighted*
  mean of its values, so a tenant sending only zero-weight signals still has a defined score.
- Status: ``HEALTHY`` if score >= ``healthy_at``, ``WARN`` if >= ``warn_at``, else ``CRITICAL``.
- A signal with ``ts <= W - window`` is late: it does not enter the window and changes nothing.
  Signals out of order inside the window are fine; eviction pops a heap ordered by ``ts``.
- A *change* is due when the exact score or the status changed: :meth:`TenantScore.add` returns
  it as a :class:`~core.records.ScoreChange` numbered ``seq`` = 1, 2, ... per tenant. That
  per-record stream is the reference.

Coalescing per tick (what the operator emits; :class:`TickScore`). ``settings.tick_seconds``
(``T``, default 0.1 s; 0: the per-record stream itself) cuts event time into ticks
``[k T, (k + 1) T)`` aligned on the Unix epoch. A change belongs to the tick of the tenant's event
time ``W`` when it happened (its ``updated_at``), not of the signal's own ``ts``, unless that
tick is already closed (below): then to the first tick still open. The operator emits, per
tenant, **the last change of each tick** of the per-record stream, unchanged: same score,
status, ``updated_at``, window, provenance (the signal that made that last change) and ``seq``
(so ``seq`` keeps increasing but has gaps: the changes folded away keep their numbers).

- Decided by the tenant's input alone. The open tick closes, and its change is emitted, when the
  tenant's own next signal moves ``W`` into a later tick (whether or not that signal changes
  the score), or, with ``settings.close_on = "horizon"`` (the default), when a record carries a
  drift horizon ``H`` (:attr:`~core.records.Decoded.horizon`: the last passed record of a drift
  release) and the open tick is not after ``tick(H)``, after that record's own change. Or at the
  end of a bounded input (``on_eof``). Never by batch, fetch, epoch or wall-clock timing: ``H``
  is the tenant's event time as the drift step had seen it when it took the input record that
  caused the release, a function of the tenant's input sequence (:mod:`operators.drift`; its
  idle flush, in tail mode only, is the documented wall-clock exception). So a replay, any
  batching and any split into epochs give the same stream; the change waiting for its tick to
  close, and where the first open tick starts, are in the recovery snapshot.
- Why the horizon: the drift step lets a tenant's records out in releases (its micro-batches
  close by event time, ``drift.batch_seconds``), so with ticks closed by signals only, the last
  tick of a release waited for the tenant's next release (0.5 s of event time) before its change
  left: about a tenth of the signals (``benchmarks/score_horizon.py``). A release's last record
  marks the point where the drift step has let out everything it can decide; the tick that
  record is in closes there, and whatever belongs to it later (records still held, later
  input) counts in the next tick. ``H`` bounds it: a tick after ``tick(H)`` (the first open tick
  can run ahead of ``W`` when releases come faster than ticks) is not closed by a horizon, so
  there is still at most one change per tick of the drift step's event time. Closing every
  tick before ``tick(H)`` instead (the first open tick jumping to ``tick(H)``) was measured and
  dropped: ``H`` is about ``batch_seconds`` ahead of the records a release lets out, so the whole
  next release fell into ``tick(H)`` and waited for the release after it (p50 0.5 s). With
  ``close_on = "signal"`` horizons are ignored (the rule before them: a replay of a range landed
  before the setting existed computes so, :mod:`core.output_settings`).
- **At most one change per tenant per tick.** A closed tick is never reopened: ``W`` never moves
  back, and a tick a horizon closed stays closed. A change whose ``W`` is in a closed tick (a
  signal out of order, a record the drift step still held when the horizon closed its tick,
  later input with ``ts`` in it) belongs to **the first open tick**, the one after the last
  closed, and is published with that tick's last change (its ``updated_at`` stays its ``W``).
  A signal out of order inside the window is scored as always; a late signal (before the
  window) changes nothing, as above. A horizon lost with a record dropped before the score step
  (a duplicate, a canary), or a release with no passed record, closes nothing: that tick waits
  for the next signal or horizon, as without horizons.
- Status changes are changes: a tick whose last change flips the status publishes it; a status
  that flips and flips back inside one tick is not published (the score is, if it moved).
- Order: a subsequence of the per-record stream, so ``seq``, ``updated_at`` and each Kafka
  partition's offsets still increase per tenant: the stores' ``seq`` guards and the lake's
  ledger lanes keep working, and a store gets one write per emitted change.
- An idle tenant's last tick waits for its next signal in a later tick, or the end of a bounded
  run (``igflow run`` without ``--tail``, a replay, a derivation). A bounded run closes every open
  tick at its end; a later run resumed from its snapshot that continues the same tick publishes a
  second change for it (newer ``seq``: the stores take it).
- Tracing: a published change that carries a sampled signal's trace records a zero-length
  ``score publish`` span when it leaves the step, so a trace shows how long its tick held it
  (``benchmarks/latency.py`` reports it after the drift decision).

Exactness and rounding. Every double is a dyadic rational ``n / 2**e``, so the window's sums
(of ``value * weight``, of ``weight`` and of ``value``) are kept exactly as Python integers over a
power-of-two denominator per sum; a signal leaving the window is subtracted exactly, so the sums
never drift however long the stream. The denominators grow to the largest exponent seen (at
most ``2**1074`` per factor; typically ``2**55``), keeping the integers a few hundred bits: about
four times faster than :class:`fractions.Fraction` sums, which reduce a gcd at every step.

- ``ScoreChange.score`` is the exact rational correctly rounded to the nearest double (integer
  true division is correctly rounded in CPython), so it equals ``float(Fraction(...))`` of the
  brute-force mean.
- The status compares the exact rational with each threshold read as the exact decimal it is
  written as (``Fraction(str(0.75)) == 3/4``), not with the double nearest to it.
- The Postgres read model stores ``NUMERIC(5,2)``: :func:`score_decimal` rounds the exact value
  (:attr:`TenantScore.exact`) half-even to two places. Given a ``ScoreChange`` it can only round
  the double, which differs from the exact rounding when the exact score is a decimal tie such as
  ``0.165`` (exact: ``0.16``; its double ``0.16500000000000000777``: ``0.17``).
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import heapq
import sys
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import operator
from bytewax.operators import StatefulBatchLogic

from core import _native, metrics, tracing
from core.records import (
    Decoded,
    Provenance,
    ScoreChange,
    Signal,
    Tagged,
    slot_descriptors,
    slot_maker,
)
from core.settings import ScoreSettings
from operators.batching import Runs, run_builder

__all__ = ["Status", "TenantScore", "TickScore", "round_half_even", "score", "score_decimal"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

#: One signal in the window: ``(ts in microseconds, value numerator, value exponent, weight
#: numerator, weight exponent)``: ``value = vn / 2**ve``, ``weight = wn / 2**we``.
_Entry = tuple[int, int, int, int, int]

#: A change as :meth:`TenantScore.fold` captures it, before it is built into a ScoreChange:
#: ``(tenant_id, provenance, provenance_id, num, den, status, W as it was, window count, sum_w,
#: ew, seq)``. Capturing costs a tuple; building (two divisions, the 2-place rounding, the
#: record) is paid only for the changes published. (Not the Decoded: its raw bytes would ride
#: in every snapshot.)
_Change = tuple[str, Provenance, str, int, int, "Status", datetime, int, int, int, int]


class Status(enum.StrEnum):
    """A tenant's health, from its score."""

    HEALTHY = "HEALTHY"
    WARN = "WARN"
    CRITICAL = "CRITICAL"


def _dyadic(x: float) -> tuple[int, int]:
    """``(n, e)`` with ``x == n / 2**e`` exactly (``e >= 0``)."""
    n, d = x.as_integer_ratio()
    return n, d.bit_length() - 1


class TenantScore:
    """The coherence score of one tenant over its event-time window (engine independent).

    Times are kept as integer microseconds; ``settings.window_seconds`` must be positive.
    Survives ``copy.deepcopy`` and ``pickle`` (Bytewax snapshots it for recovery).

    Precondition (the validate step's contract): ``value`` and ``weight`` are finite and
    ``weight >= 0``.
    """

    __slots__ = (
        "_count",
        "_ev",
        "_ew",
        "_healthy",
        "_heap",
        "_last",
        "_newest",
        "_newest_ts",
        "_seq",
        "_sum_v",
        "_sum_vw",
        "_sum_w",
        "_warn",
        "_window",
    )

    def __init__(self, settings: ScoreSettings) -> None:
        window = round(settings.window_seconds * 1_000_000)
        if window <= 0:
            msg = f"window_seconds must be positive, got {settings.window_seconds}"
            raise ValueError(msg)
        self._window = window
        healthy = Fraction(str(settings.healthy_at))
        warn = Fraction(str(settings.warn_at))
        self._healthy = (healthy.numerator, healthy.denominator)
        self._warn = (warn.numerator, warn.denominator)
        #: ``W`` in microseconds and as the signal carried it; ``None`` before the first signal.
        self._newest: int | None = None
        self._newest_ts: datetime | None = None
        self._heap: list[_Entry] = []
        self._count = 0
        #: Exponents of the denominators: ``sum_v / 2**ev``, ``sum_w / 2**ew``,
        #: ``sum_vw / 2**(ev + ew)``. They only grow (bounded by 1074 each).
        self._ev = 0
        self._ew = 0
        self._sum_v = 0
        self._sum_w = 0
        self._sum_vw = 0
        #: The last emitted ``(numerator, denominator, status)``, and how many were emitted.
        self._last: tuple[int, int, Status] | None = None
        self._seq = 0

    def __len__(self) -> int:
        """Signals in the window."""
        return self._count

    @property
    def updated_at(self) -> datetime | None:
        """``W``, the end of the window (``None`` before the first signal)."""
        return self._newest_ts

    @property
    def exact(self) -> Fraction | None:
        """The current score as an exact rational (``None`` before the first signal)."""
        if self._count == 0:
            return None
        num, den = self._rational()
        return Fraction(num, den)

    @property
    def status(self) -> Status | None:
        """The current status (``None`` before the first signal)."""
        return None if self._count == 0 else self._status(*self._rational())

    @property
    def window_weight(self) -> Fraction:
        """The exact total weight of the window."""
        return Fraction(self._sum_w, 1 << self._ew)

    def add(self, item: Tagged) -> ScoreChange | None:
        """Take one signal; the change it caused, or ``None`` if score and status are unchanged."""
        change = self.fold(item)
        return None if change is None else _build(change)

    def fold(self, item: Tagged) -> _Change | None:
        """:meth:`add`, the change captured but not yet built (:func:`_build` builds it).

        :meth:`_evict` is called only when something is due to leave."""
        decoded = item.decoded  # (not the properties of Tagged: one call fewer each)
        signal = decoded.signal
        at = signal.ts
        ts = (at - _EPOCH) // _MICROSECOND
        newest = self._newest
        window = self._window
        if newest is not None and ts <= newest - window:
            return None  # late: before the window, it would leave at once
        weight = signal.weight
        if weight is None:
            weight = 1.0
        elif weight < 0:
            msg = "weight must be >= 0"
            raise ValueError(msg)
        # _dyadic, inline: value = vn / 2**ve, weight = wn / 2**we exactly
        vn, vd = signal.value.as_integer_ratio()
        ve = vd.bit_length() - 1
        wn, wd = weight.as_integer_ratio()
        we = wd.bit_length() - 1
        ev, ew = self._ev, self._ew
        if ve > ev:
            shift = ve - ev
            self._sum_v <<= shift
            self._sum_vw <<= shift
            self._ev = ev = ve
        if we > ew:
            shift = we - ew
            self._sum_w <<= shift
            self._sum_vw <<= shift
            self._ew = ew = we
        self._sum_v += vn << (ev - ve)
        self._sum_w += wn << (ew - we)
        self._sum_vw += (vn * wn) << (ev + ew - ve - we)
        self._count += 1
        heap = self._heap
        heapq.heappush(heap, (ts, vn, ve, wn, we))
        if newest is None or ts > newest:
            self._newest = ts
            self._newest_ts = at
            edge = ts - window
            if heap[0][0] <= edge:  # (the entry just pushed is inside: the heap is not empty)
                self._evict(edge)
        num, den = self._rational()
        status = self._status(num, den)
        last = self._last
        if last is not None and last[2] is status and num * last[1] == last[0] * den:
            return None
        self._last = (num, den, status)
        self._seq = seq = self._seq + 1
        newest_ts = self._newest_ts
        assert newest_ts is not None
        return (
            signal.tenant_id,
            decoded.provenance,
            item.provenance_id,
            num,
            den,
            status,
            newest_ts,
            self._count,
            self._sum_w,
            self._ew,
            seq,
        )

    def _evict(self, edge: int) -> None:
        """Subtract every signal with ``ts <= edge`` exactly."""
        heap = self._heap
        ev, ew = self._ev, self._ew
        while heap and heap[0][0] <= edge:
            _, vn, ve, wn, we = heapq.heappop(heap)
            self._sum_v -= vn << (ev - ve)
            self._sum_w -= wn << (ew - we)
            self._sum_vw -= (vn * wn) << (ev + ew - ve - we)
            self._count -= 1

    def _rational(self) -> tuple[int, int]:
        """The score as ``numerator / denominator`` (not reduced); needs a non-empty window."""
        if self._sum_w:
            # (sum_vw / 2**(ev+ew)) / (sum_w / 2**ew)
            return self._sum_vw, self._sum_w << self._ev
        return self._sum_v, self._count << self._ev

    def _status(self, num: int, den: int) -> Status:
        hn, hd = self._healthy
        if num * hd >= hn * den:
            return Status.HEALTHY
        wn, wd = self._warn
        if num * wd >= wn * den:
            return Status.WARN
        return Status.CRITICAL

    def __deepcopy__(self, memo: dict[int, Any]) -> TenantScore:
        # Entries are tuples of ints: copying the heap list is a deep copy (snapshots per epoch).
        other = TenantScore.__new__(TenantScore)
        for name in TenantScore.__slots__:
            setattr(other, name, getattr(self, name))
        other._heap = self._heap.copy()
        return other

    def __getstate__(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in TenantScore.__slots__}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name in TenantScore.__slots__:
            setattr(self, name, state[name])


def _build(change: _Change, trace: str | None = None) -> ScoreChange:
    """The :class:`ScoreChange` of a captured change; ``trace``: a sampled signal's (tracing),
    whose zero-length ``score publish`` span says when the change left (how long its tick held
    it)."""
    tenant_id, provenance, provenance_id, num, den, status, at, count, sum_w, ew, seq = change
    noted = (tenant_id, provenance, provenance_id, at, count, sum_w, ew)
    return _score_change(noted, num, den, status, seq, trace)


#: A change as :meth:`TickScore.add` notes it before it is built or captured: the tenant, the
#: provenance and provenance id of the signal that made it, and ``W``, the window's count and
#: total weight ``sum_w / 2**ew`` then (its score and ``seq``: the tenant's newest).
_Noted = tuple[str, Provenance, str, datetime | None, int, int, int]


def _score_change(
    noted: _Noted | None, num: int, den: int, status: Status, seq: int, trace: str | None
) -> ScoreChange:
    """The :class:`ScoreChange` of the change ``noted``, its exact score ``num / den``; with a
    ``trace``, its ``score publish`` span (:func:`_build`)."""
    assert noted is not None
    tenant_id, provenance, provenance_id, at, count, sum_w, ew = noted
    # The total weight correctly rounded, saturated at the largest double (two weights of 1e308
    # are valid; their sum is not a double, and it is only reported, never used in the score).
    try:
        window_weight = sum_w / (1 << ew)
    except OverflowError:
        window_weight = sys.float_info.max
    value = num / den  # int / int: the correctly rounded double
    # The exact score rounded half-even to two places (_round_ratio), from the double when
    # that cannot differ: 100 * value is within 2**-51 relative of 100 * num / den, so unless
    # its fraction is within 1e-9 of a half both round to the same integer.
    hundred = value * 100.0
    if 0.0 <= hundred <= 100.0:
        q = int(hundred)
        half = hundred - q - 0.5
        if half > 1e-9:
            two_places = _TWO_PLACES[q + 1]
        elif half < -1e-9:
            two_places = _TWO_PLACES[q]
        else:
            two_places = _round_ratio(num, den, 2)
    else:
        two_places = _round_ratio(num, den, 2)
    assert at is not None
    published = _new_change(  # positional, in ScoreChange's field order
        tenant_id,
        value,
        _STATUS_VALUE[status],
        at,
        count,
        window_weight,
        provenance_id,
        provenance,
        two_places,
        seq,
        trace,
    )
    if trace is not None:
        tracing.record_stage("score publish", published, time.time_ns())
    return published


#: ``ScoreChange(*fields)``, a third of the cost (one per change published).
_new_change = slot_maker(ScoreChange)

#: ``status.value`` of each status, a plain ``str`` (what a ScoreChange holds and pickles): a
#: dict lookup instead of the enum's ``value`` property per change.
_STATUS_VALUE: dict[Status, str] = {status: status.value for status in Status}

#: A pending change :meth:`TickScore.add` has noted in its locals but not captured yet.
_NOTED: Any = object()

#: The outcome of a traced signal's ``score`` span, by whether it changed the score.
_OUTCOME = {False: "unchanged", True: "changed"}


class TickScore:
    """One tenant's changes coalesced per event-time tick: the last change of each tick of the
    per-record stream of its :class:`TenantScore` (the contract is the module docstring's).

    Survives ``copy.deepcopy`` and ``pickle`` (the recovery snapshot), the change waiting for its
    tick to close included. ``settings.tick_seconds`` is read at every build, so a resume may
    change the tick (publication only: the window and thresholds stay the snapshot's).
    """

    __slots__ = (
        "_by_horizon",
        "_open_from",
        "_pending",
        "_pending_at",
        "_pending_trace",
        "_score",
        "_tick",
    )

    def __init__(self, settings: ScoreSettings, score: TenantScore | None = None) -> None:
        tick = round(settings.tick_seconds * 1_000_000)
        if tick <= 0 and settings.tick_seconds > 0:
            msg = f"tick_seconds must be 0 or at least 1 µs, got {settings.tick_seconds}"
            raise ValueError(msg)
        self._tick = tick
        #: Whether the drift step's horizon closes ticks (``settings.close_on``; a setting,
        #: taken again on resume like the tick).
        self._by_horizon = settings.close_on == "horizon"
        self._score = TenantScore(settings) if score is None else score
        #: The newest change of the open tick, and when it happened (µs): ``max(W, open_from)``,
        #: so its tick is the first tick still open.
        self._pending: _Change | None = None
        self._pending_at = 0
        #: The start (µs) of the tick after the last one a horizon closed (``None``: none yet,
        #: or a snapshot older than horizons): a change whose ``W`` is before it belongs to it.
        self._open_from: int | None = None
        #: The trace of the open tick's newest sampled signal that changed the score (tracing):
        #: the tick's change carries it, so its store writes join that signal's trace.
        self._pending_trace: str | None = None

    @classmethod
    def resume(cls, state: TickScore | TenantScore | None, settings: ScoreSettings) -> TickScore:
        """The state from a snapshot (a bare :class:`TenantScore`: a snapshot taken before
        coalescing, which had no change pending), or a new one."""
        if isinstance(state, TickScore):
            other = copy.copy(state)
            fresh = cls(settings, state._score)
            other._tick = fresh._tick
            other._by_horizon = fresh._by_horizon
            return other
        return cls(settings, state)

    @property
    def reference(self) -> TenantScore:
        """The per-record state underneath."""
        return self._score

    def add(self, items: Iterable[Tagged]) -> list[ScoreChange]:
        """Take signals in order; the changes of the ticks they closed, oldest first.

        In C where it takes the batch (``core/_native.c`` ``score_run``: :meth:`add_python`'s
        loop and :func:`_score_change`, the same operations on the same objects, the state
        written back here by :meth:`_store`), else :meth:`add_python`, the reference
        (``tests/unit/test_score_native.py`` holds them equal, down to the pickles). It leaves
        to Python a batch with a trace (or after a traced change still pending) and anything
        unusual (``score_run``'s comment in ``core/_native.c``)."""
        if not isinstance(items, list):
            items = list(items)
        got = _native.score_run(self, items, _NATIVE_CLASSES, _NATIVE_SLOTS, _NATIVE_EXTRAS)
        if got is None:
            return self.add_python(items)
        # (changes, error, then _store's arguments in its order but the pending trace: the C
        # path takes untraced signals only)
        out: list[ScoreChange] = got[0]
        error = got[1]
        stored: tuple[Any, ...] = (*got[2:16], None, got[16])
        self._store(*stored)
        if error is not None:
            raise error
        return out

    def add_python(self, items: Iterable[Tagged]) -> list[ScoreChange]:
        """:meth:`add` in Python, the reference of its C path.

        One pass over ``items`` with :meth:`TenantScore.fold` inline (its reference): the
        window's exact sums, its heap and the last change are kept in locals for the loop, as
        is the pending change, and written back even if a signal raises (attribute reads and
        writes per signal, and a call, were about a third of the step). A change is only
        noted (its signal and the window's figures then: no tuple, no status) until it is
        published or the call ends: most are superseded within their tick, and the status is
        a function of the exact score, so an equal score is an unchanged status.
        ``tests/unit/test_score_ticks.py`` checks the state and the changes against ``fold``
        per record for any batching."""
        out: list[ScoreChange] = []
        append = out.append
        tick = self._tick
        by_horizon = self._by_horizon and tick > 0
        pending, pending_at, pending_trace = self._pending, self._pending_at, self._pending_trace
        pending_tick = pending_at // tick if tick else 0
        open_from = self._open_from if by_horizon else None
        score = self._score
        window = score._window
        heap = score._heap
        newest, newest_ts = score._newest, score._newest_ts
        count, seq, last = score._count, score._seq, score._last
        ev, ew = score._ev, score._ew
        sum_v, sum_w, sum_vw = score._sum_v, score._sum_w, score._sum_vw
        heappush, heappop = heapq.heappush, heapq.heappop
        epoch, microsecond = _EPOCH, _MICROSECOND
        # The last change's exact score (1/0 before any: every first score differs from it).
        last_num, last_den = (1, 0) if last is None else last[:2]
        # The newest change made in this call, noted: the signal that made it, and W, the
        # window's count and total weight when it did (its score is last_num/last_den, its seq
        # seq); `pending is _NOTED` while it waits for its tick to close.
        noted: _Noted | None = None
        try:
            for item in items:
                decoded = item.decoded
                trace = decoded.trace
                start = 0 if trace is None else time.time_ns()
                # --- TenantScore.fold, inline (the same operations in the same order)
                signal = decoded.signal
                at = signal.ts
                delta = at - epoch
                ts = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
                changed = False
                if newest is None or ts > newest - window:  # else late: it changes nothing
                    weight = signal.weight
                    if weight is None:
                        wn = 1  # 1.0 = 1 / 2**0
                        we = 0
                    elif weight < 0:
                        msg = "weight must be >= 0"
                        raise ValueError(msg)
                    else:
                        wn, wd = weight.as_integer_ratio()
                        we = wd.bit_length() - 1
                    vn, vd = signal.value.as_integer_ratio()
                    ve = vd.bit_length() - 1
                    if ve > ev:
                        sum_v <<= ve - ev
                        sum_vw <<= ve - ev
                        ev = ve
                    if we > ew:
                        sum_w <<= we - ew
                        sum_vw <<= we - ew
                        ew = we
                    sum_v += vn << (ev - ve)
                    sum_w += wn << (ew - we)
                    sum_vw += (vn * wn) << (ev + ew - ve - we)
                    count += 1
                    heappush(heap, (ts, vn, ve, wn, we))
                    if newest is None or ts > newest:
                        newest, newest_ts = ts, at
                        edge = ts - window
                        while heap[0][0] <= edge:  # TenantScore._evict, inline
                            _, vn, ve, wn, we = heappop(heap)
                            sum_v -= vn << (ev - ve)
                            sum_w -= wn << (ew - we)
                            sum_vw -= (vn * wn) << (ev + ew - ve - we)
                            count -= 1
                    if sum_w:  # TenantScore._rational, inline
                        num, den = sum_vw, sum_w << ev
                    else:
                        num, den = sum_v, count << ev
                    # (the status is the exact score's: an equal score is an unchanged status)
                    changed = num * last_den != last_num * den
                # --- end of fold
                if start:  # scored: its span ends before any change it makes is published
                    tracing.record_stage("score", item, start, outcome=_OUTCOME[changed])
                if pending is not None:
                    # W only grows: a tick it left is closed for good.
                    assert newest is not None
                    if not tick or newest // tick > pending_tick:
                        append(
                            _build(pending, pending_trace)
                            if pending is not _NOTED
                            else _score_change(
                                noted,
                                last_num,
                                last_den,
                                score._status(last_num, last_den),
                                seq,
                                pending_trace,
                            )
                        )
                        pending = pending_trace = None
                if changed:
                    last_num, last_den = num, den
                    seq += 1
                    noted = (
                        signal.tenant_id,
                        decoded.provenance,
                        item.provenance_id,
                        newest_ts,
                        count,
                        sum_w,
                        ew,
                    )
                    if tick:
                        pending = _NOTED
                        pending_at = newest
                        if open_from is not None and open_from > pending_at:
                            pending_at = open_from  # W's tick is closed: the first open one
                        pending_tick = pending_at // tick
                        if trace is not None:
                            pending_trace = trace
                    else:
                        append(_score_change(noted, num, den, score._status(num, den), seq, trace))
                if by_horizon and pending is not None and decoded.horizon is not None:
                    # The end of a drift release: the open tick closes now, unless it is
                    # after the drift step's event time's (what comes later belongs to the
                    # next tick), instead of waiting for the tenant's next release.
                    horizon = (decoded.horizon - epoch) // microsecond
                    if pending_tick <= horizon // tick:
                        append(
                            _build(pending, pending_trace)
                            if pending is not _NOTED
                            else _score_change(
                                noted,
                                last_num,
                                last_den,
                                score._status(last_num, last_den),
                                seq,
                                pending_trace,
                            )
                        )
                        pending = pending_trace = None
                        open_from = (pending_tick + 1) * tick
        finally:
            self._store(
                newest,
                newest_ts,
                count,
                seq,
                last_num,
                last_den,
                ev,
                ew,
                sum_v,
                sum_w,
                sum_vw,
                pending,
                noted,
                pending_at,
                pending_trace,
                open_from,
            )
        return out

    def _store(
        self,
        newest: int | None,
        newest_ts: datetime | None,
        count: int,
        seq: int,
        last_num: int,
        last_den: int,
        ev: int,
        ew: int,
        sum_v: int,
        sum_w: int,
        sum_vw: int,
        pending: Any,
        noted: _Noted | None,
        pending_at: int,
        pending_trace: str | None,
        open_from: int | None,
    ) -> None:
        """The state from :meth:`add`'s locals at the end of a call (or where a signal
        raised): the pending change noted in the call captured, as ``fold`` gives it."""
        score = self._score
        last = score._last
        if seq != score._seq:  # (a change in this call: its status, once)
            last = (last_num, last_den, score._status(last_num, last_den))
        if pending is _NOTED:  # captured, as fold gives it
            assert noted is not None and last is not None
            tenant_id, provenance, provenance_id, noted_at, n, weight_n, weight_e = noted
            assert noted_at is not None
            status = last[2]
            pending = (
                tenant_id,
                provenance,
                provenance_id,
                last_num,
                last_den,
                status,
                noted_at,
                n,
                weight_n,
                weight_e,
                seq,
            )
        score._newest, score._newest_ts = newest, newest_ts
        score._count, score._seq, score._last = count, seq, last
        score._ev, score._ew = ev, ew
        score._sum_v, score._sum_w, score._sum_vw = sum_v, sum_w, sum_vw
        self._pending, self._pending_at = pending, pending_at
        self._pending_trace = pending_trace
        if self._by_horizon and self._tick > 0:
            self._open_from = open_from

    def flush(self) -> list[ScoreChange]:
        """The change of the open tick, if any (the end of a bounded input)."""
        pending, self._pending = self._pending, None
        trace, self._pending_trace = self._pending_trace, None
        return [] if pending is None else [_build(pending, trace)]

    def __deepcopy__(self, memo: dict[int, Any]) -> TickScore:
        other = copy.copy(self)  # the pending change is immutable
        other._score = copy.deepcopy(self._score, memo)
        return other

    def __copy__(self) -> TickScore:
        other = TickScore.__new__(TickScore)
        for name in TickScore.__slots__:
            setattr(other, name, getattr(self, name))
        return other

    def __getstate__(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in TickScore.__slots__}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name in TickScore.__slots__:
            setattr(self, name, state.get(name))


#: What ``core/_native.c`` ``score_run`` reads, in its order: the classes, then the slots of
#: TickScore, TenantScore, Tagged, Decoded and Signal it reads (member descriptors).
_NATIVE_CLASSES = (TickScore, TenantScore, Tagged, Decoded, Signal, ScoreChange)
_NATIVE_SLOTS = (
    *(
        TickScore.__dict__[name]
        for name in (
            "_by_horizon",
            "_open_from",
            "_pending",
            "_pending_at",
            "_pending_trace",
            "_score",
            "_tick",
        )
    ),
    *(
        TenantScore.__dict__[name]
        for name in (
            "_window",
            "_heap",
            "_newest",
            "_newest_ts",
            "_count",
            "_seq",
            "_last",
            "_ev",
            "_ew",
            "_sum_v",
            "_sum_w",
            "_sum_vw",
            "_healthy",
            "_warn",
        )
    ),
    Tagged.__dict__["decoded"],
    Tagged.__dict__["provenance_id"],
    Decoded.__dict__["signal"],
    Decoded.__dict__["trace"],
    Decoded.__dict__["provenance"],
    Decoded.__dict__["horizon"],
    Signal.__dict__["ts"],
    Signal.__dict__["value"],
    Signal.__dict__["weight"],
    Signal.__dict__["tenant_id"],
    *slot_descriptors(ScoreChange, (f.name for f in dataclasses.fields(ScoreChange))),
)


def _decimal(q: int, places: int) -> Decimal:
    """``q / 10**places`` as the Decimal with exactly ``places`` places."""
    digits = tuple(int(c) for c in str(abs(q)))
    return Decimal((1 if q < 0 else 0, digits, -places))


#: ``0.00`` to ``1.00``, the two-place scores of values in [0, 1] (Decimals are immutable).
_TWO_PLACES = tuple(_decimal(q, 2) for q in range(101))


def _round_ratio(num: int, den: int, places: int) -> Decimal:
    """``num / den`` (``den != 0``, need not be reduced) rounded half-even to ``places`` places.

    Exactly :func:`round_half_even` of ``Fraction(num, den)``: the quotient and the comparison of
    twice the remainder with the divisor do not depend on the fraction being reduced, so no gcd
    is needed.
    """
    if den < 0:
        num, den = -num, -den
    scale: int = 10**places
    q, r = divmod(num * scale, den)
    twice = 2 * r
    if twice > den or (twice == den and q % 2):
        q += 1
    if places == 2 and 0 <= q <= 100:
        return _TWO_PLACES[q]
    return _decimal(q, places)


#: ``score_run``'s (``core/_native.c``) last argument: what builds the changes it publishes.
_NATIVE_EXTRAS = (
    _build,
    _NOTED,
    tuple(_STATUS_VALUE[status] for status in (Status.HEALTHY, Status.WARN, Status.CRITICAL)),
    _TWO_PLACES,
    _round_ratio,
)


def round_half_even(value: Fraction, places: int = 2) -> Decimal:
    """``value`` rounded half-even to ``places`` decimal places, exactly (no float step)."""
    return _round_ratio(value.numerator, value.denominator, places)


def score_decimal(value: Fraction | ScoreChange, places: int = 2) -> Decimal:
    """A score for a ``NUMERIC(p, places)`` column, rounded half-even.

    A :class:`ScoreChange` carries its exact score rounded to two places (``score_2dp``); for
    other places, pass the exact score (:attr:`TenantScore.exact`): rounding the double could
    differ at a decimal tie (see the module docstring).
    """
    if isinstance(value, ScoreChange):
        if places == 2:
            return value.score_2dp
        value = Fraction(value.score)
    return round_half_even(value, places)


class _ScoreLogic(StatefulBatchLogic[Tagged, ScoreChange, TickScore]):
    """One tenant's :class:`TickScore` in the engine: signals in, coalesced changes out."""

    def __init__(self, state: TickScore, counters: dict[tuple[str, str], Any]) -> None:
        self._state = state
        self._counters = counters

    def on_batch(self, values: list[Tagged]) -> tuple[Iterable[ScoreChange], bool]:
        return self._counted(self._state.add(values)), StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[Iterable[ScoreChange], bool]:
        return self._counted(self._state.flush()), StatefulBatchLogic.RETAIN

    def snapshot(self) -> TickScore:
        return copy.deepcopy(self._state)

    def _counted(self, changes: list[ScoreChange]) -> list[ScoreChange]:
        """Count ``changes`` per (tenant, status): one ``inc`` per label pair and batch (each
        takes the counter's lock), the same totals once the batch is out."""
        if not changes:
            return changes
        counts: dict[tuple[str, str], int] = {}
        for change in changes:
            labels = (change.tenant_id, change.status)
            counts[labels] = counts.get(labels, 0) + 1
        counters = self._counters
        for labels, count in counts.items():
            counter = counters.get(labels)
            if counter is None:
                counter = counters[labels] = metrics.SCORE_CHANGES.labels(*labels)
            counter.inc(count)
        return changes


@operator
def _add(
    step_id: str,
    up: Runs[Tagged],
    builder: Callable[[TickScore | TenantScore | None], _ScoreLogic],
) -> Runs[ScoreChange]:
    return _stateful("stateful", up, builder)


@operator
def _stateful(
    step_id: str,
    up: Runs[Tagged],
    builder: Callable[[TickScore | TenantScore | None], _ScoreLogic],
) -> Runs[ScoreChange]:
    # On runs (operators.batching.RunLogic): the same logic, state and snapshot.
    return op.stateful_batch("stateful_batch", up, run_builder(builder))


@operator
def score(step_id: str, up: Runs[Tagged], settings: ScoreSettings) -> Runs[ScoreChange]:
    """Each tenant's coherence score, the last change of each event-time tick (module
    docstring); ``up``: runs keyed by ``tenant_id`` (:mod:`operators.batching`), as the output.

    Emits, per tenant and in input order, the changes of the ticks its signals close, and at the
    end of a bounded input the open tick's; counts each in
    ``igflow_score_changes_total{tenant_id, status}``. A tenant's state resumed from a snapshot
    keeps the window and thresholds it was built with (a longer window could not bring back the
    signals already evicted) and takes the tick of ``settings``. The stateful step keeps the id
    (``score.add.stateful.stateful_batch``) and the state of the ``stateful_flat_map`` it replaced,
    so a snapshot taken before coalescing resumes (its :class:`TenantScore` had nothing pending).
    """
    # The counter's children, looked up once per (tenant, status): labels() takes a lock and
    # builds its key on every call (about 1 µs a change), and hands back the same child each time.
    counters: dict[tuple[str, str], Any] = {}

    def build(resume: TickScore | TenantScore | None) -> _ScoreLogic:
        return _ScoreLogic(TickScore.resume(resume, settings), counters)

    return _add("add", up, build)
