"""drift: quarantine micro-batches whose values drifted from their (tenant, type) reference.

Contract, per tenant (the step is keyed by ``tenant_id``; each tenant has one
:class:`TenantDrift`):

- Records are grouped into micro-batches per signal ``type``. A batch *closes* when it holds
  ``batch_size`` values, when the tenant's event time (the newest ``signal.ts`` seen for the
  tenant, across all types) reaches the batch's first ``ts`` + ``batch_seconds``, or on
  :meth:`TenantDrift.flush` (end of input, idle tenant). Every open batch is checked on every
  record, so a busy type holds the others back for at most ``batch_seconds`` of event time.
  The default is a **short hold** (0.5 s, issue 15): at a busy tenant a record waits here about
  half a second of event time, and its batch is judged with the statistical power of its
  trailing window (below).
- The first ``reference_batches`` batches of a (tenant, type), and as many more as it takes to
  hold ``reference_values`` values (1,000), are its reference (they pass; their verdict has no
  statistics), unless a :class:`~operators.drift_stats.Baseline` gives it.
- **No verdict on too few values.** Once a type has its reference, a sample is judged only
  with at least ``min_batch_size`` values (or ``batch_size``, if smaller). A batch with that
  many is judged alone and in its trailing window; a smaller one is judged **through its
  trailing window only** (the last ``window_batches`` passed batches + this one), when that
  pooled sample holds ``min_batch_size`` values and the batch at least its share of a full
  window, ``min_batch_size / (window_batches + 1)`` (9 at the defaults), so the window does
  not outvote it. A batch whose time is up and that can be judged
  neither way stays open for up to ``small_batch_wait_seconds`` more event time (300 s), to
  gather values, and closes as soon as it can be judged (a sparse type's drift is then detected
  within ``batch_seconds + small_batch_wait_seconds``); if it still cannot be judged then, or
  when it is flushed (end of input, idle tenant), it **passes unjudged**: verdict without
  statistics, ``igflow_drift_batches_total{outcome="too_small"}``, and it joins neither the
  reference nor the window. So no record waits more than ``batch_seconds +
  small_batch_wait_seconds`` of event time (or past a flush), and none is quarantined on a
  sample the tests cannot support.
- Each later batch is tested against the reference with the PSI and the two-sample KS, alone
  and as part of its trailing window (the last ``window_batches`` passed batches + this one);
  see :func:`~operators.drift_stats.check_batch`. A drifted batch leaves on ``quarantined`` as
  :class:`~core.records.Quarantined` (``DRIFT_DETECTED``) and reaches no sink; a passed one
  goes on, on ``passed``, and joins the window.
- A record with ``unknown_fields`` (schema drift) joins the tenant's ``"*schema"`` batch, closed
  by the same rules and quarantined whole with ``SCHEMA_DRIFT`` (no statistics).
- A record carrying a valid release marker (:mod:`core.release`) passes at once, unchecked,
  and joins neither a batch, the reference nor the window. An invalid marker is ignored.
  So does a canary (:mod:`core.canary`, ``igflow probe``): judging a synthetic type is
  meaningless, and a batch of canaries would wait for its time-out (the idle flush, 30 s, or
  up to ``2 * batch_seconds`` of event time), so the probe would time the drift step's
  batching instead of the path. It still waits behind its tenant's earlier records (below), so
  on a busy tenant the probe measures what the tenant's own signals wait.
- Every input comes out exactly once, and the tenant's records come out **in input order** (the
  lake ledger relies on per-tenant offset order): a record waits until every earlier record of
  its tenant is decided.
- **The horizon.** The last passed record that one pushed input record lets out (or a flush)
  carries the tenant's event time at that moment as its :attr:`~core.records.Decoded.horizon`
  (a copy of the record; the others carry none): every record the tenant sent until then has
  come out before it or is still held. The score step closes its ticks by it
  (:mod:`operators.score`). Per pushed record, never per engine batch, so :meth:`~TenantDrift.
  push_batch` over any split equals :meth:`~TenantDrift.push`; a quarantined record carries none.
- Deterministic: the same input sequence gives the same outputs (batch ids are hashes of the
  first record's coordinates; no wall clock, no randomness), also across a snapshot and resume.

False positives: a batch drawn from its reference distribution is quarantined only if a KS test
at ``ks_alpha`` fires on the batch or on the window (on the window only, and only if the batch
raised the window's KS ``D``, for a batch judged through it), so at most about ``2 * ks_alpha``
of such batches. The default alpha is 0.001: batches closed early by event time can be small,
the PSI of a small batch is noisy (its expectation is about ``(bins - 1) * (1/n + 1/m)``), and at
0.01 a pipeline with many (tenant, type) pairs quarantined a clean batch now and then (seen in an
integration test: 100 clean values, PSI 0.27 over the window, KS 0.195 against a critical value
of 0.188). The stated bound is **at most 1 % of such batches** at alpha 0.01 (measured in
``tests/unit/test_drift.py``, Beta(8, 2) values, 200 a batch, a reference of 5 batches: 0 of
1,000 independent trials, each with its own learned reference; 1 of 1,000 batches of one long
stream, checked with full windows), and so at most about 0.2 % at the default. In full batches
of 200 the workload's drift transform and a +0.2 mean shift are detected in at least 99 % of
batches (measured: 1,000 of 1,000 each); a +0.05 shift in about 78 %.

With the short hold (the defaults; ``test_the_short_hold_keeps_the_error_rates``: streams of
one (tenant, type), values evenly spaced in event time, a 1,000-value reference; records of
the drift's first second, which share a batch with clean ones, left out):

=============================  ===========  =====================  ===========
values/s of a (tenant, type)   clean held   workload / +0.2 held   +0.05 held
=============================  ===========  =====================  ===========
125 (5,000 events/s, 10 x 4)   0 %          100 % / 100 %          36 %
25 (1,000 events/s)            0.09 %       98.8 % / 98.8 %        17 %
0.25 (1 signal/s a tenant)     0 %          98 % / 94 %            7.5 %
=============================  ===========  =====================  ===========

What the short hold costs: a small shift (+0.05) is judged on ~60 values and a window of ~300
instead of 200 and 1,000, so it is caught about half as often; at a quiet tenant, the first
small batch or two of a drift (9 values each at 0.25 values/s) can pass, outvoted by a clean
window, before the drifted values dominate the pool. A larger ``batch_seconds`` buys the old
power back at the cost of latency.

A shorter hold was measured and not adopted (``benchmarks/drift_hold.py --batch-seconds 0.5
0.25 --trials 5``, the test's streams and seed, 150 / 150 / 50 trials): at 0.25 s a batch of a
busy type holds ~31 values, below ``min_batch_size``, so it too is judged through its window,
and the test's promises no longer hold at 25 values/s: +0.2 held 97.4 % (0.5 s: 98.8 %; the
test asks 98 %), +0.05 9.5 % (17.1 %; the test asks 12 %); at 125 values/s the workload's
transform and +0.2 99.1 / 99.4 % (100 / 100 %), let through up to 42 values (19); clean held
0.007 / 0.051 / 0.108 % (0.037 / 0.036 / 0.108 %), +0.05 at 125 values/s 38.1 % (36.2 %).
0.35 s is no better at 25 values/s (30 trials: +0.2 97.2 %, +0.05 8.9 %). What 0.25 s would
buy: the decision p50/p95 0.16/0.28-0.36 s after append against 0.29/0.53 s
(``benchmarks/latency.py --rate 2000 --sinks redis,postgres --env
IGFLOW_DRIFT_BATCH_SECONDS=...``, two alternating rounds each); the step's CPU is the same
within the noise (``benchmarks/stages.py --stages-only --step-ms 2``: drift[batch] 0.91 /
1.21 µs a signal against 0.91 / 1.24).

Wall clock: only the Bytewax wrapper reads it, to flush an idle tenant after
``idle_flush_seconds`` (tail mode). That is the one place where the wall clock can shape a batch
boundary; a bounded run disables it and decides open batches at the end of its input.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import time
from collections import deque
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from operator import attrgetter
from typing import Any

from bytewax.dataflow import Stream, operator
from bytewax.operators import StatefulBatchLogic

from core import _native, metrics, release, tracing
from core._native import with_horizon
from core.canary import CANARY_SOURCE, CANARY_TYPE
from core.errors import ConfigError
from core.reasons import ReasonCode
from core.records import Decoded, DriftVerdict, Quarantined, RawRecord, Signal, slot_descriptors
from core.settings import DriftSettings
from operators.batching import Runs, stateful_runs_at
from operators.drift_stats import (
    SMOOTHING,
    Baseline,
    Reference,
    _ref_below,
    drifted_check,
    load_baseline,
)
from operators.sealed_state import sealed_builder
from operators.split import split_runs
from tenancy.sealed_state import StateSeal

__all__ = [
    "SCHEMA_TYPE",
    "Baseline",
    "DriftOut",
    "TenantDrift",
    "batch_id",
    "check_settings",
    "drift",
    "load_baseline",
]

#: The batch type of schema-drifted records.
SCHEMA_TYPE = "*schema"

Output = Decoded | Quarantined

#: Deadlines past the calendar's end (a huge ``batch_seconds``) are clamped to it.
_END_OF_TIME = datetime.max.replace(tzinfo=UTC)
_MAX_SECONDS = timedelta.max.total_seconds()


def batch_id(tenant_id: str, type: str, item: Decoded) -> str:
    """The id of the batch that ``item`` opens: derived, never random, so replays agree."""
    p = item.provenance
    key = f"{tenant_id}|{type}|{p.topic}|{p.kafka_partition}|{p.kafka_offset}"
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def check_settings(settings: DriftSettings) -> None:
    """Raise :class:`~core.errors.ConfigError` for settings the drift step cannot work with."""
    problems = []
    if settings.batch_size < 1:
        problems.append(f"batch_size must be >= 1, got {settings.batch_size}")
    if settings.min_batch_size < 1:
        problems.append(f"min_batch_size must be >= 1, got {settings.min_batch_size}")
    if not 0 < settings.batch_seconds < _MAX_SECONDS:
        problems.append(f"batch_seconds must be > 0 and finite, got {settings.batch_seconds}")
    if not 0 <= settings.small_batch_wait_seconds < _MAX_SECONDS:
        problems.append(
            "small_batch_wait_seconds must be >= 0 and finite,"
            f" got {settings.small_batch_wait_seconds}"
        )
    if settings.bins < 1:
        problems.append(f"bins must be >= 1, got {settings.bins}")
    if settings.window_batches < 0:
        problems.append(f"window_batches must be >= 0, got {settings.window_batches}")
    if not 0.0 < settings.ks_alpha < 1.0:
        problems.append(f"ks_alpha must lie in (0, 1), got {settings.ks_alpha}")
    if problems:
        msg = "invalid drift settings: " + "; ".join(problems)
        raise ConfigError(msg)


_UNSET = object()

#: What copy.deepcopy gives back as it is (atomic types, the frozen records, a Reference), so
#: the state's __deepcopy__ methods share it without a deepcopy call. Not ``datetime``:
#: deepcopy copies one (through the memo, so a deadline and ``_next_deadline`` stay one object
#: in the copy, which its pickle shows).
_SHARED_TYPES = frozenset(
    {type(None), bool, int, float, str, bytes, Decoded, Quarantined, Reference}
)


def _shared(value: Any, memo: dict[int, Any]) -> Any:
    """``copy.deepcopy(value, memo)``: ``value`` itself for what deepcopy shares anyway."""
    if type(value) in _SHARED_TYPES:
        return value
    return copy.deepcopy(value, memo)


def _copied_values(values: Any, memo: dict[int, Any]) -> Any:
    """``copy.deepcopy(values, memo)`` of a list of values: a plain copy for floats (which
    deepcopy shares), registered in ``memo`` as deepcopy registers it."""
    if type(values) is list and all(type(v) is float for v in values):
        copied = memo[id(values)] = values.copy()
        memo.setdefault(id(memo), []).append(values)  # (deepcopy's _keep_alive)
        return copied
    return copy.deepcopy(values, memo)


class _Entry:
    """A pending record and, once its batch is decided, what it comes out as."""

    __slots__ = ("item", "out")

    def __init__(self, item: Decoded) -> None:
        self.item = item
        self.out: Output | None = None

    def __deepcopy__(self, memo: dict[int, Any]) -> _Entry:
        # What copy.deepcopy's generic path (__reduce_ex__, _reconstruct) gives, without it:
        # every snapshot copies each held record's entry (~4 -> ~1 µs).
        other = _Entry.__new__(_Entry)
        memo[id(self)] = other
        other.item = _shared(self.item, memo)
        other.out = _shared(self.out, memo)
        return other


class _Batch:
    """An open micro-batch of one type (or of schema-drifted records)."""

    __slots__ = ("batch_id", "deadline", "entries", "extended", "type", "values")

    def __init__(self, type: str | None, batch_id: str | None, deadline: datetime) -> None:
        #: ``None`` for the schema-drift batch (a signal type may be any string).
        self.type = type
        #: ``None`` until a verdict needs it (:func:`batch_id` of the first entry's record):
        #: most batches pass, and a passed record does not carry its verdict. A batch from an
        #: older snapshot has it already.
        self.batch_id = batch_id
        self.deadline = deadline
        self.entries: list[_Entry] = []
        self.values: list[float] = []
        #: Its time was up with too few values to be judged, and it was given
        #: ``small_batch_wait_seconds`` more (it closes as soon as it can be judged).
        self.extended = False

    def __deepcopy__(self, memo: dict[int, Any]) -> _Batch:
        # As _Entry's: the generic path's copy, sharing what is immutable.
        other = _Batch.__new__(_Batch)
        memo[id(self)] = other
        other.type = _shared(self.type, memo)
        other.batch_id = _shared(self.batch_id, memo)
        other.deadline = _shared(self.deadline, memo)
        other.entries = copy.deepcopy(self.entries, memo)
        other.values = _copied_values(self.values, memo)
        extended = getattr(self, "extended", _UNSET)  # unset in a batch from an old snapshot
        if extended is not _UNSET:
            other.extended = _shared(extended, memo)
        return other


class _Sample(tuple[float, ...]):
    """A passed batch's sorted values: immutable, so a deep copy shares it."""

    __slots__ = ()

    def __deepcopy__(self, memo: dict[int, Any]) -> _Sample:
        return self


