"""Retrying a store write: jittered exponential backoff, a bounded number of attempts.

Every serving sink wraps its one idempotent batch write in :func:`write_with_retry`. A driver
error the sink classifies as transient (connection refused or reset, timeout, a paused server)
is retried after ``base * 2**n`` seconds (capped, with full jitter); after the last attempt the
batch is handed to the sink's dead-letter callback (``SINK_UNAVAILABLE``) and the flow goes on.
Anything else (a bug, a permission error) propagates and stops the flow, which resumes from its
last snapshot; because the writes are idempotent, the resumed run re-applies nothing twice.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from core import metrics

__all__ = ["RetryPolicy", "write_with_retry"]

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How long a sink keeps trying one batch (defaults: 10 attempts, about 30 s in all)."""

    attempts: int = 10
    base_seconds: float = 0.1
    cap_seconds: float = 8.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based): full jitter."""
        return rng.uniform(0.0, min(self.cap_seconds, self.base_seconds * 2 ** (attempt - 1)))


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
    ``igflow_sink_write_seconds`` labelled by ``sink``.
    """
    if not batch:
        return True
    rng = rng or random.Random()
    start = time.perf_counter()
    for attempt in range(1, policy.attempts + 1):
        try:
            write(batch)
        except Exception as exc:
            if not transient(exc):
                raise
            if attempt == policy.attempts:
                log.error(
                    "%s: gave up on a batch of %d after %d attempts: %s",
                    sink,
                    len(batch),
                    attempt,
                    exc,
                    extra={"op": f"sink.{sink}", "error_code": "SINK_UNAVAILABLE"},
                )
                metrics.SINK_DEAD_LETTERS.labels(sink).inc(len(batch))
                dead_letter(batch, exc)
                return False
            metrics.SINK_RETRIES.labels(sink).inc()
            wait = policy.delay(attempt, rng)
            log.warning(
                "%s: attempt %d failed (%s); retrying in %.2f s",
                sink,
                attempt,
                exc,
                wait,
                extra={"op": f"sink.{sink}"},
            )
            sleep(wait)
            continue
        metrics.SINK_BATCHES.labels(sink).inc()
        metrics.SINK_ROWS.labels(sink).inc(len(batch))
        metrics.SINK_SECONDS.labels(sink).observe(time.perf_counter() - start)
        return True
    return False  # not reached: the loop returns or raises
