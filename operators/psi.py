"""psi: deconflict each tenant's selectors with a partner, per tumbling window of event time.

Contract, per tenant (the step is keyed by ``tenant_id``; each tenant has one
:class:`TenantDeconfliction`):

- Windows are ``[k * window, (k + 1) * window)`` of event time, aligned on the Unix epoch. The
  *open* window is the one holding the tenant's event time ``W`` (the newest ``signal.ts`` seen);
  it closes when a signal with ``ts`` at or past its end arrives, on end of input, or when the
  tenant has been idle for ``idle_flush_seconds`` of wall clock (tail mode only).
- A window collects its signals' distinct selectors in first-seen order. A signal without
  selectors is counted (``signals``) but asks nothing. An empty selector, or one over 65535
  UTF-8 bytes (the OPRF's input limit), is not sent and is counted in ``selectors_rejected``.
- A *late* signal (``ts`` before the open window) joins the open window: its selectors are still
  deconflicted, once, in the next row, which counts it in ``late``. Nothing is dropped.
- A closed window with at least one selector (sent or rejected) gives exactly one
  :class:`DeconflictionResult`; a window without any gives none. Its selectors are sent in one
  request, or in near-equal requests of at most ``max_batch`` each.
- Every signal passes on, unchanged and in order, the moment it arrives: the step never holds a
  signal, so a slow or absent partner delays no other step and loses nothing.
- The partner is called off the worker's thread (:class:`PartnerCalls`: at most
  ``max_in_flight`` windows asked at once per worker, ``max_queued`` more waiting), so a slow
  partner delays neither signals nor other tenants' rows beyond that bound; a tenant's rows come
  out in its window order, when answered. A window asked but not answered at a snapshot is in
  the snapshot (:class:`PsiTenantState`) and asked again on resume; at end of input the step
  waits for every answer.

Outcomes. A row carries the matched selectors (``full_intersection``) or only their count
(``intersection_cardinality``), or a reason code and no answer: a denial from either side's
``policies/psi.rego`` (``POLICY_GEO_BLOCK``, ``THRESHOLD_NOT_MET``, ``RATE_LIMITED``), a key that
expired twice (``EPOCH_EXPIRED``), an unusable reply (``MALFORMED``), or a server that did not
answer (:data:`PSI_UNAVAILABLE`). A matcher's ``OSError`` (``ConnectionError``, ``TimeoutError``;
the HTTP matcher turns httpx's transport errors into ``ConnectionError``) is retried
``retry_attempts`` times in all, with jittered exponential backoff, then reported on the row, and
for ``unavailable_pause_seconds`` after that the worker's windows are reported without trying, so
a down partner costs the flow one window's retries, not every window's. Any other exception is a
bug and stops the flow. Denials are not retried: a retry would spend the
rate limit it may have been refused for. A tenant whose residency tag is not the client's
configured ``residency`` is not sent at all (``POLICY_GEO_BLOCK``): our policy is asked about
that residency, so no selector leaves under a residency it does not have.

Determinism. A row has no wall-clock field: the window, the counts, the offsets, the provenance
and :func:`provenance_digest` follow from the tenant's input alone. The answer also depends on
the partner's set, an input from outside the flow: a replay reproduces the rows only against the
same partner set, and the row records the server's key (``key_epoch``, ``key_id``) so a verifier
can tell which one answered. ``RATE_LIMITED`` depends on request timing, and the idle flush on
the wall clock: a bounded run disables the idle flush.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

from bytewax.dataflow import Stream, operator
from bytewax.operators import StatefulBatchLogic

from core import tracing
from core.records import Tagged
from core.retry import RetryPolicy
from core.settings import PsiSettings
from operators.batching import Runs, stateful_runs_at
from operators.psi_match import (
    PSI_UNAVAILABLE,
    Deconflicter,
    Matcher,
    Pause,
    check_settings,
    http_matcher_factory,
)
from operators.psi_window import (
    ClosedWindow,
    DeconflictionResult,
    TenantDeconfliction,
    provenance_digest,
)
from operators.sealed_state import sealed_builder
from operators.split import split_runs
from psi.messages import PsiMode
from tenancy.sealed_state import StateSeal

__all__ = [
    "PSI_UNAVAILABLE",
    "ClosedWindow",
    "Deconflicter",
    "DeconflictionResult",
    "Matcher",
    "PartnerCalls",
    "PsiOut",
    "PsiSettings",
    "PsiTenantState",
    "TenantDeconfliction",
    "check_settings",
    "http_matcher_factory",
    "provenance_digest",
    "psi_step",
    "push_batch",
]

log = logging.getLogger(__name__)

#: How often a tenant with windows at the partner looks for their answers (wall clock).
ANSWER_POLL_SECONDS = 0.02

_Out = Tagged | DeconflictionResult


class PartnerCalls:
    """One worker's calls to the partner, off the worker's thread.

    At most ``max_in_flight`` windows are asked at once (each caller thread builds its own
    :class:`Deconflicter`, sharing one :class:`Pause`, so a down partner still costs one window's
    retries); at most ``max_queued`` more wait for a caller. Past that, :meth:`ask` blocks the
    worker until a window is answered: the bound on memory, and backpressure on the flow only
    when the partner is slower than windows close.
    """

    def __init__(
        self, build: Callable[[Pause], Deconflicter], max_in_flight: int, max_queued: int
    ) -> None:
        self._build = build
        self._pause = Pause()
        self._local = threading.local()
        self._slots = threading.BoundedSemaphore(max_in_flight + max_queued)
        self._pool = ThreadPoolExecutor(max_in_flight, thread_name_prefix="psi-partner")

    def ask(self, window: ClosedWindow) -> Future[DeconflictionResult]:
        """The future row of ``window``; waits only while the bound is reached."""
        self._slots.acquire()
        try:
            answer = self._pool.submit(self._answer, window)
        except BaseException:
            self._slots.release()
            raise
        answer.add_done_callback(lambda _answer: self._slots.release())
        return answer

    def _answer(self, window: ClosedWindow) -> DeconflictionResult:
        deconflicter: Deconflicter | None = getattr(self._local, "deconflicter", None)
        if deconflicter is None:
            deconflicter = self._local.deconflicter = self._build(self._pause)
        return deconflicter(window)


def push_batch(state: TenantDeconfliction, items: Iterable[Tagged]) -> list[ClosedWindow]:
    """:meth:`TenantDeconfliction.push` each of ``items`` in order; the windows they closed, in
    order (the batch entry point; ``push`` per record is its reference)."""
    closed_windows: list[ClosedWindow] = []
    push = state.push
    for item in items:
        start = 0 if item.decoded.trace is None else time.time_ns()
        closed = push(item)
        if closed is not None:
            closed_windows.append(closed)
        if start:
            tracing.record_stage("psi", item, start, outcome="windowed")
    return closed_windows


@dataclasses.dataclass(frozen=True, slots=True)
class PsiTenantState:
    """What a tenant's psi step snapshots: its open window, and the closed windows asked of the
    partner but not yet answered (asked again on resume: the answer is a function of the
    window and the partner's set, so the row is the same)."""

    open: TenantDeconfliction
    asked: tuple[ClosedWindow, ...] = ()


class _PsiLogic(StatefulBatchLogic[Tagged, _Out, PsiTenantState]):
    """Bytewax glue: batches, EOF and a timer feed one tenant's :class:`TenantDeconfliction`; closed
    windows go to the worker's :class:`PartnerCalls` and their rows come out in window order,
    when answered.

    The timer serves two ends: while windows are at the partner it polls for their answers
    every :data:`ANSWER_POLL_SECONDS`; in tail mode it also closes a window idle for
    ``idle_seconds``.
    """

    def __init__(
        self,
        resume: PsiTenantState | TenantDeconfliction | None,
        window_seconds: float,
        calls: Callable[[], PartnerCalls] | None,
        idle_seconds: float,
    ) -> None:
        if isinstance(resume, TenantDeconfliction):  # a snapshot of the synchronous step
            resume = PsiTenantState(resume)
        self.state = resume.open if resume is not None else None
        self.window_seconds = window_seconds
        self.calls = calls
        self.idle = timedelta(seconds=idle_seconds) if idle_seconds > 0 else None
        self.last_item = datetime.now(UTC)
        #: Closed windows in order, each with its answer to come.
        self.asked: list[tuple[ClosedWindow, Future[DeconflictionResult]]] = []
        for window in resume.asked if resume is not None else ():
            self._ask(window)

    def _ask(self, window: ClosedWindow) -> None:
        assert self.calls is not None
        self.asked.append((window, self.calls().ask(window)))

    def _answered(self, wait: bool = False) -> list[_Out]:
        """The rows answered so far, in window order (all of them with ``wait``). A matcher's
        bug (any exception but an outage, which is a row) stops the flow here."""
        rows: list[_Out] = []
        while self.asked and (wait or self.asked[0][1].done()):
            rows.append(self.asked.pop(0)[1].result())
        return rows

    def on_batch(self, values: list[Tagged]) -> tuple[Iterable[_Out], bool]:
        if self.calls is None:  # the step is off: keep nothing
            for value in values:
                if value.decoded.trace is not None:
                    tracing.record_stage("psi", value, time.time_ns(), outcome="off")
            return values, StatefulBatchLogic.DISCARD
        if self.state is None:
            self.state = TenantDeconfliction(self.window_seconds)
        self.last_item = datetime.now(UTC)
        out: list[_Out] = list(values)
        for closed in push_batch(self.state, values):
            self._ask(closed)
        out.extend(self._answered())
        return out, StatefulBatchLogic.RETAIN

    def on_notify(self) -> tuple[Iterable[_Out], bool]:
        if self.idle is not None and datetime.now(UTC) >= self.last_item + self.idle:
            self._close_open()
        return self._answered(), StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[Iterable[_Out], bool]:
        if self.calls is None:
            return (), StatefulBatchLogic.DISCARD
        self._close_open()
        return self._answered(wait=True), StatefulBatchLogic.RETAIN

    def _close_open(self) -> None:
        # The state stays: it remembers the tenant's window, so later signals before it are late.
        closed = self.state.flush() if self.state is not None else None
        if closed is not None:
            self._ask(closed)

    def notify_at(self) -> datetime | None:
        if self.asked:
            return datetime.now(UTC) + timedelta(seconds=ANSWER_POLL_SECONDS)
        if self.idle is None or self.state is None or not self.state.pending:
            return None
        # The wall clock, for the idle flush of tail mode only (see the module docstring).
        return self.last_item + self.idle

    def snapshot(self) -> PsiTenantState:
        assert self.state is not None, "Bytewax snapshots a key only after its first item"
        # Bytewax requires an immutable copy: the state keeps changing after this returns.
        return PsiTenantState(copy.deepcopy(self.state), tuple(w for w, _ in self.asked))


def _tenant(item: Tagged) -> str:
    """The state key of a psi step's item (its stream is keyed by tenant)."""
    return item.decoded.signal.tenant_id


@dataclasses.dataclass(frozen=True)
class PsiOut:
    """The two streams out of :func:`psi_step`."""

    #: Every input, unchanged: runs keyed by tenant, in each tenant's input order.
    passed: Runs[Tagged]
    #: One row per closed (tenant, window) with selectors, unkeyed (for the lake table).
    results: Stream[DeconflictionResult]


@operator
def psi_step(
    step_id: str,
    up: Runs[Tagged],
    settings: PsiSettings,
    matcher_factory: Callable[[], Matcher],
    *,
    sleep: Callable[[float], None] = time.sleep,
    seal: StateSeal | None = None,
) -> PsiOut:
    """Deconflict each tenant's selectors per window; ``up``: runs keyed by ``tenant_id``.

    See the module docstring for the contract. ``matcher_factory`` is called lazily, once per
    caller thread of a worker's :class:`PartnerCalls`, when its first window is asked (so
    building the flow connects to nothing); production passes :func:`http_matcher_factory`.
    ``sleep`` waits between retries. With ``settings.server_url`` empty the step passes every
    signal and keeps no state; the dataflow has the same steps either way. A resumed state keeps
    the window length it was built with. With ``seal``, a tenant's snapshot (its open window's
    selectors, the windows asked) is sealed under its keys (:mod:`operators.sealed_state`).
    Raises :class:`~core.errors.ConfigError` for unusable settings, at build time.
    """
    check_settings(settings)
    mode = PsiMode(settings.mode)
    retry = RetryPolicy(
        settings.retry_attempts, settings.retry_base_seconds, settings.retry_cap_seconds
    )
    local = threading.local()

    def build(pause: Pause) -> Deconflicter:
        return Deconflicter(
            matcher_factory(),
            mode,
            settings.server_partner_id,
            residency=settings.residency,
            max_batch=settings.max_batch,
            retry=retry,
            pause_seconds=settings.unavailable_pause_seconds,
            sleep=sleep,
            paused=pause,
        )

    def calls() -> PartnerCalls:
        """The worker's partner calls, built when its first window closes."""
        built: PartnerCalls | None = getattr(local, "calls", None)
        if built is None:
            built = local.calls = PartnerCalls(build, settings.max_in_flight, settings.max_queued)
        return built

    on = calls if settings.server_url else None

    def builder(resume: PsiTenantState | TenantDeconfliction | None) -> _PsiLogic:
        return _PsiLogic(resume, settings.window_seconds, on, settings.idle_flush_seconds)

    # The id and the snapshot (a PsiTenantState) of the per-item op.stateful it replaced.
    sealed = sealed_builder(builder, seal, f"{step_id}.deconflict", _tenant, whole=True)
    out = stateful_runs_at("deconflict", up, sealed)
    passed, results = split_runs("split", out, Tagged, DeconflictionResult)
    return PsiOut(passed, results)
