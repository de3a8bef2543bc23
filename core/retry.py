"""Retrying: one backoff policy and one retry loop, for every place that waits and tries again.

:class:`RetryPolicy` is the schedule: a bounded number of attempts, and after failed attempt
``n`` a wait of ``base * 2**(n-1)`` seconds capped at ``cap``, jittered. :func:`retrying` is
the loop: it calls, classifies a failure as transient or not, reports it, waits and calls again,
and raises :class:`RetriesExhausted` after the last attempt. Its users:

- the serving sinks (:func:`write_with_retry`): a driver error the sink classifies as transient
  (connection refused or reset, timeout, a paused server) is retried with full jitter; after the
  last attempt the batch is handed to the sink's dead-letter callback (``SINK_UNAVAILABLE``)
  and the flow goes on. Each traced item of a batch gets a ``write <sink>`` span
  (:func:`core.tracing.write_spans`), whichever store module and thread writes it.
  Anything else (a bug, a permission error) propagates and stops the flow,
  which resumes from its last snapshot; because the writes are idempotent, the resumed run
  re-applies nothing twice.
- the lake's appender (:mod:`sinks.iceberg`): a lost commit race is retried after re-reading the
  ledger (pyiceberg's own commit retry stays off), with jitter around the delay.
- the psi step (:mod:`operators.psi_match`): an unreachable partner server is retried, then the
  window is reported unavailable.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Literal, TypeVar

from core import metrics, tracing

__all__ = ["RetriesExhausted", "RetryPolicy", "retrying", "write_with_retry"]

T = TypeVar("T")
R = TypeVar("R")
log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How long to keep trying (defaults: a sink's batch, 10 attempts, about 30 s in all)."""

    attempts: int = 10
    base_seconds: float = 0.1
    cap_seconds: float = 8.0
    #: ``full``: a wait uniform in ``[0, d]`` ("full jitter", which spreads competing clients
    #: the most); ``around``: uniform in ``[d/2, 3d/2]`` (never much shorter than ``d``).
    jitter: Literal["full", "around"] = "full"

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based)."""
        ceiling: float = min(self.cap_seconds, self.base_seconds * 2 ** (attempt - 1))
        if self.jitter == "full":
            return rng.uniform(0.0, ceiling)
        return ceiling * rng.uniform(0.5, 1.5)


class RetriesExhausted(Exception):
    """Every attempt failed with a transient error; ``last`` is the last one (also the cause)."""

    def __init__(self, attempts: int, last: Exception) -> None:
        super().__init__(f"gave up after {attempts} attempts: {last}")
        self.attempts = attempts
        self.last = last


def _tenant_of(item: object) -> str:
    """The tenant of a store's row (a ``tenant_id`` of its own or of its ``signal``)."""
    tenant = getattr(item, "tenant_id", None) or getattr(
        getattr(item, "signal", None), "tenant_id", None
    )
    return str(tenant) if tenant else "(none)"


def _nothing(_attempt: int, _exc: Exception, _wait: float | None) -> None:
    return None


def retrying(
    call: Callable[[int], R],
    policy: RetryPolicy,
    *,
    transient: Callable[[BaseException], bool],
    on_failure: Callable[[int, Exception, float | None], None] = _nothing,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
) -> R:
    """``call(attempt)`` (1-based) until it returns, at most ``policy.attempts`` times.

    A failure ``transient`` rejects propagates at once. A transient one is reported to
    ``on_failure(attempt, exc, wait)``, then slept on (``wait`` seconds from ``policy``); after
    the last attempt ``wait`` is ``None``, nothing is slept and :class:`RetriesExhausted` is
    raised from the failure. ``ValueError`` for a policy of no attempts.
    """
    if policy.attempts < 1:
        msg = f"a retry policy needs at least one attempt, got {policy.attempts}"
        raise ValueError(msg)
    rng = rng or random.Random()
    attempt = 1
    while True:
        try:
            return call(attempt)
        except Exception as exc:
            if not transient(exc):
                raise
            if attempt >= policy.attempts:
                on_failure(attempt, exc, None)
                raise RetriesExhausted(attempt, exc) from exc
            wait = policy.delay(attempt, rng)
            on_failure(attempt, exc, wait)
            sleep(wait)
        attempt += 1


def write_with_retry(
    sink: str,
    batch: Sequence[T],
    write: Callable[[Sequence[T]], None],
    *,
    transient: Callable[[BaseException], bool],
    dead_letter: Callable[[Sequence[T], BaseException], None],
    policy: RetryPolicy = RetryPolicy(),
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
) -> bool:
    """Write ``batch`` with ``write``; ``True`` if it was written, ``False`` if dead-lettered.

    Reports ``igflow_sink_batches_total``, ``igflow_sink_rows_total``,
    ``igflow_sink_retries_total``, ``igflow_sink_dead_letters_total`` and
    ``igflow_sink_write_seconds`` labelled by ``sink``, and a dead-lettered batch's rows in
    ``igflow_ingest_failed_total`` by tenant (the availability SLI's bad events, core/slo.py).
    """
    if not batch:
        return True
    start = time.perf_counter()
    # Each traced item of the batch gets a `write <sink>` span (core.tracing); 0: tracing off.
    traced_from = time.time_ns() if tracing.enabled() else 0

    def failed(attempt: int, exc: Exception, wait: float | None) -> None:
        if wait is None:
            log.error(
                "%s: gave up on a batch of %d after %d attempts: %s",
                sink,
                len(batch),
                attempt,
                exc,
                extra={"op": f"sink.{sink}", "error_code": "SINK_UNAVAILABLE"},
            )
            return
        metrics.SINK_RETRIES.labels(sink).inc()
        log.warning(
            "%s: attempt %d failed (%s); retrying in %.2f s",
            sink,
            attempt,
            exc,
            wait,
            extra={"op": f"sink.{sink}"},
        )

    try:
        retrying(
            lambda _attempt: write(batch),
            policy,
            transient=transient,
            on_failure=failed,
            sleep=sleep,
            rng=rng,
        )
    except RetriesExhausted as gave_up:
        metrics.SINK_DEAD_LETTERS.labels(sink).inc(len(batch))
        for tenant, count in Counter(map(_tenant_of, batch)).items():
            metrics.INGEST_FAILED.labels(metrics.tenant_label(tenant)).inc(count)
        dead_letter(batch, gave_up.last)
        if traced_from:
            tracing.write_spans(sink, batch, traced_from, error="SINK_UNAVAILABLE")
        return False
    metrics.SINK_BATCHES.labels(sink).inc()
    metrics.SINK_ROWS.labels(sink).inc(len(batch))
    metrics.SINK_SECONDS.labels(sink).observe(time.perf_counter() - start)
    if traced_from:
        tracing.write_spans(sink, batch, traced_from)
    return True
