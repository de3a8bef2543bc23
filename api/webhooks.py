"""Signed webhook pushes: the ``X-Igflow-Signature`` header, and refusing one seen before.

A sender holding ``api.webhook_secret`` adds
``X-Igflow-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`` to a push.
:func:`verify` checks it in constant time and only within :data:`TOLERANCE_S` of the server's
clock, either way; anything else about the header (not ASCII, no timestamp, a MAC that is not 64
hex digits) is a refusal with a fixed phrase, never an exception.

Within its window a captured push would verify again, so :class:`ReplayGuard` remembers every
verified signature until its window closes and refuses a second use (``SIGNATURE_REPLAYED``). The
memory is Redis, ``SET webhook:sig:<mac> NX EX <seconds left in the window>``: one atomic
command, shared by every ``igflow serve`` process on that Redis, so a push replayed to another
replica is refused too. It is bounded by the window: each key expires when its signature would be
refused for its timestamp anyway, so Redis holds at most the pushes of the last 600 s (~100 bytes
each). When Redis cannot answer, a signed push is refused as ``STORE_UNAVAILABLE`` (503, the
sender retries): accepting it unchecked would reopen the replay. A push that fails for the
server's own reason afterwards (Kafka did not acknowledge it) gives its signature back, so the
sender's retry of the same request is not taken for a replay.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import hmac
import math

import redis.exceptions as rx

from core.errors import IgflowError
from core.redis_tls import async_redis_client

__all__ = ["TOLERANCE_S", "ReplayGuard", "ReplayStoreUnavailable", "Signature", "sign", "verify"]

#: How far a signature's timestamp may be from the server's clock, in seconds.
TOLERANCE_S = 300
_KEY = "webhook:sig:"


def sign(secret: str, body: bytes, at: int) -> str:
    """The ``X-Igflow-Signature`` value of ``body`` sent at unix time ``at``."""
    mac = hmac.new(secret.encode(), f"{at}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={at},v1={mac}"


@dataclasses.dataclass(frozen=True, slots=True)
class Signature:
    """A verified signature: its timestamp (unix seconds) and its MAC (64 lowercase hex)."""

    at: int
    mac: str


def verify(secret: str, header: str, body: bytes, now: float) -> Signature | str:
    """The verified signature of ``header`` over ``body``, or why it fails (a fixed phrase)."""
    if not secret:
        return "signed pushes are not configured on this server"
    if not header.isascii():
        # hmac.compare_digest raises TypeError on non-ASCII text: refuse before comparing.
        return "the signature header is not ASCII"
    parts = dict(p.strip().split("=", 1) for p in header.split(",") if "=" in p)
    stamp, mac = parts.get("t", ""), parts.get("v1", "")
    if not (stamp.isdigit() and len(stamp) <= 12):
        return "the signature has no timestamp"
    at = int(stamp)
    if abs(now - at) > TOLERANCE_S:
        return "the signature's timestamp is outside the tolerance"
    expected = sign(secret, body, at).partition(",v1=")[2]
    if not hmac.compare_digest(expected.encode(), mac.encode()):
        return "the signature does not verify"
    return Signature(at, mac)


class ReplayStoreUnavailable(IgflowError):
    """Redis did not answer, so a signature's first use cannot be established."""


class ReplayGuard:
    """Verified signatures seen within their window, in the Redis at ``redis_url``.

    Constructing it connects to nothing; the pool opens on first use.
    """

    def __init__(self, redis_url: str, timeout_s: float = 2.0) -> None:
        self._redis = async_redis_client(
            redis_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )

    async def first_use(self, signature: Signature, now: float) -> bool:
        """Record ``signature``; ``True`` if no process had recorded it within its window.

        ``ReplayStoreUnavailable`` when Redis does not answer.
        """
        # The key lives until the signature's timestamp leaves the tolerance, plus a second
        # for the rounding: after that, verify() refuses it by its timestamp alone.
        seconds = max(1, math.ceil(signature.at + TOLERANCE_S - now) + 1)
        try:
            created = await self._redis.set(_KEY + signature.mac, b"1", nx=True, ex=seconds)
        except rx.RedisError as exc:
            msg = f"webhook replay store unavailable: {type(exc).__name__}"
            raise ReplayStoreUnavailable(msg) from exc
        return bool(created)

    async def release(self, signature: Signature) -> None:
        """Forget ``signature`` (its push failed on the server's side, so a retry is no
        replay); best effort: if Redis does not answer, the retry is refused as a replay."""
        with contextlib.suppress(rx.RedisError):
            await self._redis.delete(_KEY + signature.mac)

    async def close(self) -> None:
        await self._redis.aclose()
