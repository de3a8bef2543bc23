"""psi_match: asking the partner's PSI server about a closed window, and what to do when it does
not answer (bounded retries, then a row with ``PSI_UNAVAILABLE``). See :mod:`operators.psi`.
"""

from __future__ import annotations

import atexit
import dataclasses
import itertools
import logging
import math
import random
import ssl
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from core.errors import ConfigError, missing_dependency
from core.reasons import ReasonCode
from core.retry import RetriesExhausted, RetryPolicy, retrying
from core.settings import PsiSettings
from operators.psi_window import ClosedWindow, DeconflictionResult
from psi.client import (
    PSI_PATH,
    Cardinality,
    ClientConfig,
    HttpTransport,
    Intersection,
    Outcome,
    PsiClient,
)
from psi.curve import GroupBatch
from psi.messages import MAX_BATCH, Denial, KeyId, PsiMode
from psi.policy import Agreement, PolicyConfig, PsiPolicy, policy_config

__all__ = [
    "PSI_UNAVAILABLE",
    "Deconflicter",
    "Matcher",
    "Pause",
    "check_settings",
    "http_matcher_factory",
]

log = logging.getLogger(__name__)

#: The reason code of a server that did not answer after the retries.
PSI_UNAVAILABLE = ReasonCode.PSI_UNAVAILABLE.value
#: The default retries of an unreachable server: about half a second in all, then the row says so.
_RETRY = RetryPolicy(attempts=3, base_seconds=0.2, cap_seconds=2.0)


def check_settings(settings: PsiSettings) -> None:
    """Raise :class:`~core.errors.ConfigError` for settings the step cannot work with."""
    problems = []
    if settings.server_url:
        url = urlsplit(settings.server_url)
        if url.scheme not in {"http", "https"} or not url.netloc:
            problems.append(f"server_url must be an http(s) URL, got {settings.server_url!r}")
    if settings.mode not in {m.value for m in PsiMode}:
        problems.append(f"mode must be one of {[m.value for m in PsiMode]}, got {settings.mode!r}")
    if not 0 < settings.window_seconds < timedelta.max.total_seconds():
        problems.append(f"window_seconds must be > 0 and finite, got {settings.window_seconds}")
    if not settings.timeout_seconds > 0:
        problems.append(f"timeout_seconds must be > 0, got {settings.timeout_seconds}")
    if settings.retry_attempts < 1:
        problems.append(f"retry_attempts must be >= 1, got {settings.retry_attempts}")
    if not 0 <= settings.retry_base_seconds <= settings.retry_cap_seconds:
        problems.append("retry_base_seconds must lie in [0, retry_cap_seconds]")
    if not settings.unavailable_pause_seconds >= 0:
        problems.append("unavailable_pause_seconds must be >= 0")
    if not 0 < settings.max_batch <= MAX_BATCH:
        problems.append(f"max_batch must lie in [1, {MAX_BATCH}], got {settings.max_batch}")
    if settings.crypto_threads < 1:
        problems.append(f"crypto_threads must be >= 1, got {settings.crypto_threads}")
    if settings.max_in_flight < 1 or settings.max_queued < 0:
        problems.append("max_in_flight must be >= 1 and max_queued >= 0")
    if problems:
        msg = "invalid psi settings: " + "; ".join(problems)
        raise ConfigError(msg)


class Matcher(Protocol):
    """One PSI roundtrip: ``PsiClient.intersect`` (or anything that answers like it).

    Returns an :data:`~psi.client.Outcome`; raises ``OSError`` (``ConnectionError``,
    ``TimeoutError``) when the server cannot be reached, which the caller retries.
    """

    def __call__(self, selectors: Sequence[str], mode: PsiMode, /) -> Outcome: ...


