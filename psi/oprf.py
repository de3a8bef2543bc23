"""RFC 9497 OPRF, suite ristretto255-SHA512, mode 0x00 (OPRF), over batches of inputs.

The functions follow the RFC's names and steps (section 3.3.1), batched:

* client: :meth:`Oprf.blind` (HashToGroup, then multiply by a fresh blind per input, or by one
  shared blind), :meth:`Oprf.finalize` (unblind by batch inversion, then the Finalize hash);
* server: :meth:`Oprf.blind_evaluate` (``skS * blindedElement``) and :meth:`Oprf.evaluate`
  (the unblinded ``Evaluate(skS, input)`` a server uses on its own set).

Scalars are 32 bytes little-endian, reduced mod L; elements are canonical 32-byte ristretto255
encodings. Identity and non-canonical elements and zero scalars raise :class:`CurveError`.
``tests/unit/test_psi_oprf.py`` reproduces RFC 9497 Appendix A.1.1 byte for byte.
"""

from __future__ import annotations

import dataclasses
import struct

from psi.curve import (
    CurveError,
    GroupBatch,
    Packed,
    hash_to_scalar,
    scalarmult_base,
)

__all__ = [
    "CONTEXT_STRING",
    "DERIVE_KEY_PAIR_DST",
    "HASH_TO_GROUP_DST",
    "MAX_INPUT_BYTES",
    "SEED_BYTES",
    "KeyPair",
    "Oprf",
    "derive_key_pair",
]

#: contextString = "OPRFV1-" || I2OSP(mode, 1) || "-" || identifier, for mode 0x00.
CONTEXT_STRING = b"OPRFV1-\x00-ristretto255-SHA512"
HASH_TO_GROUP_DST = b"HashToGroup-" + CONTEXT_STRING
DERIVE_KEY_PAIR_DST = b"DeriveKeyPair" + CONTEXT_STRING
#: Finalize encodes len(input) in two bytes.
MAX_INPUT_BYTES = 0xFFFF
#: Nseed for ristretto255-SHA512.
SEED_BYTES = 32


@dataclasses.dataclass(frozen=True, slots=True)
class KeyPair:
    """A server key: ``secret`` (skS, never logged) and ``public`` (pkS = skS * G)."""

    secret: bytes = dataclasses.field(repr=False)
    public: bytes


def derive_key_pair(seed: bytes, info: bytes) -> KeyPair:
    """RFC 9497 DeriveKeyPair: HashToScalar(seed || I2OSP(len(info), 2) || info || counter).

    Raises ``ValueError`` for a seed that is not 32 bytes or an ``info`` over 65535 bytes, and
    :class:`CurveError` in the (probability 2^-2000) case that 256 counters all give zero.
    """
    if len(seed) != SEED_BYTES or len(info) > MAX_INPUT_BYTES:
        msg = "DeriveKeyPair needs a 32-byte seed and info of at most 65535 bytes"
        raise ValueError(msg)
    derive_input = seed + struct.pack(">H", len(info)) + info
    for counter in range(256):
        secret = hash_to_scalar(derive_input + bytes([counter]), DERIVE_KEY_PAIR_DST)
        if secret is not None:
            return KeyPair(secret, scalarmult_base(secret))
    raise CurveError(255, "DeriveKeyPair")  # pragma: no cover


class Oprf:
    """The OPRF's batch operations on a :class:`GroupBatch` (which decides the thread count)."""

    def __init__(self, batch: GroupBatch) -> None:
        self.batch = batch

    def hash_to_group(self, inputs: Packed) -> bytes:
        """HashToGroup of each input: the points a server caches for its own set."""
        return self.batch.hash_to_group(inputs, HASH_TO_GROUP_DST)

    def blind(self, inputs: Packed, blinds: bytes) -> bytes:
        """Blind(input, blind) for each input: ``blind * HashToGroup(input)``.

        ``blinds`` holds one scalar per input (the RFC's fresh blind) or a single scalar shared
        by the batch (cardinality mode, where the server's shuffle hides which is which).
        """
        return self.batch.scalarmult(blinds, self.hash_to_group(inputs))

    def blind_evaluate(self, secret: bytes, blinded: bytes) -> bytes:
        """BlindEvaluate: ``skS * blindedElement`` for each element, rejecting invalid ones."""
        return self.batch.scalarmult(secret, blinded)

    def unblind(self, blinds: bytes, evaluated: bytes) -> bytes:
        """``blind^-1 * evaluatedElement`` for each element (batch inversion of the blinds)."""
        return self.batch.scalarmult(self.batch.invert(blinds), evaluated)

    def finalize(self, inputs: Packed, blinds: bytes, evaluated: bytes) -> bytes:
        """Finalize(input, blind, evaluatedElement) for each input: 64-byte outputs, packed."""
        return self.batch.finalize(inputs, self.unblind(blinds, evaluated))

    def evaluate(self, secret: bytes, inputs: Packed, points: bytes | None = None) -> bytes:
        """The server-side Evaluate(skS, input) for each input: 64-byte outputs, packed.

        ``points`` may carry the cached :meth:`hash_to_group` of ``inputs``.
        """
        if points is None:
            points = self.hash_to_group(inputs)
        return self.batch.finalize(inputs, self.batch.scalarmult(secret, points))

    def random_blinds(self, n: int) -> bytes:
        """``n`` fresh blinds (uniform non-zero scalars)."""
        return self.batch.random_scalars(n)
