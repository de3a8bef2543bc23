"""The serving stores' key layout: where a tenant's score, signals and events live in Redis.

The flow's Redis sink writes these keys and the API reads them; every key starts with
``tenant:{id}:`` (a replay's scratch prefix before it), so a tenant's keys never mix.
"""

from __future__ import annotations

__all__ = ["applied_key", "events_channel", "score_key", "signals_key"]


def score_key(tenant_id: str, *, prefix: str = "") -> str:
    """The HASH holding ``tenant_id``'s current score (``prefix``: a replay's scratch prefix)."""
    return f"{prefix}tenant:{tenant_id}:score"


def signals_key(tenant_id: str, *, prefix: str = "") -> str:
    """The capped STREAM of ``tenant_id``'s recent signals."""
    return f"{prefix}tenant:{tenant_id}:signals"


def applied_key(tenant_id: str, *, prefix: str = "") -> str:
    """The HASH ``"topic/partition"`` -> highest offset already in the signals stream."""
    return f"{prefix}tenant:{tenant_id}:signals:applied"


def events_channel(tenant_id: str, *, prefix: str = "") -> str:
    """The pub/sub channel of ``tenant_id``'s applied score changes and signals."""
    return f"{prefix}tenant:{tenant_id}:events"
