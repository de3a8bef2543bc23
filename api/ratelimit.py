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

__all__ = ["TokenBuckets"]


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
        tokens = min(self._burst, bucket[0] + (now - bucket[1]) * self._rate)
        bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return 0.0
        bucket[0] = tokens
        return (1.0 - tokens) / self._rate

    def __len__(self) -> int:
        return len(self._buckets)
