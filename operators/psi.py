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
from datetime import UTC, datetime, timedelta

import bytewax.operators as op
from bytewax.dataflow import Stream, operator
from bytewax.operators import KeyedStream, StatefulLogic

from core.records import Tagged
from core.retry import RetryPolicy
from core.settings import PsiSettings
from operators.psi_match import (
    PSI_UNAVAILABLE,
    Deconflicter,
    Matcher,
    check_settings,
    http_matcher_factory,
)
from operators.psi_window import (
    ClosedWindow,
    DeconflictionResult,
    TenantDeconfliction,
    provenance_digest,
)
from operators.split import split_keyed
from psi.messages import PsiMode

__all__ = [
    "PSI_UNAVAILABLE",
    "ClosedWindow",
    "Deconflicter",
    "DeconflictionResult",
    "Matcher",
    "PsiOut",
    "PsiSettings",
    "TenantDeconfliction",
    "check_settings",
    "http_matcher_factory",
    "provenance_digest",
    "psi_step",
]

log = logging.getLogger(__name__)


_Out = Tagged | DeconflictionResult


class _PsiLogic(StatefulLogic[Tagged, _Out, TenantDeconfliction]):
    """Bytewax glue: items, EOF and an idle timer feed one tenant's :class:`TenantDeconfliction`."""

    def __init__(
        self,
        state: TenantDeconfliction | None,
        window_seconds: float,
        deconflicter: Callable[[], Deconflicter] | None,
        idle_seconds: float,
    ) -> None:
        self.state = state
        self.window_seconds = window_seconds
        self.deconflicter = deconflicter
        self.idle = timedelta(seconds=idle_seconds) if idle_seconds > 0 else None

    def on_item(self, value: Tagged) -> tuple[Iterable[_Out], bool]:
        if self.deconflicter is None:  # the step is off: keep nothing
            return (value,), StatefulLogic.DISCARD
        if self.state is None:
            self.state = TenantDeconfliction(self.window_seconds)
        closed = self.state.push(value)
        if closed is None:
            return (value,), StatefulLogic.RETAIN
        return (self.deconflicter()(closed), value), StatefulLogic.RETAIN

    def on_notify(self) -> tuple[Iterable[_Out], bool]:
        return self._flush()

    def on_eof(self) -> tuple[Iterable[_Out], bool]:
        return self._flush()

    def _flush(self) -> tuple[Iterable[_Out], bool]:
        if self.state is None or self.deconflicter is None:
            return (), StatefulLogic.DISCARD
        closed = self.state.flush()
        # Retained: the state remembers the tenant's window, so later signals before it are late.
        return ((self.deconflicter()(closed),) if closed else ()), StatefulLogic.RETAIN

    def notify_at(self) -> datetime | None:
        if self.idle is None or self.state is None or not self.state.pending:
            return None
        # The wall clock, for the idle flush of tail mode only (see the module docstring).
        return datetime.now(UTC) + self.idle

    def snapshot(self) -> TenantDeconfliction:
        assert self.state is not None, "Bytewax snapshots a key only after its first item"
        # Bytewax requires an immutable copy: the state keeps changing after this returns.
        return copy.deepcopy(self.state)


@dataclasses.dataclass(frozen=True)
class PsiOut:
    """The two streams out of :func:`psi_step`."""

    #: Every input, unchanged, keyed by tenant and in each tenant's input order.
    passed: KeyedStream[Tagged]
    #: One row per closed (tenant, window) with selectors, unkeyed (for the lake table).
    results: Stream[DeconflictionResult]


@operator
def psi_step(
    step_id: str,
    up: KeyedStream[Tagged],
    settings: PsiSettings,
    matcher_factory: Callable[[], Matcher],
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> PsiOut:
    """Deconflict each tenant's selectors per window; ``up`` must be keyed by ``tenant_id``.

    See the module docstring for the contract. ``matcher_factory`` is called lazily, once per
    worker thread, when the first window with selectors closes (so building the flow connects
    to nothing); production passes :func:`http_matcher_factory`. ``sleep`` waits between
    retries. With ``settings.server_url`` empty the step passes every signal and keeps no state;
    the dataflow has the same steps either way. A resumed state keeps the window length it was
    built with. Raises :class:`~core.errors.ConfigError` for unusable settings, at build time.
    """
    check_settings(settings)
    mode = PsiMode(settings.mode)
    retry = RetryPolicy(
        settings.retry_attempts, settings.retry_base_seconds, settings.retry_cap_seconds
    )
    local = threading.local()

    def deconflicter() -> Deconflicter:
        built: Deconflicter | None = getattr(local, "deconflicter", None)
        if built is None:
            built = local.deconflicter = Deconflicter(
                matcher_factory(),
                mode,
                settings.server_partner_id,
                residency=settings.residency,
                max_batch=settings.max_batch,
                retry=retry,
                pause_seconds=settings.unavailable_pause_seconds,
                sleep=sleep,
            )
        return built

    on = deconflicter if settings.server_url else None

    def builder(resume: TenantDeconfliction | None) -> _PsiLogic:
        return _PsiLogic(resume, settings.window_seconds, on, settings.idle_flush_seconds)

    out = op.stateful("deconflict", up, builder)
    results, passed = split_keyed("split", out, DeconflictionResult, Tagged)
    return PsiOut(passed, op.key_rm("results", results))
