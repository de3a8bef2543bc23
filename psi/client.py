"""The PSI client: policy check, cached table, blind, evaluate, unblind, match.

:meth:`PsiClient.intersect` runs one roundtrip over any :data:`Transport` (a function from request
bytes to response bytes: :class:`HttpTransport` over HTTP, or a server's ``handle`` in process):

* ``full_intersection``: a fresh blind per selector, order kept; the result is the client's own
  selectors (distinct, in first-seen order) whose OPRF tag is in the server's table;
* ``intersection_cardinality``: one blind for the batch; the server shuffles, so the client can
  unblind but no longer tell which element is whose: the result is only the count.

The server's table is fetched once per key and cached; on ``EPOCH_EXPIRED`` the client drops it,
fetches the new one and retries once. Any denial or unusable response comes back as a
:class:`~psi.messages.Denial` with its reason code, never as an exception.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

from core.reasons import ReasonCode
from psi.curve import CurveError, GroupBatch
from psi.messages import (
    Denial,
    EvaluateRequest,
    EvaluateResponse,
    KeyId,
    PsiMode,
    Table,
    TableRequest,
    decode,
    encode,
)
from psi.oprf import Oprf
from psi.policy import PolicyInput, PsiPolicy
from psi.ratelimit import SlidingWindow
from psi.selectors import SelectorSet
from psi.tags import TAG_BYTES, TagSet, cardinality_tags, truncate

__all__ = [
    "PARTNER_HEADER",
    "PSI_PATH",
    "REGION_HEADER",
    "Cardinality",
    "ClientConfig",
    "HttpTransport",
    "Intersection",
    "Outcome",
    "PsiClient",
    "Transport",
]

Transport = Callable[[bytes], bytes]
#: The route :func:`psi.server.create_app` serves.
PSI_PATH = "/v1/psi"
#: Identity headers: set (or verified) by the server's authenticating edge, e.g. an mTLS proxy.
PARTNER_HEADER = "x-igflow-partner"
REGION_HEADER = "x-igflow-region"
_MALFORMED = Denial(ReasonCode.MALFORMED)


@dataclasses.dataclass(frozen=True, slots=True)
class ClientConfig:
    """Who the server is, as the client's policy sees it, and where the client's data lives."""

    server_partner_id: str
    server_region: str
    residency: str = "US"


@dataclasses.dataclass(frozen=True, slots=True)
class Intersection:
    """The client's selectors that the server also holds, in the client's order."""

    items: tuple[str, ...]
    key_id: KeyId


@dataclasses.dataclass(frozen=True, slots=True)
class Cardinality:
    """How many of the client's distinct selectors the server also holds."""

    count: int
    key_id: KeyId


Outcome = Intersection | Cardinality | Denial


class PsiClient:
    """One client of one server. Not thread-safe: use one per thread."""

    def __init__(
        self,
        transport: Transport,
        policy: PsiPolicy,
        config: ClientConfig,
        *,
        batch: GroupBatch,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._transport = transport
        self._policy = policy
        self.config = config
        self._batch = batch
        self._oprf = Oprf(batch)
        self._window = SlidingWindow(policy.config.window_seconds, clock)
        self._tables: dict[PsiMode, TagSet] = {}

    def intersect(self, selectors: Iterable[str], mode: PsiMode) -> Outcome:
        """One policy-checked roundtrip for the distinct ``selectors``."""
        try:
            items = SelectorSet.of(selectors)
        except ValueError:
            return _MALFORMED
        decision = self._policy.decide(
            PolicyInput(
                role="client",
                action="evaluate",
                partner_id=self.config.server_partner_id,
                partner_region=self.config.server_region,
                residency=self.config.residency,
                mode=mode,
                batch_size=len(items),
                recent_requests=self._window.hit(self.config.server_partner_id),
            )
        )
        if decision.reason is not None:
            return Denial(decision.reason)
        for _ in range(2):
            tags = self.table(mode)
            if isinstance(tags, Denial):
                return tags
            outcome = self._roundtrip(items, mode, tags)
            if not (isinstance(outcome, Denial) and outcome.reason is ReasonCode.EPOCH_EXPIRED):
                return outcome
            self._tables.pop(mode, None)
        return Denial(ReasonCode.EPOCH_EXPIRED)

    def table(self, mode: PsiMode) -> TagSet | Denial:
        """The server's current table for ``mode``, from cache or fetched."""
        cached = self._tables.get(mode)
        if cached is not None:
            return cached
        reply = decode(self._transport(encode(TableRequest(mode))))
        if isinstance(reply, Denial):
            return reply
        if not isinstance(reply, Table) or reply.mode is not mode or reply.tag_bytes != TAG_BYTES:
            return _MALFORMED
        tags = self._tables[mode] = TagSet(reply)
        return tags

    def _roundtrip(self, items: SelectorSet, mode: PsiMode, tags: TagSet) -> Outcome:
        shared = mode is PsiMode.INTERSECTION_CARDINALITY
        blinds = self._oprf.random_blinds(1 if shared else len(items))
        key_id = tags.table.key_id
        blinded = self._oprf.blind(items.inputs, blinds)
        reply = decode(self._transport(encode(EvaluateRequest(mode, key_id, blinded))))
        if isinstance(reply, Denial):
            return reply
        if not isinstance(reply, EvaluateResponse):
            return _MALFORMED
        if (reply.mode, reply.key_id, reply.count) != (mode, key_id, len(items)):
            return _MALFORMED
        try:
            if shared:
                unblinded = self._oprf.unblind(blinds, reply.elements)
                found = sum(tag in tags for tag in cardinality_tags(self._batch, unblinded))
                return Cardinality(found, key_id)
            outputs = self._oprf.finalize(items.inputs, blinds, reply.elements)
        except CurveError:
            return _MALFORMED
        pairs = zip(items.items, truncate(outputs), strict=True)
        return Intersection(tuple(item for item, tag in pairs if tag in tags), key_id)


class _Reply(Protocol):
    @property
    def status_code(self) -> int: ...
    @property
    def content(self) -> bytes: ...


class _Poster(Protocol):
    def post(self, url: str, *, content: bytes, headers: Mapping[str, str]) -> _Reply: ...


class HttpTransport:
    """POSTs wire messages to a server made by :func:`psi.server.create_app`.

    ``client`` is an ``httpx.Client`` (or anything with its ``post``) and ``url`` the server's
    ``.../v1/psi``; ``partner_id`` and ``region`` go in the identity headers, which the server's
    edge must authenticate. Connection failures raise httpx's exceptions.
    """

    def __init__(self, client: _Poster, url: str, *, partner_id: str, region: str) -> None:
        self._client = client
        self._url = url
        self._headers = {
            "content-type": "application/octet-stream",
            PARTNER_HEADER: partner_id,
            REGION_HEADER: region,
        }

    def __call__(self, body: bytes) -> bytes:
        """The server's reply; a non-200 status reads as a ``MALFORMED`` denial."""
        reply = self._client.post(self._url, content=body, headers=self._headers)
        return reply.content if reply.status_code == 200 else encode(_MALFORMED)
