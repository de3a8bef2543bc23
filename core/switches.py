"""Kill switches: what may be switched off, how a step or the API asks, and the hold rule.

A switch is a ``(kind, name)`` pair that is on unless an operator switched it off
(``igflow switch off KIND NAME``); the Postgres-backed board lives in :mod:`tenancy.switches`.

- ``source``: records whose ``source`` is the name are held by the validate step as
  ``SOURCE_DISABLED`` (quarantine table and DLQ), and re-sent when it is switched back on;
- ``tenant``: the same for a tenant's records, as ``TENANT_DISABLED``;
- ``flow``: a running flow of that id (``coherence``) stops consuming until it is on again;
- ``operation``: an API operation (:data:`OPERATIONS`) answers ``OPERATION_DISABLED``.

The validate step asks a :class:`Holds` per record rather than the board itself, so that a
replay can decide exactly as the original did (:class:`ReplayedHolds`: the original's held
offsets), whatever the switches say when it runs.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

from core.reasons import ReasonCode
from core.records import Decoded

__all__ = [
    "HELD_REASONS",
    "NO_HOLDS",
    "OPERATIONS",
    "FirstHolds",
    "Holds",
    "ReplayedHolds",
    "StaticSwitches",
    "SwitchHolds",
    "SwitchKind",
    "Switchboard",
    "held_detail",
]


class SwitchKind(enum.StrEnum):
    """What a switch applies to."""

    SOURCE = "source"
    TENANT = "tenant"
    FLOW = "flow"
    OPERATION = "operation"


#: The API operations a switch can turn off: publishing signals (GraphQL mutation, REST push and
#: webhooks), reading scores (GraphQL query, REST read) and subscribing to events.
OPERATIONS = ("publish", "read", "subscribe")

#: The reasons a held record carries, by the kind of switch that held it.
HELD_REASONS: Mapping[SwitchKind, ReasonCode] = {
    SwitchKind.SOURCE: ReasonCode.SOURCE_DISABLED,
    SwitchKind.TENANT: ReasonCode.TENANT_DISABLED,
}


def held_detail(kind: SwitchKind, name: str) -> str:
    """The quarantine row's ``detail`` of a record held by switch ``(kind, name)``.

    It names the switch, so that switching it on finds exactly its records. The name is one an
    operator chose when switching it off (the record's field equalled it), not free input.
    """
    return f"{kind.value} switched off: {name}"


class Switchboard(Protocol):
    """Answers whether a switch is off (a switch nobody set is on)."""

    def off(self) -> frozenset[tuple[SwitchKind, str]]:
        """Every switch that is off now."""
        ...

    def is_off(self, kind: SwitchKind, name: str) -> bool: ...


class StaticSwitches:
    """A fixed, in-memory :class:`Switchboard` (tests; and "everything on")."""

    def __init__(self, off: Iterable[tuple[SwitchKind, str]] = ()) -> None:
        self._off = frozenset((SwitchKind(k), n) for k, n in off)

    def off(self) -> frozenset[tuple[SwitchKind, str]]:
        return self._off

    def is_off(self, kind: SwitchKind, name: str) -> bool:
        return (kind, name) in self._off


#: A hold's check of one record: ``(reason, detail)`` when it holds the record, else ``None``.
Gate = Callable[[Decoded], tuple[ReasonCode, str] | None]


class Holds(Protocol):
    """Decides whether the validate step holds a record, and with which reason."""

    def held(self, item: Decoded) -> tuple[ReasonCode, str] | None:
        """``(reason, detail)`` when ``item`` is held, else ``None``."""
        ...

    def gate(self) -> Gate | None:
        """What to ask of each record of the next batch: ``held``, or ``None`` when nothing
        can be held now (no switch off, no held position), so the batch's records are not
        asked one by one (validate's native path: ~0.7 µs a record, session 30)."""
        ...


class SwitchHolds:
    """Holds a record whose source, or else whose tenant, is switched off on ``board``."""

    def __init__(self, board: Switchboard) -> None:
        self._board = board

    def gate(self) -> Gate | None:
        return self.held if self._board.off() else None  # the common case: all on

    def held(self, item: Decoded) -> tuple[ReasonCode, str] | None:
        off = self._board.off()
        if not off:  # the common case: one look at the board per record
            return None
        s = item.signal
        if (SwitchKind.SOURCE, s.source) in off:
            return ReasonCode.SOURCE_DISABLED, held_detail(SwitchKind.SOURCE, s.source)
        if (SwitchKind.TENANT, s.tenant_id) in off:
            return ReasonCode.TENANT_DISABLED, held_detail(SwitchKind.TENANT, s.tenant_id)
        return None


class ReplayedHolds:
    """The holds of an original run, by input position: ``(topic, partition, offset)`` ->
    ``(reason, detail)`` as its quarantine table recorded them. A replay holds exactly these."""

    def __init__(self, held: Mapping[tuple[str, int, int], tuple[ReasonCode, str]]) -> None:
        self._held = dict(held)

    def gate(self) -> Gate | None:
        return self.held if self._held else None

    def held(self, item: Decoded) -> tuple[ReasonCode, str] | None:
        p = item.provenance
        return self._held.get((p.topic, p.kafka_partition, p.kafka_offset))


class FirstHolds:
    """The first of several :class:`Holds` that holds a record decides; none: it passes.

    A live flow asks the positions its lake already holds first (a record held once is held
    again when a bounded re-run or a resume reads it again, whatever the switches say now), then
    the switches."""

    def __init__(self, *holds: Holds) -> None:
        self._holds = holds

    def gate(self) -> Gate | None:
        gates = [g for g in (h.gate() for h in self._holds) if g is not None]
        if len(gates) < 2:
            return gates[0] if gates else None

        def first(item: Decoded) -> tuple[ReasonCode, str] | None:
            for g in gates:
                verdict = g(item)
                if verdict is not None:
                    return verdict
            return None

        return first

    def held(self, item: Decoded) -> tuple[ReasonCode, str] | None:
        for h in self._holds:
            verdict = h.held(item)
            if verdict is not None:
                return verdict
        return None


#: Holds nothing: every switch on (tests that build the flow without Postgres).
NO_HOLDS: Holds = ReplayedHolds({})