@dataclasses.dataclass(frozen=True)
class Deconflicter:
    """Turns a :class:`ClosedWindow` into its :class:`DeconflictionResult`: the matcher and how
    to call it (mode, partner, residency, request size, retries). Not state: rebuilt on resume."""

    matcher: Matcher
    mode: PsiMode
    partner: str
    residency: str = "US"
    max_batch: int = MAX_BATCH
    retry: RetryPolicy = _RETRY
    #: Seconds of ``clock`` during which windows skip a server that just failed every retry.
    pause_seconds: float = 30.0
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    #: Jitter of the backoff only: it never reaches a row.
    rng: random.Random = dataclasses.field(default_factory=random.Random)
    #: Until when the server is skipped; shared by the deconflicters of one worker's callers.
    paused: Pause = dataclasses.field(default_factory=lambda: Pause(), repr=False, compare=False)

    def __call__(self, window: ClosedWindow) -> DeconflictionResult:
        """The row of ``window``; never raises for a denial or an unreachable server."""
        started = time.perf_counter()
        selectors = window.selectors
        matched: list[str] = []
        count = 0
        key: KeyId | None = None
        reason: str | None = None
        if not selectors:
            reason = ReasonCode.MALFORMED.value  # every selector was rejected
        elif window.last.tags.residency != self.residency:
            reason = ReasonCode.POLICY_GEO_BLOCK.value
        for chunk in () if reason else _chunks(selectors, self.max_batch):
            outcome = self._call(chunk, window.tenant_id)
            if outcome is None:
                reason = PSI_UNAVAILABLE
            elif isinstance(outcome, Denial):
                reason = outcome.reason.value
            elif isinstance(outcome, Intersection) and self.mode is PsiMode.FULL_INTERSECTION:
                matched.extend(outcome.items)
                count += len(outcome.items)
                key = outcome.key_id
            elif isinstance(outcome, Cardinality) and self.mode is PsiMode.INTERSECTION_CARDINALITY:
                count += outcome.count
                key = outcome.key_id
            else:
                reason = ReasonCode.MALFORMED.value  # an answer for the other mode
            if reason:
                break
        log.info(
            "psi window",
            extra={
                "tenant_id": window.tenant_id,
                "provenance_id": window.last.provenance_id,
                "op": "psi.window",
                "latency_ms": round((time.perf_counter() - started) * 1000, 3),
                "error_code": reason,
            },
        )
        answered = reason is None
        last = window.last
        return DeconflictionResult(
            tenant_id=window.tenant_id,
            window_start=window.window_start,
            window_end=window.window_end,
            mode=self.mode.value,
            partner=self.partner,
            selectors_sent=len(selectors),
            matched=tuple(matched) if answered else (),
            count=count if answered else None,
            reason=reason,
            signals=window.signals,
            late=window.late,
            selectors_rejected=window.selectors_rejected,
            first_offset=window.first_offset,
            last_offset=window.last_offset,
            provenance_digest=window.provenance_digest,
            provenance_id=last.provenance_id,
            provenance=last.provenance,
            policy_version=last.policy_version,
            key_epoch=key.epoch if key is not None and answered else None,
            key_id=_key_text(key) if key is not None and answered else None,
        )

    def _call(self, chunk: Sequence[str], tenant_id: str) -> Outcome | None:
        """The matcher's outcome, or ``None`` once ``retry.attempts`` attempts failed."""
        if self.clock() < self.paused.until:
            return None  # the server failed every retry moments ago: do not wait on it again

        def failed(attempt: int, exc: Exception, wait: float | None) -> None:
            if wait is None:
                log.error(
                    "psi: no answer after %d attempts: %s",
                    attempt,
                    type(exc).__name__,
                    extra={
                        "tenant_id": tenant_id,
                        "op": "psi.match",
                        "error_code": PSI_UNAVAILABLE,
                    },
                )
                return
            log.warning(
                "psi: attempt %d failed (%s); retrying in %.2f s",
                attempt,
                type(exc).__name__,
                wait,
                extra={"tenant_id": tenant_id, "op": "psi.match"},
            )

        try:
            return retrying(
                lambda _attempt: self.matcher(chunk, self.mode),
                self.retry,
                transient=_unreachable,
                on_failure=failed,
                sleep=self.sleep,
                rng=self.rng,
            )
        except RetriesExhausted:
            self.paused.until = self.clock() + self.pause_seconds
            return None


