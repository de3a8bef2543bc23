"""The PSI wire format, version 1: five binary messages, versioned and size-checked.

Every message starts with ``b"IGPS" || version (u8) || kind (u8)``; integers are big-endian; a
key id is epoch (u64), generation (u32), fingerprint (u64).

=================  ====  =====================================================================
message            kind  body after the header
=================  ====  =====================================================================
TableRequest          1  mode (u8)
Table                 2  mode, key id, tag_bytes (u8), count (u32), count x tag_bytes tags
EvaluateRequest       3  mode, key id, count (u32), count x 32-byte elements
EvaluateResponse      4  mode, key id, count (u32), count x 32-byte elements
Denial                5  reason (u8), one zero byte: every denial is exactly 8 bytes
=================  ====  =====================================================================

:func:`decode` never raises: anything that is not exactly one well-formed message (bad magic,
unknown version, kind, mode or reason, a count over the limits, trailing or missing bytes)
decodes to ``Denial(ReasonCode.MALFORMED)``. Element *validity* (canonical, not the identity)
is checked where elements are used, in :mod:`psi.curve`.
"""

from __future__ import annotations

import dataclasses
import enum
import struct

from core.reasons import ReasonCode

__all__ = [
    "DENIAL_BYTES",
    "MAX_BATCH",
    "MAX_SET",
    "VERSION",
    "Denial",
    "EvaluateRequest",
    "EvaluateResponse",
    "KeyId",
    "Message",
    "PsiMode",
    "Table",
    "TableRequest",
    "decode",
    "encode",
]

MAGIC = b"IGPS"
VERSION = 1
#: Most elements one request may carry (a request is then at most 2 MiB).
MAX_BATCH = 1 << 16
#: Most selectors a server may publish in one table.
MAX_SET = 1 << 24
DENIAL_BYTES = 8
_ELEMENT = 32

_HEADER = struct.Struct(">4sBB")
_KEYED = struct.Struct(">BQIQ")  # mode, epoch, generation, fingerprint
_COUNT = struct.Struct(">I")
_TAG_LEN = struct.Struct(">B")


class PsiMode(enum.StrEnum):
    """What the client learns: its items in the server's set, or only how many there are."""

    FULL_INTERSECTION = "full_intersection"
    INTERSECTION_CARDINALITY = "intersection_cardinality"


_MODES = (PsiMode.FULL_INTERSECTION, PsiMode.INTERSECTION_CARDINALITY)
#: Wire numbering of the reason codes a denial may carry (index + 1); append only.
_REASONS = (
    ReasonCode.POLICY_GEO_BLOCK,
    ReasonCode.THRESHOLD_NOT_MET,
    ReasonCode.RATE_LIMITED,
    ReasonCode.EPOCH_EXPIRED,
    ReasonCode.MALFORMED,
)


@dataclasses.dataclass(frozen=True, slots=True, order=True)
class KeyId:
    """Which server key evaluates: epoch, re-key generation within it, and a fingerprint.

    The fingerprint (64 bits of a hash of the public key) tells keys with the same epoch and
    generation apart, e.g. after a server restarts with a new master seed.
    """

    epoch: int
    generation: int
    fingerprint: int


@dataclasses.dataclass(frozen=True, slots=True)
class TableRequest:
    mode: PsiMode


@dataclasses.dataclass(frozen=True, slots=True)
class Table:
    """The server's set under one key, as sorted truncated PRF tags (``tag_bytes`` each)."""

    mode: PsiMode
    key_id: KeyId
    tag_bytes: int
    tags: bytes = dataclasses.field(repr=False)

    @property
    def count(self) -> int:
        return len(self.tags) // self.tag_bytes


@dataclasses.dataclass(frozen=True, slots=True)
class EvaluateRequest:
    mode: PsiMode
    key_id: KeyId
    elements: bytes = dataclasses.field(repr=False)

    @property
    def count(self) -> int:
        return len(self.elements) // _ELEMENT


