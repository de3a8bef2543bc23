"""The values that flow between steps: plain frozen dataclasses, no engine types.

``RawRecord`` is what a Kafka source hands over; ``Decoded`` is a signal with its provenance;
``Rejected`` is bad input as data, with a reason code, on its way to the DLQ.
"""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import datetime

from igflow.reasons import ReasonCode


class _Immutable:
    """Frozen values are shared, not copied, by ``copy.deepcopy``.

    Bytewax snapshots a stateful step's state with ``deepcopy`` at every epoch; for a batch of
    thousands of signals, walking each frozen record dominated the cost of ``collect``.
    """

    __slots__ = ()

    def __deepcopy__(self, memo: dict[int, object]) -> _Immutable:
        return self


__all__ = ["Decoded", "Provenance", "RawRecord", "Rejected", "Signal", "input_hash"]


def input_hash(data: bytes | None) -> str:
    """SHA-256 of the exact input bytes, hex; the hash of no bytes for a missing value."""
    return hashlib.sha256(data or b"").hexdigest()


@dataclasses.dataclass(frozen=True, slots=True)
class RawRecord(_Immutable):
    """One Kafka record as read, before any interpretation."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    #: Broker or producer timestamp, milliseconds since the epoch (``None`` when absent).
    timestamp_ms: int | None = None
    #: The consumer flagged this record (``None`` for a healthy one).
    error: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Signal(_Immutable):
    """A coherence signal (the Avro contract, newest version)."""

    tenant_id: str
    signal_id: str
    type: str
    value: float
    weight: float | None
    source: str
    #: Event time, timezone-aware UTC, microsecond precision.
    ts: datetime
    selectors: tuple[str, ...] = ()

    @property
    def key(self) -> tuple[str, str, str, datetime]:
        """The idempotency key ``(tenant_id, source, signal_id, ts)``."""
        return (self.tenant_id, self.source, self.signal_id, self.ts)


@dataclasses.dataclass(frozen=True, slots=True)
class Provenance(_Immutable):
    """Where a landed row came from, exactly."""

    topic: str
    kafka_partition: int
    kafka_offset: int
    #: Registry id of the writer schema.
    schema_version: int
    input_hash: str


@dataclasses.dataclass(frozen=True, slots=True)
class Decoded(_Immutable):
    """A signal that decoded, with its provenance."""

    signal: Signal
    provenance: Provenance
    kafka_timestamp_ms: int | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Rejected(_Immutable):
    """Input that cannot go on, and why. Carries the original bytes untouched."""

    reason: ReasonCode
    #: A short, non-sensitive explanation (never a copy of the payload).
    detail: str
    record: RawRecord

    @property
    def input_hash(self) -> str:
        """SHA-256 of the original value bytes."""
        return input_hash(self.record.value)
