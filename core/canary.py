"""Canary signals: what ``igflow probe`` sends through the real path to measure it.

A canary is an ordinary signal of the Avro contract (no schema change) marked by convention:
its ``source`` is :data:`CANARY_SOURCE` **and** its ``type`` is :data:`CANARY_TYPE`. It is
validated, de-duplicated, tagged and landed like any other signal (the lake's ``signals``
table, the Redis stream and channel, the graph), so the probe can read it back through the API,
but the flow drops it just before the score step (:func:`operators.canary.drop_canaries`), so
it never counts in a tenant's coherence score.

Both fields are required so that a tenant's own signals of type ``canary`` still count. A
tenant whose registry entry lists its sources must list :data:`CANARY_SOURCE` to be probed
(otherwise the publish is refused with ``SOURCE_NOT_ALLOWED`` and the probe says so). A tenant
that sends canary-marked signals itself only removes them from its own score.
"""

from __future__ import annotations

from core.records import Signal

__all__ = ["CANARY_SOURCE", "CANARY_TYPE", "is_canary"]

#: The ``source`` of every canary signal.
CANARY_SOURCE = "igflow-probe"
#: The ``type`` of every canary signal.
CANARY_TYPE = "canary"


def is_canary(signal: Signal) -> bool:
    """True when ``signal`` carries the canary mark (source and type both)."""
    return signal.source == CANARY_SOURCE and signal.type == CANARY_TYPE
