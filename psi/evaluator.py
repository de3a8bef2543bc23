"""The PSI server, transport-free: wire bytes in, wire bytes out.

:meth:`PsiServer.handle` answers a :class:`~psi.messages.TableRequest` with the published
:class:`~psi.messages.Table` of the current key, and an
:class:`~psi.messages.EvaluateRequest` with the evaluated elements:

1. size and format checks (anything off: ``MALFORMED``);
2. ``policies/psi.rego`` for the caller (agreement and mode, region and residency, minimum batch,
   rate limit): ``POLICY_GEO_BLOCK``, ``THRESHOLD_NOT_MET``, ``RATE_LIMITED``;
3. the key schedule: the request's key must be current and under its evaluation limit
   (``EPOCH_EXPIRED`` otherwise);
4. ``skS * element`` for each element; an identity or non-canonical one: ``MALFORMED``;
5. in cardinality mode, the evaluated elements are sorted, then shuffled with a CSPRNG, so the
   response's order carries nothing about the request's.

Every denial is the same 8 bytes but for its reason code. Tables are built once per key
(the hash-to-group of the set once per server) and served from cache. Logs carry counts, codes
and latency, never selectors or elements.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import secrets
import threading
import time
from collections.abc import Callable
from typing import Literal

from core.reasons import ReasonCode
from psi.curve import ELEMENT_BYTES, CurveError, GroupBatch
from psi.keys import EpochKey, KeySchedule
from psi.messages import (
    MAX_BATCH,
    Denial,
    EvaluateRequest,
    EvaluateResponse,
    Message,
    PsiMode,
    Table,
    TableRequest,
    decode,
    encode,
)
from psi.oprf import SEED_BYTES, Oprf
from psi.policy import PolicyInput, PsiPolicy
from psi.ratelimit import SlidingWindow
from psi.selectors import SelectorSet
from psi.tags import TAG_BYTES, cardinality_tags, sorted_tags, truncate

__all__ = ["Caller", "PsiServer", "ServerConfig"]

_log = logging.getLogger("psi.server")
_HEADER_BYTES = 6 + 21 + 4  # magic/version/kind, mode + key id, count


@dataclasses.dataclass(frozen=True, slots=True)
class Caller:
    """The authenticated partner on the other end (from the transport, never from the body)."""

    partner_id: str
    region: str


@dataclasses.dataclass(frozen=True, slots=True)
class ServerConfig:
    """How a server keys and limits its evaluations."""

    tenant_id: str = ""
    #: Residency tag of the server's selectors, checked against the caller's region.
    residency: str = "US"
    epoch_seconds: float = 3600.0
    #: Elements one key evaluates before re-keying (RFC 9497 section 7.2.3).
    max_evaluations: int = 1 << 22
    max_batch: int = MAX_BATCH

    def __post_init__(self) -> None:
        if not 0 < self.max_batch <= min(MAX_BATCH, self.max_evaluations):
            msg = "max_batch must be positive and at most MAX_BATCH and max_evaluations"
            raise ValueError(msg)

    @property
    def max_message_bytes(self) -> int:
        return _HEADER_BYTES + self.max_batch * ELEMENT_BYTES


class PsiServer:
    """One partner's set behind the PSI protocol. Thread-safe; share one per process."""

    def __init__(
        self,
        selectors: SelectorSet,
        policy: PsiPolicy,
        config: ServerConfig,
        *,
        batch: GroupBatch,
        master_seed: bytes | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self._selectors = selectors
        self._policy = policy
        self._batch = batch
        self._oprf = Oprf(batch)
        seed = master_seed if master_seed is not None else secrets.token_bytes(SEED_BYTES)
        self.keys = KeySchedule(
            seed,
            epoch_seconds=config.epoch_seconds,
            max_evaluations=config.max_evaluations,
            clock=clock,
        )
        self._window = SlidingWindow(policy.config.window_seconds, clock)
        self._partners = frozenset(a.partner_id for a in policy.config.agreements)
        self._rng = rng if rng is not None else secrets.SystemRandom()
        self._points: bytes | None = None
        self._tables: dict[PsiMode, tuple[Table, bytes]] = {}
        self._build_lock = threading.Lock()

    # -- published tables -------------------------------------------------------------------

    def table(self, mode: PsiMode) -> tuple[Table, bytes]:
        """The current key's table for ``mode`` and its wire bytes, built at most once per key."""
        with self._build_lock:
            key = self.keys.current(mode)
            cached = self._tables.get(mode)
            if cached is None or cached[0].key_id != key.key_id:
                table = self._build(key)
                cached = self._tables[mode] = (table, encode(table))
            return cached

    def _build(self, key: EpochKey) -> Table:
        if self._points is None:
            self._points = self._oprf.hash_to_group(self._selectors.inputs)
        if key.mode is PsiMode.FULL_INTERSECTION:
            outputs = self._oprf.evaluate(key.secret, self._selectors.inputs, self._points)
            tags = truncate(outputs)
        else:
            tags = cardinality_tags(self._batch, self._batch.scalarmult(key.secret, self._points))
        return Table(key.mode, key.key_id, TAG_BYTES, sorted_tags(tags))

    # -- requests ---------------------------------------------------------------------------

    def handle(self, body: bytes, caller: Caller) -> bytes:
        """Answer one wire message from ``caller``; never raises for bad input."""
        started = time.perf_counter()
        if len(body) > self.config.max_message_bytes:
            message: Message = Denial(ReasonCode.MALFORMED)
        else:
            message = decode(body)
        reply = self._dispatch(message, caller)
        out = reply if isinstance(reply, bytes) else encode(reply)
        code = reply.reason.value if isinstance(reply, Denial) else None
        _log.info(
            "psi %s",
            type(message).__name__,
            extra={
                "tenant_id": self.config.tenant_id,
                "op": "psi." + type(message).__name__,
                "latency_ms": round((time.perf_counter() - started) * 1000, 3),
                "error_code": code,
            },
        )
        return out

    def _dispatch(self, message: Message, caller: Caller) -> Message | bytes:
        match message:
            case TableRequest(mode):
                denied = self._check(caller, "table", mode, 0)
                return denied or self.table(mode)[1]
            case EvaluateRequest(mode, key_id, elements):
                if message.count > self.config.max_batch:
                    return Denial(ReasonCode.MALFORMED)
                denied = self._check(caller, "evaluate", mode, message.count)
                if denied:
                    return denied
                key = self.keys.charge(mode, key_id, message.count)
                if isinstance(key, ReasonCode):
                    return Denial(key)
                try:
                    evaluated = self._oprf.blind_evaluate(key.secret, elements)
                except CurveError:
                    return Denial(ReasonCode.MALFORMED)
                if mode is PsiMode.INTERSECTION_CARDINALITY:
                    evaluated = self._shuffle(evaluated)
                return EvaluateResponse(mode, key_id, evaluated)
            case _:  # undecodable (already a MALFORMED denial), or a server-to-client message
                return _MALFORMED

    def _check(
        self, caller: Caller, action: Literal["table", "evaluate"], mode: PsiMode, count: int
    ) -> Denial | None:
        # Only partners with an agreement get a rate-limit slot: unknown ids cannot grow memory.
        known = caller.partner_id in self._partners
        recent = self._window.hit(caller.partner_id) if known and action == "evaluate" else 0
        decision = self._policy.decide(
            PolicyInput(
                role="server",
                action=action,
                partner_id=caller.partner_id,
                partner_region=caller.region,
                residency=self.config.residency,
                mode=mode,
                batch_size=count,
                recent_requests=recent,
            )
        )
        return None if decision.reason is None else Denial(decision.reason)

    def _shuffle(self, elements: bytes) -> bytes:
        """Sort (forget the request's order), then a uniform shuffle from the CSPRNG."""
        items = sorted(
            elements[i : i + ELEMENT_BYTES] for i in range(0, len(elements), ELEMENT_BYTES)
        )
        self._rng.shuffle(items)
        return b"".join(items)


_MALFORMED = Denial(ReasonCode.MALFORMED)