def _unreachable(exc: BaseException) -> bool:
    """The server did not answer (refused, reset, timed out): worth another try. A denial is an
    answer, and anything else is a bug."""
    return isinstance(exc, OSError)


class Pause:
    """Until when (``Deconflicter.clock``) an unreachable server is not tried again. One float,
    written whole: callers on several threads may share one."""

    __slots__ = ("until",)

    def __init__(self) -> None:
        self.until = -math.inf


def _chunks(items: tuple[str, ...], size: int) -> list[tuple[str, ...]]:
    """``items`` in consecutive chunks of at most ``size`` whose lengths differ by at most one
    (so none is tiny: each must still meet the policy's minimum batch)."""
    parts = math.ceil(len(items) / size)
    q, r = divmod(len(items), parts)
    bounds = [0]
    for i in range(parts):
        bounds.append(bounds[-1] + q + (i < r))
    return [items[lo:hi] for lo, hi in itertools.pairwise(bounds)]


def _key_text(key: KeyId) -> str:
    return f"{key.epoch}.{key.generation}.{key.fingerprint:016x}"


class _HttpMatcher:
    """A :class:`~psi.client.PsiClient` whose transport failures read as ``ConnectionError``."""

    def __init__(self, client: PsiClient) -> None:
        import httpx  # only with a partner (http_matcher_factory): 0.1 s, rich and click with it

        self._client = client
        self._transport_error = httpx.TransportError

    def __call__(self, selectors: Sequence[str], mode: PsiMode, /) -> Outcome:
        try:
            return self._client.intersect(selectors, mode)
        except self._transport_error as exc:  # connect, read, write, pool, timeout
            msg = f"PSI server unreachable: {type(exc).__name__}"
            raise ConnectionError(msg) from exc


def http_matcher_factory(settings: PsiSettings) -> Callable[[], Matcher]:
    """A factory of matchers over HTTP to ``settings.server_url``, for :func:`psi_step`.

    Loads and checks our policy now (``ConfigError`` or ``SchemaError`` at start-up, not on the
    first window); each call builds one client with its own ``httpx.Client`` (timeout
    ``timeout_seconds``) and curve threads, closed at interpreter exit. Nothing connects until
    the first request. With the step off (no ``server_url``) the factory must not be called.
    """
    if not settings.server_url:

        def off() -> Matcher:
            msg = "the psi step is off (no server_url): no matcher to build"
            raise ConfigError(msg)

        return off
    check_settings(settings)
    try:
        import httpx  # only with a partner: the step off imports no HTTP client
    except ModuleNotFoundError as exc:
        raise missing_dependency(exc, "psi.server_url is set") from exc
    if settings.policy_data:
        config = policy_config(Path(settings.policy_data))
    else:
        config = PolicyConfig(agreements=(Agreement(settings.server_partner_id),))
    policy = PsiPolicy.load(config)  # thread-safe: shared by every worker's client
    url = settings.server_url.rstrip("/") + PSI_PATH
    server = ClientConfig(settings.server_partner_id, settings.server_region, settings.residency)

    def build() -> Matcher:
        # A partner signed by the named CA, else by one the system trusts.
        verify = ssl.create_default_context(cafile=settings.ca_file) if settings.ca_file else True
        http = httpx.Client(timeout=settings.timeout_seconds, verify=verify)
        batch = GroupBatch(settings.crypto_threads)
        atexit.register(batch.close)
        atexit.register(http.close)
        transport = HttpTransport(http, url, partner_id=settings.partner_id, region=settings.region)
        return _HttpMatcher(PsiClient(transport, policy, server, batch=batch))

    return build
