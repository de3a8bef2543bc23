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
- A :class:`~core.records.ScoreChange` is emitted when the exact score or the status changed.

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

import dataclasses
import enum
import heapq
import sys
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import operator
from bytewax.operators import KeyedStream

from core import metrics, tracing
from core.records import ScoreChange, Tagged
from core.settings import ScoreSettings

__all__ = ["Status", "TenantScore", "round_half_even", "score", "score_decimal"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

#: One signal in the window: ``(ts in microseconds, value numerator, value exponent, weight
#: numerator, weight exponent)``: ``value = vn / 2**ve``, ``weight = wn / 2**we``.
_Entry = tuple[int, int, int, int, int]


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
        decoded = item.decoded  # (not the properties of Tagged: one call fewer each)
        signal = decoded.signal
        ts = (signal.ts - _EPOCH) // _MICROSECOND
        newest = self._newest
        if newest is not None and ts <= newest - self._window:
            return None  # late: before the window, it would leave at once
        weight = 1.0 if signal.weight is None else signal.weight
        if weight < 0:
            msg = "weight must be >= 0"
            raise ValueError(msg)
        # _dyadic, inline: value = vn / 2**ve, weight = wn / 2**we exactly
        vn, vd = signal.value.as_integer_ratio()
        ve = vd.bit_length() - 1
        wn, wd = weight.as_integer_ratio()
        we = wd.bit_length() - 1
        if ve > self._ev:
            shift = ve - self._ev
            self._sum_v <<= shift
            self._sum_vw <<= shift
            self._ev = ve
        if we > self._ew:
            shift = we - self._ew
            self._sum_w <<= shift
            self._sum_vw <<= shift
            self._ew = we
        ev, ew = self._ev, self._ew
        self._sum_v += vn << (ev - ve)
        self._sum_w += wn << (ew - we)
        self._sum_vw += (vn * wn) << (ev + ew - ve - we)
        self._count += 1
        heapq.heappush(self._heap, (ts, vn, ve, wn, we))
        if newest is None or ts > newest:
            self._newest = ts
            self._newest_ts = signal.ts
            self._evict(ts - self._window)
        num, den = self._rational()
        status = self._status(num, den)
        last = self._last
        if last is not None and last[2] is status and num * last[1] == last[0] * den:
            return None
        self._last = (num, den, status)
        self._seq += 1
        assert self._newest_ts is not None
        # Positional, in ScoreChange's field order (a keyword call costs a third more).
        return ScoreChange(
            signal.tenant_id,
            num / den,  # int / int: the correctly rounded double
            status.value,
            self._newest_ts,
            self._count,
            _as_float(self._sum_w, 1 << self._ew),
            item.provenance_id,
            decoded.provenance,
            _round_ratio(num, den, 2),  # exact, in integers: no Fraction (and its gcd) per change
            self._seq,
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


def _as_float(num: int, den: int) -> float:
    """``num / den`` correctly rounded, saturated at the largest double (two weights of 1e308
    are valid; their sum is not a double, and it is only reported, never used in the score)."""
    try:
        return num / den
    except OverflowError:
        return sys.float_info.max


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


@operator
def score(
    step_id: str, up: KeyedStream[Tagged], settings: ScoreSettings
) -> KeyedStream[ScoreChange]:
    """Each tenant's coherence score as it changes; ``up`` must be keyed by ``tenant_id``.

    Emits one :class:`ScoreChange` per signal that changed the tenant's exact score or status, in
    input order; counts it in ``igflow_score_changes_total{tenant_id, status}``. A tenant's state
    resumed from a snapshot keeps the window and thresholds it was built with: a longer window
    could not bring back the signals already evicted.
    """

    # The counter's children, looked up once per (tenant, status): labels() takes a lock and
    # builds its key on every call (about 1 µs a change), and hands back the same child each time.
    counters: dict[tuple[str, str], Any] = {}

    def add(state: TenantScore | None, item: Tagged) -> tuple[TenantScore, Iterable[ScoreChange]]:
        if state is None:
            state = TenantScore(settings)
        start = 0 if item.decoded.trace is None else time.time_ns()
        change = state.add(item)
        if start:  # a traced signal's change carries its trace on to the score writes
            if change is not None:
                change = dataclasses.replace(change, trace=item.decoded.trace)
            outcome = "unchanged" if change is None else "changed"
            tracing.record_stage("score", change or item, start, outcome=outcome)
        if change is None:
            return state, ()
        labels = (change.tenant_id, change.status)
        counter = counters.get(labels)
        if counter is None:
            counter = counters[labels] = metrics.SCORE_CHANGES.labels(*labels)
        counter.inc()
        return state, (change,)

    changes: KeyedStream[ScoreChange] = op.stateful_flat_map("add", up, add)
    return changes
