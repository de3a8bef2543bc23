"""Live events: one Redis subscription per subscribed tenant and process, fanned out to every
GraphQL subscriber of that tenant.

The Redis sink publishes one JSON message per applied change on ``tenant:<t>:events``
(:mod:`sinks.redis`: ``kind`` ``signal`` or ``score``). The first subscriber of a tenant opens a
subscription to that tenant's channel on its own connection, logged in as the caller's tenant
user (:mod:`api.tenant_redis`), so Redis itself refuses a channel of another tenant
(``STORE_FORBIDDEN``); the last one leaving closes it. (A pattern subscription over every tenant
would need a user allowed every channel.) The cost is one Redis connection per tenant with
subscribers in each ``igflow serve``: mind Redis's ``maxclients`` (10,000 by default).

Events are coalesced in windows of ``coalesce_ms``: the first event of a tenant opens its window,
and when the window closes each subscriber of that tenant gets one batch: every signal of the
window in order, and only the newest score (a score is a state, so an older one in the same
window is superseded). So a subscriber hears of a change within ``coalesce_ms`` plus the fan-out
time, and a burst of changes costs one wake-up per subscriber and window, not one per change.

A subscriber that falls behind by more than ``max_pending`` batches is ended with a
``SUBSCRIBER_TOO_SLOW`` error instead of buffering without bound (the client resubscribes and
reads the current score). A subscription Redis does not confirm within ``subscribe_timeout_s``
ends with ``STORE_UNAVAILABLE``; a lost one is re-established (events in the gap are missed, as
with any pub/sub: the score is a state the client can re-read).
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
from api.tenant_redis import TenantRedisUsers, refused_login
from core.reasons import ReasonCode
from core.redis_tls import async_redis_client
from core.store_keys import events_channel

__all__ = ["EventBatch", "EventHub", "SubscriberTooSlow", "SubscriptionEnded", "TenantStream"]

log = logging.getLogger(__name__)


class SubscriptionEnded(Exception):
    """A subscription the hub ended; ``reason`` is the code its subscriber is told."""

    reason = ReasonCode.STORE_UNAVAILABLE

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class SubscriberTooSlow(SubscriptionEnded):
    """The subscriber's queue overflowed."""

    reason = ReasonCode.SUBSCRIBER_TOO_SLOW

    def __init__(self, detail: str = "the subscriber fell behind") -> None:
        super().__init__(detail)


class _Forbidden(SubscriptionEnded):
    reason = ReasonCode.STORE_FORBIDDEN


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
    """One tenant's subscription as one caller: its listener, subscribers and open window."""

    __slots__ = (
        "caller",
        "failure",
        "first",
        "id",
        "listener",
        "ready",
        "score",
        "signals",
        "subscribers",
        "timer",
    )

    def __init__(self, tenant_id: str, caller: str) -> None:
        self.id = tenant_id
        self.caller = caller
        self.subscribers: set[asyncio.Queue[EventBatch | None]] = set()
        self.signals: list[dict[str, Any]] = []
        self.score: dict[str, Any] | None = None
        self.first = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.listener: asyncio.Task[None] | None = None
        #: Set once Redis confirmed the subscription, or it failed for good (``failure``).
        self.ready = asyncio.Event()
        self.failure: SubscriptionEnded | None = None


