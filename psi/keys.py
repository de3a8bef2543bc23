"""The server's key schedule: one key per mode, re-keyed per epoch and after N evaluations.

RFC 9497 section 7.2.3 (static Diffie-Hellman attacks): each evaluated element gives a client
one more ``(P, k * P)`` pair, and Cheon-style attacks on the key get cheaper as that count grows.
So a key evaluates at most ``max_evaluations`` elements, and never outlives its epoch
(``epoch = floor(clock() / epoch_seconds)``). After either, the next key has a new
:class:`~psi.messages.KeyId` and a request under the old one is answered ``EPOCH_EXPIRED``: the
client fetches the new table and retries.

Keys are derived, not stored: ``DeriveKeyPair(master_seed, "igflow-psi-v1" || mode || epoch ||
generation)``; the key id adds a 64-bit fingerprint of the public key, so a restart with a new
seed cannot be mistaken for the old key. Only the current key per mode is held. Several server
processes sharing a set must share the seed (and each counts its own evaluations).
"""

from __future__ import annotations

import dataclasses
import hashlib
import struct
import threading
import time
from collections.abc import Callable

from core.reasons import ReasonCode
from psi.messages import KeyId, PsiMode
from psi.oprf import SEED_BYTES, derive_key_pair

__all__ = ["EpochKey", "KeySchedule"]

_INFO = b"igflow-psi-v1"
_MODE_BYTE = {PsiMode.FULL_INTERSECTION: 0, PsiMode.INTERSECTION_CARDINALITY: 1}


@dataclasses.dataclass(frozen=True, slots=True)
class EpochKey:
    """The key currently serving ``mode``."""

    mode: PsiMode
    key_id: KeyId
    secret: bytes = dataclasses.field(repr=False)


@dataclasses.dataclass(slots=True)
class _Slot:
    key: EpochKey
    used: int = 0


class KeySchedule:
    """Hands out the current key per mode and counts what it evaluates. Thread-safe."""

    def __init__(
        self,
        master_seed: bytes,
        *,
        epoch_seconds: float,
        max_evaluations: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if len(master_seed) != SEED_BYTES or epoch_seconds <= 0 or max_evaluations < 1:
            msg = "need a 32-byte seed, a positive epoch length and evaluation limit"
            raise ValueError(msg)
        self._seed = master_seed
        self.epoch_seconds = epoch_seconds
        self.max_evaluations = max_evaluations
        self._clock = clock
        self._slots: dict[PsiMode, _Slot] = {}
        self._lock = threading.Lock()

    def _derive(self, mode: PsiMode, epoch: int, generation: int) -> EpochKey:
        info = _INFO + struct.pack(">BQI", _MODE_BYTE[mode], epoch, generation)
        pair = derive_key_pair(self._seed, info)
        digest = hashlib.sha256(b"igflow-psi-key-id" + pair.public).digest()
        key_id = KeyId(epoch, generation, int.from_bytes(digest[:8], "big"))
        return EpochKey(mode, key_id, pair.secret)

    def _slot(self, mode: PsiMode) -> _Slot:
        """The current slot for ``mode``; caller holds the lock."""
        epoch = int(self._clock() // self.epoch_seconds)
        slot = self._slots.get(mode)
        if slot is None or slot.key.key_id.epoch != epoch:
            slot = _Slot(self._derive(mode, epoch, 0))
            self._slots[mode] = slot
        return slot

    def current(self, mode: PsiMode) -> EpochKey:
        """The key serving ``mode`` now."""
        with self._lock:
            return self._slot(mode).key

    def charge(self, mode: PsiMode, key_id: KeyId, count: int) -> EpochKey | ReasonCode:
        """Reserve ``count`` evaluations under ``key_id``.

        Returns the key if ``key_id`` is current and has room; otherwise ``EPOCH_EXPIRED``
        (re-keying first when the evaluation limit would be crossed).
        """
        with self._lock:
            slot = self._slot(mode)
            if slot.key.key_id != key_id:
                return ReasonCode.EPOCH_EXPIRED
            if slot.used + count > self.max_evaluations:
                nxt = self._derive(mode, key_id.epoch, key_id.generation + 1)
                self._slots[mode] = _Slot(nxt)
                return ReasonCode.EPOCH_EXPIRED
            slot.used += count
            return slot.key