@dataclasses.dataclass(frozen=True, slots=True)
class EvaluateResponse:
    mode: PsiMode
    key_id: KeyId
    elements: bytes = dataclasses.field(repr=False)

    @property
    def count(self) -> int:
        return len(self.elements) // _ELEMENT


@dataclasses.dataclass(frozen=True, slots=True)
class Denial:
    """A refusal that says only why, as one of five reason codes."""

    reason: ReasonCode


Message = TableRequest | Table | EvaluateRequest | EvaluateResponse | Denial
_KINDS: dict[type[object], int] = {
    TableRequest: 1,
    Table: 2,
    EvaluateRequest: 3,
    EvaluateResponse: 4,
    Denial: 5,
}


def encode(message: Message) -> bytes:
    """The wire bytes of ``message``; ``ValueError`` if it breaks the format's limits."""
    head = _HEADER.pack(MAGIC, VERSION, _KINDS[type(message)])
    match message:
        case TableRequest(mode):
            return head + bytes([_MODES.index(mode)])
        case Table(mode, key, tag_bytes, tags):
            if not 0 < tag_bytes < 256 or len(tags) % tag_bytes or len(tags) > MAX_SET * tag_bytes:
                msg = "table out of format limits"
                raise ValueError(msg)
            keyed = _KEYED.pack(_MODES.index(mode), key.epoch, key.generation, key.fingerprint)
            return head + keyed + _TAG_LEN.pack(tag_bytes) + _COUNT.pack(message.count) + tags
        case EvaluateRequest(mode, key, elements) | EvaluateResponse(mode, key, elements):
            if len(elements) % _ELEMENT or len(elements) > MAX_BATCH * _ELEMENT:
                msg = "batch out of format limits"
                raise ValueError(msg)
            keyed = _KEYED.pack(_MODES.index(mode), key.epoch, key.generation, key.fingerprint)
            return head + keyed + _COUNT.pack(len(elements) // _ELEMENT) + elements
        case Denial(reason):
            return head + bytes([_REASONS.index(reason) + 1, 0])
    raise TypeError(type(message))  # pragma: no cover - the match is exhaustive


_MALFORMED = Denial(ReasonCode.MALFORMED)


def decode(data: bytes) -> Message:
    """The message in ``data``, or ``Denial(MALFORMED)`` if it is not exactly one valid message."""
    try:
        return _decode(memoryview(data))
    except (struct.error, IndexError, ValueError):
        return _MALFORMED


def _decode(view: memoryview) -> Message:
    magic, version, kind = _HEADER.unpack_from(view)
    if magic != MAGIC or version != VERSION:
        return _MALFORMED
    body = view[_HEADER.size :]
    if kind == 1:
        return TableRequest(_MODES[body[0]]) if len(body) == 1 else _MALFORMED
    if kind == 5:
        if len(body) != 2 or body[1] != 0 or not 0 < body[0] <= len(_REASONS):
            return _MALFORMED
        return Denial(_REASONS[body[0] - 1])
    if kind not in (2, 3, 4):
        return _MALFORMED
    mode_no, epoch, generation, fingerprint = _KEYED.unpack_from(body)
    mode, key = _MODES[mode_no], KeyId(epoch, generation, fingerprint)
    body = body[_KEYED.size :]
    if kind == 2:
        (tag_bytes,) = _TAG_LEN.unpack_from(body)
        (count,) = _COUNT.unpack_from(body, _TAG_LEN.size)
        payload = body[_TAG_LEN.size + _COUNT.size :]
        if tag_bytes == 0 or count > MAX_SET or len(payload) != count * tag_bytes:
            return _MALFORMED
        return Table(mode, key, tag_bytes, payload.tobytes())
    (count,) = _COUNT.unpack_from(body)
    payload = body[_COUNT.size :]
    if count > MAX_BATCH or len(payload) != count * _ELEMENT:
        return _MALFORMED
    if kind == 3:
        return EvaluateRequest(mode, key, payload.tobytes())
    return EvaluateResponse(mode, key, payload.tobytes())