class EventHub:
    """Subscribers per tenant, each tenant fed from its own Redis subscription."""

    def __init__(
        self,
        redis_url: str,
        coalesce_ms: float = 100.0,
        max_pending: int = 256,
        users: TenantRedisUsers | None = None,
        subscribe_timeout_s: float = 10.0,
    ) -> None:
        self._url = redis_url
        self._users = users
        self._window = coalesce_ms / 1000.0
        self._max_pending = max_pending
        self._timeout = subscribe_timeout_s
        self._tenants: dict[tuple[str, str], _Tenant] = {}
        #: Every listener task, retired ones included until they end: :meth:`close` awaits
        #: them all, so none is left pending (and its connection open) when the loop stops.
        self._listeners: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Nothing to do before the first subscriber (kept for the server's lifespan)."""

    async def _listen(self, tenant: _Tenant) -> None:
        delay = 0.1
        channel = events_channel(tenant.id)
        while True:
            client: aioredis.Redis | None = None
            pubsub = None
            try:
                client = await self._client(tenant)
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                await pubsub.subscribe(channel)
                tenant.ready.set()
                delay = 0.1
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        self._receive(tenant, message["data"])
            except rx.NoPermissionError as exc:
                self._fail(tenant, _Forbidden(f"redis refused the channel: {exc}"))
                return
            except (rx.RedisError, OSError) as exc:
                if self._users is not None and refused_login(exc):
                    self._users.forget(tenant.caller)  # Redis lost the user: provision again
                log.warning("event hub: %s subscription lost (%s), resubscribing", tenant.id, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            finally:
                with contextlib.suppress(rx.RedisError, OSError):
                    if pubsub is not None:
                        await pubsub.aclose()  # type: ignore[no-untyped-call]
                    if client is not None:
                        await client.aclose()

    async def _client(self, tenant: _Tenant) -> aioredis.Redis:
        """A client logged in as ``tenant``'s caller's tenant user (or as the URL's user when
        tenant users are off)."""
        if self._users is None:
            return async_redis_client(self._url)
        user, password = await self._users.login(tenant.caller)
        return async_redis_client(self._url, username=user, password=password)

    def _fail(self, tenant: _Tenant, failure: SubscriptionEnded) -> None:
        tenant.failure = failure
        tenant.ready.set()
        for queue in tenant.subscribers:
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(None)

    def _receive(self, tenant: _Tenant, data: bytes) -> None:
        if not tenant.subscribers:
            return
        try:
            event = json.loads(data)
        except ValueError:
            log.warning("event hub: a message for %s is not JSON", tenant.id)
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
            self._retire(tenant)

    def _retire(self, tenant: _Tenant) -> None:
        """Close the subscription of a tenant nobody listens to any more."""
        if self._tenants.get((tenant.caller, tenant.id)) is tenant:
            del self._tenants[tenant.caller, tenant.id]
        if tenant.listener is not None:
            tenant.listener.cancel()
            tenant.listener = None

    async def subscribe(
        self, tenant_id: str, caller: str | None = None, opened: asyncio.Event | None = None
    ) -> AsyncGenerator[EventBatch, None]:
        """The tenant's event batches, from once Redis confirms the subscription on, until the
        caller stops iterating. ``caller``: the tenant of the principal asking (default:
        ``tenant_id``), whose Redis user subscribes. Raises :class:`SubscriptionEnded`.
        ``opened`` is set once the subscription is live (every event published from then on
        reaches it) or has failed, before the first batch is awaited."""
        caller = tenant_id if caller is None else caller
        tenant = self._tenants.get((caller, tenant_id))
        if tenant is None:
            tenant = self._tenants[caller, tenant_id] = _Tenant(tenant_id, caller)
            tenant.listener = asyncio.create_task(
                self._listen(tenant), name=f"igflow-events-{tenant_id}"
            )
            self._listeners.add(tenant.listener)
            tenant.listener.add_done_callback(self._listeners.discard)
        queue: asyncio.Queue[EventBatch | None] = asyncio.Queue(self._max_pending + 1)
        tenant.subscribers.add(queue)
        counted = False
        try:
            try:
                await asyncio.wait_for(tenant.ready.wait(), self._timeout)
            except TimeoutError:
                msg = "the events store did not confirm the subscription"
                raise SubscriptionEnded(msg) from None
            if tenant.failure is not None:
                raise tenant.failure
            SUBSCRIBERS.inc()
            counted = True
            if opened is not None:
                opened.set()
            while True:
                batch = await queue.get()
                if batch is None:
                    raise tenant.failure or SubscriberTooSlow()
                yield batch
        finally:
            if opened is not None:
                opened.set()  # failed before it was live: wake whoever waits for it
            if counted:
                SUBSCRIBERS.dec()
            tenant.subscribers.discard(queue)
            if not tenant.subscribers and (tenant.timer is None or tenant.failure is not None):
                self._retire(tenant)

    @property
    def subscribers(self) -> int:
        """Subscribers of this process, over all tenants."""
        return sum(len(t.subscribers) for t in self._tenants.values())

    async def close(self) -> None:
        tasks = list(self._listeners)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tenants.clear()


class TenantStream:
    """What a subscription resolver returns: one tenant's events of one kind, as seen by the
    caller's tenant.

    The WebSocket handler recognises it and fans out rendered payloads per window (see
    :mod:`api.graphql_http`); iterated directly it yields the events one by one.
    """

    def __init__(self, hub: EventHub, tenant_id: str, kind: str, caller: str | None = None) -> None:
        self.hub = hub
        self.tenant_id = tenant_id
        self.kind = kind
        self.caller = tenant_id if caller is None else caller
        #: Set when the subscription of :meth:`batches` is live, or has failed.
        self.opened = asyncio.Event()

    def batches(self) -> AsyncGenerator[EventBatch, None]:
        return self.hub.subscribe(self.tenant_id, self.caller, self.opened)

    async def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        async for batch in self.batches():
            for event in batch.events(self.kind):
                yield event
