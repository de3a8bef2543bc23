"""psi_window: one tenant's tumbling event-time windows of selectors (no I/O, no wall clock).

See :mod:`operators.psi` for the step's contract.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from core.records import DeconflictionResult, Tagged, _Immutable
from psi.oprf import MAX_INPUT_BYTES

__all__ = ["ClosedWindow", "DeconflictionResult", "TenantDeconfliction", "provenance_digest"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_END_OF_TIME = datetime.max.replace(tzinfo=UTC)


def provenance_digest(provenance_ids: Iterable[str]) -> str:
    """The digest of a window's provenance ids, in input order: a SHA-256 chain, hex.

    ``d = b""``; for each id, ``d = sha256(d || id as UTF-8)``; the digest is ``d`` (or ``""``
    for no ids). A chain, so the state holds 32 bytes instead of every id; a verifier recomputes
    it from the landed signals of the window in offset order.
    """
    chain = b""
    for provenance_id in provenance_ids:
        chain = hashlib.sha256(chain + provenance_id.encode()).digest()
    return chain.hex()


@dataclasses.dataclass(frozen=True, slots=True)
class ClosedWindow(_Immutable):
    """What one tenant's window collected, at the moment it closed."""

    tenant_id: str
    #: Event time, UTC: ``[window_start, window_end)``.
    window_start: datetime
    window_end: datetime
    #: Distinct selectors to send, in first-seen order.
    selectors: tuple[str, ...]
    #: Signals in the window (late ones included), late signals, selectors not sent.
    signals: int
    late: int
    selectors_rejected: int
    #: Kafka offsets of the window's first and last signal, in the tenant's input order.
    first_offset: int
    last_offset: int
    provenance_digest: str
    #: The window's last signal (its provenance is the row's, for the lake ledger).
    last: Tagged


class TenantDeconfliction:
    """The open window of one tenant (engine independent; no I/O, no wall clock).

    Times are integer microseconds, so window boundaries are exact. Survives ``copy.deepcopy``
    and ``pickle`` (Bytewax snapshots it); the matcher is not state: see :class:`Deconflicter`.
    """

    __slots__ = (
        "_chain",
        "_first",
        "_index",
        "_last",
        "_late",
        "_rejected",
        "_selectors",
        "_signals",
        "_window",
    )

    def __init__(self, window_seconds: float) -> None:
        if not 0 < window_seconds < timedelta.max.total_seconds():
            msg = f"window_seconds must be positive and finite, got {window_seconds}"
            raise ValueError(msg)
        self._window = max(1, round(window_seconds * 1_000_000))
        #: ``k`` of the open window ``[k * window, (k + 1) * window)``; it never moves back.
        self._index: int | None = None
        self._reset()

    def _reset(self) -> None:
        self._selectors: dict[str, None] = {}
        self._signals = 0
        self._late = 0
        self._rejected = 0
        self._first = 0
        self._last: Tagged | None = None
        self._chain = b""

    @property
    def pending(self) -> int:
        """Signals in the open window."""
        return self._signals

    def push(self, item: Tagged) -> ClosedWindow | None:
        """Take one signal of this tenant; the window it closed, if that one had selectors."""
        signal = item.signal
        index = ((signal.ts - _EPOCH) // _MICROSECOND) // self._window
        closed = None
        if self._index is None or index > self._index:
            closed = self._close()
            self._index = index
        elif index < self._index:
            self._late += 1
        if not self._signals:
            self._first = item.provenance.kafka_offset
        self._signals += 1
        self._last = item
        self._chain = hashlib.sha256(self._chain + item.provenance_id.encode()).digest()
        for selector in signal.selectors:
            # A quick length test first: only a long selector is worth encoding.
            if not selector or (
                len(selector) > MAX_INPUT_BYTES // 4 and len(selector.encode()) > MAX_INPUT_BYTES
            ):
                self._rejected += 1
            else:
                self._selectors[selector] = None
        return closed

    def flush(self) -> ClosedWindow | None:
        """Close the open window now (end of input, idle tenant); it stays the tenant's window,
        so a later signal in it opens a second batch of the same window."""
        return self._close()

    def _close(self) -> ClosedWindow | None:
        last = self._last
        if last is None or self._index is None:
            return None
        closed = None
        if self._selectors or self._rejected:
            start_us = self._index * self._window
            start = _EPOCH + timedelta(microseconds=start_us)
            try:
                end = start + timedelta(microseconds=self._window)
            except OverflowError:  # a window reaching past year 9999
                end = _END_OF_TIME
            closed = ClosedWindow(
                tenant_id=last.signal.tenant_id,
                window_start=start,
                window_end=end,
                selectors=tuple(self._selectors),
                signals=self._signals,
                late=self._late,
                selectors_rejected=self._rejected,
                first_offset=self._first,
                last_offset=last.provenance.kafka_offset,
                provenance_digest=self._chain.hex(),
                last=last,
            )
        self._reset()
        return closed

    def __deepcopy__(self, memo: dict[int, Any]) -> TenantDeconfliction:
        # Keys are strings and the rest immutable: a shallow copy of the dict is a deep copy.
        other = TenantDeconfliction.__new__(TenantDeconfliction)
        for name in TenantDeconfliction.__slots__:
            setattr(other, name, getattr(self, name))
        other._selectors = self._selectors.copy()
        return other

    def __getstate__(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in TenantDeconfliction.__slots__}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name in TenantDeconfliction.__slots__:
            setattr(self, name, state[name])
