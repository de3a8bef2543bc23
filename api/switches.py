"""Operation kill switches of ``igflow serve``: ``publish``, ``read``, ``subscribe``.

Each resolver and REST handler asks :meth:`OperationGate.refused` before it does its work; a
switched-off operation answers ``OPERATION_DISABLED`` (GraphQL error code, or a 503 problem),
within ``switches.refresh_seconds`` of ``igflow switch off operation NAME``.

The board's first load runs off the event loop (a worker thread); after it the answer comes from
memory, and the board's own thread refreshes the copy (tenancy/cached_table.py). A board that
cannot be read fails open: the API keeps serving and logs a warning (the switch is an emergency
brake on top of authentication and authorization, and the score reads do not need Postgres),
while the flow fails closed.
"""

from __future__ import annotations

import asyncio
import logging
import time

from core.errors import ConfigError
from core.reasons import ReasonCode
from core.switches import OPERATIONS, Switchboard, SwitchKind
from tenancy.switches import PostgresSwitches

__all__ = ["OperationGate"]

log = logging.getLogger(__name__)


class OperationGate:
    """Answers whether an API operation is switched off."""

    def __init__(self, board: Switchboard, retry_seconds: float = 2.0) -> None:
        self._board = board
        self._retry_seconds = retry_seconds
        #: After a failed read, serve without asking until then (monotonic clock).
        self._quiet_until = 0.0

    async def refused(self, operation: str) -> ReasonCode | None:
        """``OPERATION_DISABLED`` when ``operation`` (one of :data:`OPERATIONS`) is off."""
        assert operation in OPERATIONS, operation
        board = self._board
        if self._quiet_until and time.monotonic() < self._quiet_until:
            return None
        try:
            if isinstance(board, PostgresSwitches) and board.due:
                off = await asyncio.to_thread(board.is_off, SwitchKind.OPERATION, operation)
            else:
                off = board.is_off(SwitchKind.OPERATION, operation)
        except ConfigError as exc:
            log.warning("operation switches unreadable, serving %s: %s", operation, exc)
            self._quiet_until = time.monotonic() + self._retry_seconds
            return None
        return ReasonCode.OPERATION_DISABLED if off else None