class _TypeState:
    """What one (tenant, type) has learned: its reference, or the batches that will become it."""

    __slots__ = ("learned", "learning", "reference", "window")

    def __init__(self, reference: Reference | None) -> None:
        self.reference = reference
        #: Reference batches seen so far, and their values, while learning.
        self.learned = 0
        self.learning: list[float] = []
        #: Sorted values of the last passed (checked) batches, oldest first.
        self.window: deque[_Sample] = deque()

    def __deepcopy__(self, memo: dict[int, Any]) -> _TypeState:
        # As _Entry's; the learning values (up to reference_values floats) without a deepcopy
        # call each.
        other = _TypeState.__new__(_TypeState)
        memo[id(self)] = other
        other.reference = _shared(self.reference, memo)
        other.learned = _shared(self.learned, memo)
        other.learning = _copied_values(self.learning, memo)
        window = self.window
        if type(window) is deque and all(type(s) is _Sample for s in window):
            other.window = memo[id(window)] = deque(window, window.maxlen)
        else:
            other.window = copy.deepcopy(window, memo)
        return other


class TenantDrift:
    """The drift state of one tenant (engine independent); see the module docstring.

    Survives ``copy.deepcopy`` and ``pickle`` (Bytewax snapshots it). A pickle leaves out the
    release key (a secret must not reach the recovery store): call :meth:`bind` after
    unpickling, or release markers are ignored (the records are checked like any other).
    """

    def __init__(
        self,
        tenant_id: str,
        settings: DriftSettings,
        baseline: Baseline | None = None,
        release_key: str = "",
    ) -> None:
        self.tenant_id = tenant_id
        self._settings = settings
        self._baseline: Baseline | None = None
        self._release_key: str | None = None
        self.bind(settings, baseline, release_key)
        #: The tenant's records not yet emitted, in input order.
        self._fifo: deque[_Entry] = deque()
        #: Open batches by type (``None``: the schema-drift batch), in the order they opened.
        self._open: dict[str | None, _Batch] = {}
        self._types: dict[str, _TypeState] = {}
        #: The tenant's event time, and the earliest deadline of an open batch.
        self._event_time: datetime | None = None
        self._next_deadline: datetime | None = None
        #: Batches decided and not yet counted, by outcome (not pickled).
        self._tally: dict[str, int] = {}

    def bind(
        self, settings: DriftSettings, baseline: Baseline | None = None, release_key: str = ""
    ) -> None:
        """(Re)apply the configuration, e.g. on resume: new batches follow the new settings.

        References already learned or taken from a baseline are kept; a type seen for the first
        time takes its reference from ``baseline``. An empty ``release_key`` honours no marker.
        """
        check_settings(settings)
        self._settings = settings
        self._batch_size = settings.batch_size
        self._min_batch_size = min(settings.min_batch_size, settings.batch_size)
        # A batch judged through its window must be at least its share of a full window, so the
        # window does not outvote it (and a stream sparse in event time is not checked per record).
        self._min_share = -(-self._min_batch_size // (settings.window_batches + 1))
        self._batch_seconds = timedelta(seconds=settings.batch_seconds)
        self._small_wait = timedelta(seconds=settings.small_batch_wait_seconds)
        self._baseline = None if baseline is None else baseline.for_tenant(self.tenant_id)
        self._release_key = release_key or None

    @property
    def pending(self) -> int:
        """Records held back: in an open batch or behind one, in input order."""
        return len(self._fifo)

    def push(self, item: Decoded) -> list[Output]:
        """Take one record of this tenant; return the records that can now go on, in order."""
        out = self._push(item)
        self._count()
        return out

    def _push(self, item: Decoded) -> list[Output]:
        """:meth:`push` without counting the batches decided (the caller counts them)."""
        signal = item.signal
        if signal.tenant_id != self.tenant_id:
            msg = "a TenantDrift holds one tenant's records; key the stream by tenant_id"
            raise ValueError(msg)
        ts = signal.ts
        if self._event_time is None or ts > self._event_time:
            self._event_time = ts
            next_deadline = self._next_deadline
            if next_deadline is not None and ts >= next_deadline:
                self._close_expired(ts)
        entry = _Entry(item)
        fifo = self._fifo
        fifo.append(entry)
        raw = item.raw
        kind = signal.type
        if (kind == CANARY_TYPE and signal.source == CANARY_SOURCE) or (  # is_canary, inline
            raw is not None and raw.headers and self._released(item)
        ):
            entry.out = item
        else:
            key = None if item.unknown_fields else kind
            batch = self._open.get(key)
            expired = False
            if batch is None:
                try:
                    deadline = ts + self._batch_seconds
                except OverflowError:  # a batch_seconds of centuries: no time limit
                    deadline = _END_OF_TIME
                batch = _Batch(key, None, deadline)
                self._open[key] = batch
                if self._next_deadline is None or deadline < self._next_deadline:
                    self._next_deadline = deadline
                # A late record can open a batch whose deadline the event time has passed (an
                # open batch's deadline is always ahead of it: `_close_expired` saw to that).
                expired = deadline <= self._event_time
            entries = batch.entries
            entries.append(entry)
            batch.values.append(signal.value)
            if len(entries) >= self._batch_size:
                self._close(key, batch)
            elif getattr(batch, "extended", False) and self._judgeable(key, batch):
                self._close(key, batch)  # a small batch that waited has enough values now
            elif expired:
                self._time_up(key, batch, self._event_time)
                self._next_deadline = min(map(_DEADLINE, self._open.values()), default=None)
        if fifo[0].out is None:  # the common case: the oldest record's batch is still open
            return []
        return self._release()

    def push_batch(self, items: Iterable[Decoded], *, native: bool = True) -> list[Output]:
        """:meth:`push` each of ``items`` in order; return everything they let go on, in order.

        The batch entry point (one call per engine batch); :meth:`push` is its reference: for
        any split of an input into batches the outputs are the same (``tests/unit/
        test_batch_equivalence.py``), since no decision depends on where a batch ends.

        The plain path is inline: a record of this tenant without unknown fields, that is no
        canary and has no release marker to check, is :meth:`_push`'s steps written out here
        (the event time and the batches it closes, the open batch it joins or opens, what that
        closes, what it lets out), without a call per record. Joining an open batch that
        neither fills nor becomes judgeable lets nothing out (every push ends with the oldest
        held record undecided). Anything else goes through :meth:`_push`. The horizon's copy of
        the last passed record is built in C (``core._native.with_horizon``: the fields read and
        set through their slot descriptors, as :meth:`_release`'s ``Decoded(...)`` does).

        With ``native`` (the default) the plain records go through ``core._native.drift_run``
        (branch driftc): this loop's steps in C, the same objects, state changes and method
        calls (:meth:`_expire`, :meth:`_close`, :meth:`_late`); it hands the first record it
        does not take (any of the above that is not plain, a record not of the exact classes, an
        event time that does not compare) back to this loop, which is its reference
        (``native=False``, and the whole path when the extension lacks it;
        ``tests/unit/test_drift_native.py``: outputs, state and snapshot bytes equal for any
        input and split)."""
        out: list[Output] = []
        if not isinstance(items, list):
            items = list(items)
        n = len(items)
        i = 0
        run = _drift_run if native else None
        attrs = self.__dict__
        push = self._push
        tenant = self.tenant_id
        open_ = self._open
        open_get = open_.get
        fifo = self._fifo
        fifo_append = fifo.append
        popleft = fifo.popleft
        batch_size = self._batch_size
        batch_seconds = self._batch_seconds
        min_batch = self._min_batch_size
        min_share = self._min_share
        types_get = self._types.get
        checks_markers = self._release_key is not None
        while i < n:
            if run is not None:
                # The plain records from i on, in C (core._native.drift_run): the steps below,
                # the same state changes through the same methods; it stops at the first record
                # it leaves to this loop (anything else than the plain path), or at the end.
                i = run(self, attrs, items, i, out, _RUN_CONFIG, checks_markers)
                if i >= n:
                    break
            item = items[i]
            i += 1
            signal = item.signal
            kind = signal.type
            raw = item.raw
            if (
                item.unknown_fields
                or kind == CANARY_TYPE
                or signal.tenant_id != tenant
                or (checks_markers and raw is not None and raw.headers)
            ):
                released = push(item)
                if released:
                    out.extend(released)
                continue
            ts = signal.ts
            event_time = self._event_time
            closed = False  # batches closed by time: they may let records out
            if event_time is None or ts > event_time:
                self._event_time = event_time = ts
                next_deadline = self._next_deadline
                if next_deadline is not None and ts >= next_deadline:
                    closed = True
                    self._expire(ts)
            entry = _Entry(item)
            fifo_append(entry)
            batch = open_get(kind)
            if batch is None:
                try:
                    deadline = ts + batch_seconds
                except OverflowError:  # a batch_seconds of centuries: no time limit
                    deadline = _END_OF_TIME
                batch = _Batch(kind, None, deadline)
                open_[kind] = batch
                next_deadline = self._next_deadline
                if next_deadline is None or deadline < next_deadline:
                    self._next_deadline = deadline
                batch.entries.append(entry)
                batch.values.append(signal.value)
                if batch_size <= 1:
                    self._close(kind, batch)
                elif deadline <= event_time:  # a late record: see _push
                    self._late(kind, batch, event_time)
            else:
                entries = batch.entries
                entries.append(entry)
                batch.values.append(signal.value)
                size = len(entries)
                if size >= batch_size:
                    self._close(kind, batch)
                elif getattr(batch, "extended", False) and (
                    size >= min_batch
                    or (
                        size >= min_share
                        and (state := types_get(kind)) is not None
                        and size + _window_size(state) >= min_batch
                    )
                ):
                    self._close(kind, batch)  # a small batch that waited can be judged now
                elif not closed:
                    continue  # the oldest held record's batch is still open: nothing out
            result = fifo[0].out
            if result is not None:  # _release, inline
                last, passed = 0, None
                while True:
                    if type(result) is Decoded:
                        last, passed = len(out), result
                    out.append(result)
                    popleft()
                    if not fifo:
                        break
                    result = fifo[0].out
                    if result is None:
                        break
                if passed is not None:  # _release's Decoded(...) copy, in C (0.54 -> 0.11 µs)
                    out[last] = with_horizon(passed, event_time, Decoded, _DECODED_SLOTS)
        self._count()  # the batches decided, once per call instead of once per batch
        return out

    def _expire(self, ts: datetime) -> None:
        """:meth:`_close_expired` at the new event time ``ts`` (past the next deadline), with
        the common case inline: one open batch, of a type learning its reference."""
        open_ = self._open
        if len(open_) == 1:
            ((key, only),) = open_.items()
            state = self._types.get(key) if key is not None else None
            if state is not None and state.reference is None and only.deadline <= ts:
                del open_[key]
                self._learn(state, only)
                self._next_deadline = None
                return
        self._close_expired(ts)

    def _late(self, key: str, batch: _Batch, event_time: datetime) -> None:
        """A late record opened ``batch`` past its deadline: its time is up already."""
        self._time_up(key, batch, event_time)
        self._next_deadline = min(map(_DEADLINE, self._open.values()), default=None)

    def flush(self) -> list[Output]:
        """Decide every open batch now (end of input, idle tenant); return what can go on."""
        for key, batch in list(self._open.items()):
            self._close(key, batch)
        self._count()
        return self._release()

    def _release(self) -> list[Output]:
        """What one push or flush lets go: the decided records at the head of the queue, in
        order, with the tenant's event time set as the :attr:`~core.records.Decoded.horizon`
        of the last passed one (a copy of it): every record the tenant sent up to now has
        left, or is still held and comes out after it. The horizon is a function of the input
        sequence only (the last push's event time), whatever the engine's batches:
        :meth:`push_batch` pushes one record at a time."""
        fifo = self._fifo
        popleft = fifo.popleft
        out: list[Output] = []
        last, passed = 0, None
        while fifo:
            result = fifo[0].out
            if result is None:
                break
            if type(result) is Decoded:
                last, passed = len(out), result
            out.append(result)
            popleft()
        if passed is not None:
            out[last] = Decoded(
                passed.signal,
                passed.provenance,
                passed.kafka_timestamp_ms,
                passed.raw,
                passed.unknown_fields,
                passed.trace,
                self._event_time,
            )
        return out

    def _count(self) -> None:
        """Add the batches decided since the last call to ``igflow_drift_batches_total``."""
        tally = self._tally
        if tally:
            for outcome, n in tally.items():
                _batches_counter(self.tenant_id, outcome).inc(n)
            tally.clear()

    def _released(self, item: Decoded) -> bool:
        """Whether ``item`` carries a valid release marker (it has a raw record with headers)."""
        assert item.raw is not None
        if self._release_key is None:
            return False
        marker = item.raw.header(release.RELEASE_HEADER)
        if marker is None:
            return False
        return release.verify(self._release_key, marker, item.provenance.input_hash) is not None

    def _close_expired(self, now: datetime) -> None:
        open_ = self._open
        types_get = self._types.get
        for key, batch in list(open_.items()):
            if batch.deadline <= now:
                state = types_get(key) if key is not None else None
                if state is not None and state.reference is None:
                    # Learning: no reference, so no extension (_time_up) and no verdict.
                    del open_[key]
                    self._learn(state, batch)
                else:
                    self._time_up(key, batch, now)
        self._next_deadline = min(map(_DEADLINE, open_.values()), default=None) if open_ else None

    def _time_up(self, key: str | None, batch: _Batch, now: datetime) -> None:
        """Close ``batch``, or give it ``small_batch_wait_seconds`` more if it is too small to
        be judged (alone or through its window) and its type is judged at all."""
        # getattr: a batch from a snapshot taken before `extended` existed.
        if (
            key is not None
            and not getattr(batch, "extended", False)
            and self._has_reference(key)
            and not self._judgeable(key, batch)
        ):
            batch.extended = True
            try:
                batch.deadline = max(batch.deadline, now) + self._small_wait
            except OverflowError:
                batch.deadline = _END_OF_TIME
            return
        self._close(key, batch, recompute=False)  # both callers recompute the next deadline

    def _judgeable(self, key: str | None, batch: _Batch) -> bool:
        """Whether ``batch`` holds enough values for a verdict: ``min_batch_size`` of its own,
        or enough to be judged through its trailing window (the passed batches of its type)."""
        size = len(batch.entries)
        if size >= self._min_batch_size:
            return True
        state = self._types.get(key) if key is not None else None
        return state is not None and self._through_window(size, state)

    def _through_window(self, size: int, state: _TypeState) -> bool:
        """Whether a batch of ``size`` (< ``min_batch_size``) values can be judged through its
        window: at least ``min_batch_size / (window_batches + 1)`` of its own, and the pool
        holds ``min_batch_size``."""
        return size >= self._min_share and size + _window_size(state) >= self._min_batch_size

    def _has_reference(self, kind: str) -> bool:
        """Whether batches of ``kind`` are judged (its reference is learned or given)."""
        state = self._types.get(kind)
        if state is not None:
            return state.reference is not None
        return self._baseline is not None and (
            self._baseline.reference(self.tenant_id, kind) is not None
        )

    def _close(self, key: str | None, batch: _Batch, *, recompute: bool = True) -> None:
        """Decide ``batch`` and mark its records; ``recompute=False``: the caller recomputes
        the next deadline once it has closed what it closes."""
        del self._open[key]
        if recompute:
            self._next_deadline = min(map(_DEADLINE, self._open.values()), default=None)
        verdict, outcome = self._decide(batch)
        if verdict is None:
            for entry in batch.entries:
                entry.out = entry.item
        else:
            assert verdict.reason is not None
            for entry in batch.entries:
                entry.out = Quarantined(entry.item, verdict)
            metrics.QUARANTINED.labels(self.tenant_id, verdict.reason.value).inc(verdict.size)
        tally = self._tally
        tally[outcome] = tally.get(outcome, 0) + 1

    def _learn(self, state: _TypeState, batch: _Batch) -> None:
        """:meth:`_close` of a batch (out of ``_open`` already) whose type is learning its
        reference (``state.reference`` is ``None``): its records pass, its values are learned."""
        for entry in batch.entries:
            entry.out = entry.item
        _learned(state, batch, self._settings)
        tally = self._tally
        tally["learning"] = tally.get("learning", 0) + 1

    def _batch_id(self, batch: _Batch) -> str:
        """The id of ``batch``: derived from its first record (or kept from an old snapshot)."""
        if batch.batch_id is None:
            kind = SCHEMA_TYPE if batch.type is None else batch.type
            batch.batch_id = batch_id(self.tenant_id, kind, batch.entries[0].item)
        return batch.batch_id

    def _decide(self, batch: _Batch) -> tuple[DriftVerdict | None, str]:
        """The verdict of a quarantined batch (``None``: it passes) and the outcome's label."""
        tenant, size = self.tenant_id, len(batch.entries)
        if batch.type is None:
            schema = ReasonCode.SCHEMA_DRIFT
            verdict = DriftVerdict(
                self._batch_id(batch), tenant, SCHEMA_TYPE, size, *_NONE4, schema
            )
            return verdict, "schema_drift"
        kind = batch.type
        state = self._types.get(kind)
        if state is None:
            base = None if self._baseline is None else self._baseline.reference(tenant, kind)
            state = self._types[kind] = _TypeState(base)
        settings = self._settings
        if state.reference is None:
            _learned(state, batch, settings)
            return None, "learning"
        alone = size >= self._min_batch_size
        if not alone and not self._through_window(size, state):
            # Too few values for the PSI and the KS (see the module docstring): no verdict.
            return None, "too_small"
        check = drifted_check(
            state.reference,
            batch.values,
            state.window,
            psi_threshold=settings.psi_threshold,
            ks_alpha=settings.ks_alpha,
            batch_alone=alone,
        )
        if check is not None:
            verdict = DriftVerdict(
                self._batch_id(batch),
                tenant,
                kind,
                size,
                check.psi,
                check.ks,
                check.window_psi,
                check.window_ks,
                ReasonCode.DRIFT_DETECTED,
            )
            return verdict, "drifted"
        # Only passed batches make the window, so a drift does not become the new normal.
        state.window.append(_Sample(sorted(batch.values)))
        while len(state.window) > settings.window_batches:
            state.window.popleft()
        return None, "passed"

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_release_key"] = None
        # Counted, not state: every call that decides a batch counts it before it returns.
        state.pop("_tally", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._tally = {}

    def __deepcopy__(self, memo: dict[int, Any]) -> TenantDrift:
        # An in-memory copy keeps the key; only pickling (the recovery store) drops it.
        other = TenantDrift.__new__(TenantDrift)
        other.__dict__.update(copy.deepcopy(self.__getstate__(), memo))
        other._release_key = self._release_key
        other._tally = {}
        return other


_NONE4: tuple[None, None, None, None] = (None, None, None, None)

#: Decoded's fields' slot descriptors in constructor order, for ``core._native.with_horizon``
#: (``slot_descriptors`` refuses, at import, a Decoded whose fields changed).
_DECODED_SLOTS = slot_descriptors(
    Decoded,
    ("signal", "provenance", "kafka_timestamp_ms", "raw", "unknown_fields", "trace", "horizon"),
)
_DEADLINE = attrgetter("deadline")

#: What ``core._native.drift_run`` reads and builds, by slot descriptor (the exact classes'
#: ``__slots__``; the C checks each one's owner and refuses anything else).
_RUN_CONFIG = (
    Decoded,
    Signal,
    Decoded.__dict__["signal"],
    Decoded.__dict__["unknown_fields"],
    Decoded.__dict__["raw"],
    Signal.__dict__["tenant_id"],
    Signal.__dict__["type"],
    Signal.__dict__["ts"],
    Signal.__dict__["value"],
    _Entry,
    _Entry.__dict__["item"],
    _Entry.__dict__["out"],
    _Batch,
    _Batch.__dict__["type"],
    _Batch.__dict__["batch_id"],
    _Batch.__dict__["deadline"],
    _Batch.__dict__["entries"],
    _Batch.__dict__["values"],
    _Batch.__dict__["extended"],
    CANARY_TYPE,
    _END_OF_TIME,
    _DECODED_SLOTS,
    RawRecord,
    RawRecord.__dict__["headers"],
    _TypeState,
    _TypeState.__dict__["window"],
    _TypeState.__dict__["reference"],
    _TypeState.__dict__["learned"],
    _TypeState.__dict__["learning"],
    _Sample,
    _ref_below,
    SMOOTHING,
)
#: The plain path of :meth:`TenantDrift.push_batch` in C; ``None``: the Python loop only.
_drift_run = getattr(_native, "drift_run", None)

#: ``igflow_drift_batches_total``'s children by (tenant, outcome): ``labels()`` takes a lock.
_BATCH_COUNTERS: dict[tuple[str, str], Any] = {}


def _batches_counter(tenant: str, outcome: str) -> Any:
    child = _BATCH_COUNTERS.get((tenant, outcome))
    if child is None:
        child = _BATCH_COUNTERS[tenant, outcome] = metrics.DRIFT_BATCHES.labels(tenant, outcome)
    return child


def _learned(state: _TypeState, batch: _Batch, settings: DriftSettings) -> None:
    """Add a closed batch's values to its type's reference in the learning; the reference,
    once it holds ``reference_batches`` batches and ``reference_values`` values."""
    state.learning.extend(batch.values)
    state.learned += 1
    if (
        state.learned >= max(1, settings.reference_batches)
        and len(state.learning) >= settings.reference_values
    ):
        state.reference = Reference.from_values(state.learning, settings.bins)
        state.learning = []


def _window_size(state: _TypeState) -> int:
    """Values in a type's trailing window (at most ``window_batches`` passed batches)."""
    return sum(map(len, state.window))


def _traced(outputs: list[Output], start_ns: int) -> list[Output]:
    """Record a drift span for each traced record a push or flush let out: passed, or held in
    a quarantined batch (its reason code as the span's error). The span covers that call; the
    record may have waited in its open batch before it."""
    for out in outputs:
        if isinstance(out, Quarantined):
            if out.decoded.trace is not None:
                reason = out.verdict.reason
                tracing.record_stage(
                    "drift",
                    out,
                    start_ns,
                    outcome="quarantined",
                    error=reason.value if reason is not None else None,
                )
        elif out.trace is not None:
            tracing.record_stage("drift", out, start_ns, outcome="passed")
    return outputs


class _DriftLogic(StatefulBatchLogic[Decoded, Output, TenantDrift]):
    """Bytewax glue: batches, EOF and an idle timer feed one tenant's :class:`TenantDrift`."""

    def __init__(
        self,
        state: TenantDrift | None,
        settings: DriftSettings,
        baseline: Baseline | None,
        release_key: str,
    ) -> None:
        self.state = state
        self.settings = settings
        self.baseline = baseline
        self.release_key = release_key
        idle = settings.idle_flush_seconds
        self.idle = timedelta(seconds=idle) if idle > 0 else None
        self.traced = tracing.enabled()

    def on_batch(self, values: list[Decoded]) -> tuple[Iterable[Output], bool]:
        if self.state is None:
            # Bytewax builds the logic before handing it the key; the first record names it.
            self.state = TenantDrift(
                values[0].signal.tenant_id, self.settings, self.baseline, self.release_key
            )
        if self.traced:
            start = time.time_ns()
            return _traced(self.state.push_batch(values), start), StatefulBatchLogic.RETAIN
        return self.state.push_batch(values), StatefulBatchLogic.RETAIN

    def on_notify(self) -> tuple[Iterable[Output], bool]:
        return self._flush()

    def on_eof(self) -> tuple[Iterable[Output], bool]:
        return self._flush()

    def _flush(self) -> tuple[Iterable[Output], bool]:
        # Never discard: the state holds the references learned so far.
        start = time.time_ns()
        out = self.state.flush() if self.state is not None else []
        return (_traced(out, start) if self.traced else out), StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        if self.idle is None or self.state is None or not self.state.pending:
            return None
        # The wall clock, for the idle flush of tail mode only (see the module docstring).
        return datetime.now(UTC) + self.idle

    def snapshot(self) -> TenantDrift:
        assert self.state is not None, "Bytewax snapshots a key only after its first item"
        # Bytewax requires an immutable copy: the state keeps changing after this returns.
        return copy.deepcopy(self.state)


def _tenant(item: Decoded) -> str:
    """The state key of a drift step's item (its stream is keyed by tenant)."""
    return item.signal.tenant_id


@dataclasses.dataclass(frozen=True)
class DriftOut:
    """The two streams out of :func:`drift`."""

    #: Records that passed (or were released): runs keyed by tenant, in each tenant's input
    #: order.
    passed: Runs[Decoded]
    #: Records of drifted and schema-drifted batches, unkeyed (for the quarantine table).
    quarantined: Stream[Quarantined]


@operator
def drift(
    step_id: str,
    up: Runs[Decoded],
    settings: DriftSettings,
    *,
    release_key: str,
    baseline: Baseline | None = None,
    seal: StateSeal | None = None,
) -> DriftOut:
    """Quarantine drifted micro-batches per (tenant, type); ``up``: runs keyed by tenant_id
    (:mod:`operators.batching`), as ``passed`` is.

    See the module docstring for the contract. ``idle_flush_seconds <= 0`` disables the idle
    flush (a bounded run: open batches are decided at the end of input). A resumed state takes
    the current ``settings``, ``baseline`` and ``release_key`` (:meth:`TenantDrift.bind`).
    With ``seal``, a tenant's snapshot (its held records) is sealed under its keys
    (:mod:`operators.sealed_state`). Raises :class:`~core.errors.ConfigError` for unusable
    settings, at build time.
    """
    check_settings(settings)

    def builder(resume: TenantDrift | None) -> _DriftLogic:
        if resume is not None:
            resume.bind(settings, baseline, release_key)
        return _DriftLogic(resume, settings, baseline, release_key)

    # The id and the snapshot (a TenantDrift) of the per-item op.stateful it replaced.
    checked = stateful_runs_at(
        "check", up, sealed_builder(builder, seal, f"{step_id}.check", _tenant, whole=True)
    )
    passed, quarantined = split_runs("split", checked, Decoded, Quarantined)
    return DriftOut(passed, quarantined)
