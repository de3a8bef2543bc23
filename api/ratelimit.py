"""Per-tenant token buckets: the API's admission control.

Each tenant has its own bucket of ``burst`` tokens refilled at ``rate`` per second; a request
takes one token or is refused with the seconds until one is available (``Retry-After``). Buckets
are independent, so one tenant's flood empties only its own bucket: another tenant's requests
are admitted as before, and a refused request costs a dictionary lookup and a subtraction
before any store is touched.

The buckets live in the process: behind a load balancer with N replicas a tenant gets up to N
times the rate (a shared limit would need a Redis-side bucket: one round trip per request).
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["FailureBuckets", "TokenBuckets"]


class TokenBuckets:
    """Token buckets keyed by tenant. Not thread-safe: one event loop owns it."""

    __slots__ = ("_buckets", "_burst", "_clock", "_rate")

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0 or burst < 1:
            msg = f"rate must be > 0 and burst >= 1 (got {rate}, {burst})"
            raise ValueError(msg)
        self._rate = rate
        self._burst = float(burst)
        self._clock = clock
        #: tenant -> [tokens, time of the last refill]
        self._buckets: dict[str, list[float]] = {}

    def take(self, tenant_id: str) -> float:
        """Take a token for ``tenant_id``: 0.0 if admitted, else the seconds to wait."""
        now = self._clock()
        bucket = self._buckets.get(tenant_id)
        if bucket is None:
            self._buckets[tenant_id] = [self._burst - 1.0, now]
            return 0.0
        return _spend(
            bucket, min(self._burst, bucket[0] + (now - bucket[1]) * self._rate), now, self._rate
        )

    def __len__(self) -> int:
        return len(self._buckets)


class FailureBuckets:
    """How many failures each key (a client address) may still have: ``burst``, refilled at
    ``rate`` per second. Only keys with a recent failure are held (a bucket that has refilled is
    dropped), at most ``max_keys`` of them (the oldest dropped first). Not thread-safe."""

    __slots__ = ("_buckets", "_burst", "_clock", "_max_keys", "_rate")

    def __init__(
        self,
        rate: float,
        burst: int,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0 or burst < 1 or max_keys < 1:
            msg = f"rate must be > 0, burst and max_keys >= 1 (got {rate}, {burst}, {max_keys})"
            raise ValueError(msg)
        self._rate = rate
        self._burst = float(burst)
        self._max_keys = max_keys
        self._clock = clock
        #: key -> [failures still allowed, time of the last refill]
        self._buckets: dict[str, list[float]] = {}

    def wait(self, key: str) -> float:
        """0.0 if ``key`` may fail again now, else the seconds until it may. Takes nothing."""
        bucket = self._buckets.get(key)
        if bucket is None:
            return 0.0
        tokens = bucket[0] + (self._clock() - bucket[1]) * self._rate
        if tokens >= self._burst:
            del self._buckets[key]  # refilled: as if it had never failed
            return 0.0
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self._rate

    def take(self, key: str) -> float | None:
        """Reserve one failure for a request of ``key`` about to be checked.

        ``None``: ``key`` has no recent failure, nothing is reserved (count a failure with
        :meth:`fail`); ``0.0``: one is reserved (:meth:`refund` it if the request passes);
        otherwise the seconds until one may be, nothing reserved. Reserving before the check,
        not counting after it, keeps concurrent requests of a cut-off key from all passing at
        each refill.
        """
        bucket = self._buckets.get(key)
        if bucket is None:
            return None
        now = self._clock()
        tokens = bucket[0] + (now - bucket[1]) * self._rate
        if tokens >= self._burst:
            del self._buckets[key]  # refilled: as if it had never failed
            return None
        return _spend(bucket, tokens, now, self._rate)

    def refund(self, key: str) -> None:
        """Give back a failure reserved by :meth:`take` (the request did not fail)."""
        bucket = self._buckets.get(key)
        if bucket is not None:
            bucket[0] = min(self._burst, bucket[0] + 1.0)

    def fail(self, key: str) -> bool:
        """Count one failure of ``key``; ``True`` if it used the last one allowed."""
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            while len(self._buckets) >= self._max_keys:
                self._buckets.pop(next(iter(self._buckets)))  # the oldest
            self._buckets[key] = bucket = [self._burst, now]
        tokens = min(self._burst, bucket[0] + (now - bucket[1]) * self._rate)
        bucket[0], bucket[1] = max(0.0, tokens - 1.0), now
        return tokens >= 1.0 > bucket[0]

    def __len__(self) -> int:
        return len(self._buckets)


def _spend(bucket: list[float], tokens: float, now: float, rate: float) -> float:
    """Store ``bucket``'s refilled ``tokens`` as of ``now`` and take one if there is one: 0.0
    when taken, else the seconds until one will be (nothing taken)."""
    bucket[1] = now
    if tokens >= 1.0:
        bucket[0] = tokens - 1.0
        return 0.0
    bucket[0] = tokens
    return (1.0 - tokens) / rate
