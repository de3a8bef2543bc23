"""Live events: one Redis subscription per process, fanned out to every GraphQL subscriber.

The Redis sink publishes one JSON message per applied change on ``tenant:<t>:events``
(:mod:`sinks.redis`: ``kind`` ``signal`` or ``score``). The hub pattern-subscribes once to every
tenant's channel and keeps, per tenant, the subscribers of this process. Events are coalesced
in windows of ``coalesce_ms``: the first event of a tenant opens its window, and when the window
closes each subscriber of that tenant gets one batch: every signal of the window in order, and
only the newest score (a score is a state, so an older one in the same window is superseded).
So a subscriber hears of a change within ``coalesce_ms`` plus the fan-out time, and a burst of
changes costs one wake-up per subscriber and window, not one per change.

A subscriber that falls behind by more than ``max_pending`` batches is ended with a
``SUBSCRIBER_TOO_SLOW`` error instead of buffering without bound (the client resubscribes and
reads the current score).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions as rx

from api.metrics import SUBSCRIBERS
from core.store_keys import events_channel

__all__ = ["EventBatch", "EventHub", "SubscriberTooSlow", "TenantStream"]

log = logging.getLogger(__name__)

_PATTERN = events_channel("*")
_PREFIX, _, _SUFFIX = _PATTERN.partition("*")


class SubscriberTooSlow(Exception):
    """The subscriber's queue overflowed."""


@dataclasses.dataclass(frozen=True, slots=True)
class EventBatch:
    """One coalescing window of one tenant: its signals and newest score event."""

    signals: tuple[dict[str, Any], ...]
    score: dict[str, Any] | None
    #: ``time.perf_counter()`` when the window's first event arrived from Redis.
    received: float
    #: Rendered responses, shared by every subscriber of the window: (operation key) -> the
    #: JSON payloads of its events (see :meth:`rendered`).
    _rendered: dict[str, list[str]] = dataclasses.field(default_factory=dict, compare=False)

    def events(self, kind: str) -> tuple[dict[str, Any], ...]:
        """The window's events of ``kind``: ``signal`` (all, in order) or ``score`` (newest)."""
        if kind == "signal":
            return self.signals
        return () if self.score is None else (self.score,)

    def rendered(self, kind: str, key: str, render: Callable[[dict[str, Any]], str]) -> list[str]:
        """The payloads of ``kind`` events for the operation ``key``, rendered once per window
        (the first subscriber renders; the others reuse the text)."""
        payloads = self._rendered.get(key)
        if payloads is None:
            payloads = self._rendered[key] = [render(e) for e in self.events(kind)]
        return payloads


class _Tenant:
    __slots__ = ("first", "id", "score", "signals", "subscribers", "timer")

    def __init__(self, tenant_id: str) -> None:
        self.id = tenant_id
        self.subscribers: set[asyncio.Queue[EventBatch | None]] = set()
        self.signals: list[dict[str, Any]] = []
        self.score: dict[str, Any] | None = None
        self.first = 0.0
        self.timer: asyncio.TimerHandle | None = None


class EventHub:
    """Subscribers per tenant, fed from one Redis pattern subscription."""

    def __init__(self, redis_url: str, coalesce_ms: float = 100.0, max_pending: int = 256) -> None:
        self._redis = aioredis.Redis.from_url(redis_url)
        self._window = coalesce_ms / 1000.0
        self._max_pending = max_pending
        self._tenants: dict[str, _Tenant] = {}
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    async def start(self) -> None:
        """Start reading Redis; returns once the pattern subscription is confirmed."""
        self._task = asyncio.create_task(self._run(), name="igflow-event-hub")
        await asyncio.wait_for(self._subscribed.wait(), 10.0)

    async def _run(self) -> None:
        delay = 0.1
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.psubscribe(_PATTERN)
                self._subscribed.set()
                delay = 0.1
                async for message in pubsub.listen():
                    if message.get("type") == "pmessage":
                        self._receive(message["channel"], message["data"])
            except (rx.RedisError, OSError) as exc:
                log.warning("event hub: redis subscription lost (%s), resubscribing", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            finally:
                with contextlib.suppress(rx.RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _receive(self, channel: bytes, data: bytes) -> None:
        name = channel.decode()
        tenant_id = name[len(_PREFIX) : len(name) - len(_SUFFIX)]
        tenant = self._tenants.get(tenant_id)
        if tenant is None or not tenant.subscribers:
            return
        try:
            event = json.loads(data)
        except ValueError:
            log.warning("event hub: a message on %s is not JSON", name)
            return
        if tenant.timer is None:
            tenant.first = time.perf_counter()
            loop = asyncio.get_running_loop()
            tenant.timer = loop.call_later(self._window, self._flush, tenant)
        if event.get("kind") == "score":
            tenant.score = event
        elif event.get("kind") == "signal":
            tenant.signals.append(event)

    def _flush(self, tenant: _Tenant) -> None:
        batch = EventBatch(tuple(tenant.signals), tenant.score, tenant.first)
        tenant.signals, tenant.score, tenant.timer = [], None, None
        for queue in tenant.subscribers:
            if queue.qsize() >= self._max_pending:
                # Tell the subscriber (None ends it) rather than grow without bound.
                with contextlib.suppress(asyncio.QueueFull):
                    queue.put_nowait(None)
                continue
            queue.put_nowait(batch)
        if not tenant.subscribers:
            self._tenants.pop(tenant.id, None)

    async def subscribe(self, tenant_id: str) -> AsyncGenerator[EventBatch, None]:
        """The tenant's event batches, from now on, until the caller stops iterating."""
        tenant = self._tenants.get(tenant_id)
        if tenant is None:
            tenant = self._tenants[tenant_id] = _Tenant(tenant_id)
        queue: asyncio.Queue[EventBatch | None] = asyncio.Queue(self._max_pending + 1)
        tenant.subscribers.add(queue)
        SUBSCRIBERS.inc()
        try:
            while True:
                batch = await queue.get()
                if batch is None:
                    raise SubscriberTooSlow
                yield batch
        finally:
            SUBSCRIBERS.dec()
            tenant.subscribers.discard(queue)
            if not tenant.subscribers and tenant.timer is None:
                self._tenants.pop(tenant_id, None)

    @property
    def subscribers(self) -> int:
        """Subscribers of this process, over all tenants."""
        return sum(len(t.subscribers) for t in self._tenants.values())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._redis.aclose()


class TenantStream:
    """What a subscription resolver returns: one tenant's events of one kind.

    The WebSocket handler recognises it and fans out rendered payloads per window (see
    :mod:`api.graphql_http`); iterated directly it yields the events one by one.
    """

    def __init__(self, hub: EventHub, tenant_id: str, kind: str) -> None:
        self.hub = hub
        self.tenant_id = tenant_id
        self.kind = kind

    def batches(self) -> AsyncGenerator[EventBatch, None]:
        return self.hub.subscribe(self.tenant_id)

    async def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        async for batch in self.batches():
            for event in batch.events(self.kind):
                yield event
