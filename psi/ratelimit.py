"""A sliding-window request counter per partner: the number the policy's rate limit reads.

The counter only counts; the policy decides (``recent_requests >= max_requests`` means
``RATE_LIMITED``). Every attempt counts, denied ones included, so a partner cannot probe for
free by sending requests that fail.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

__all__ = ["SlidingWindow"]


class SlidingWindow:
    """Counts events per key over the last ``seconds`` of ``clock``. Thread-safe."""

    def __init__(
        self, seconds: float, clock: Callable[[], float] = time.monotonic, *, cap: int = 100_000
    ) -> None:
        if seconds <= 0 or cap < 1:
            msg = "the window and the cap must be positive"
            raise ValueError(msg)
        self.seconds = seconds
        #: Events kept per key: counts saturate there, which bounds memory under a flood.
        self.cap = cap
        self._clock = clock
        self._events: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def hit(self, key: str) -> int:
        """Record one event for ``key``; return how many came before it within the window."""
        now = self._clock()
        with self._lock:
            events = self._events.setdefault(key, deque(maxlen=self.cap))
            while events and events[0] <= now - self.seconds:
                events.popleft()
            before = len(events)
            events.append(now)
            return before
