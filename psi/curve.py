"""ristretto255 in batches: the native loops of ``psi._sodium``, split across threads.

Every method takes and returns packed byte strings (``n`` items of 32-byte elements or scalars,
64-byte hashes), so a batch crosses the Python/C boundary once per thread, not once per item.
cffi releases the GIL during each call, so a :class:`GroupBatch` with ``threads=2`` keeps two
cores busy on one batch.

An element or scalar that libsodium or the checks here reject (identity, non-canonical encoding,
zero or non-reduced scalar) raises :class:`CurveError` with the index of the first bad item: the
protocol layer turns it into a ``MALFORMED`` reason code.
"""

from __future__ import annotations

import dataclasses
import os
from array import array
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import accumulate, pairwise
from typing import Any

from core.errors import IgflowError
from psi._sodium import ffi, lib

__all__ = [
    "ELEMENT_BYTES",
    "HASH_BYTES",
    "SCALAR_BYTES",
    "CurveError",
    "GroupBatch",
    "Packed",
    "hash_to_scalar",
    "scalarmult_base",
]

ELEMENT_BYTES = 32
SCALAR_BYTES = 32
HASH_BYTES = 64
#: Below this many items per chunk, splitting a batch costs more than it saves.
_MIN_CHUNK = 32
#: Chunks per thread: more, smaller chunks keep both cores busy when one of them is slowed
#: down (a noisy neighbour, a hyperthread sibling) instead of waiting on the slow half.
_CHUNKS_PER_THREAD = 4

if lib.psi_init() < 0:  # pragma: no cover - libsodium cannot initialise its RNG
    msg = "libsodium failed to initialise"
    raise ImportError(msg)
if ffi.sizeof("size_t") != array("Q").itemsize:  # pragma: no cover - exotic platform
    msg = "size_t is not 64-bit on this platform"
    raise ImportError(msg)


class CurveError(IgflowError):
    """A group element or scalar was rejected; ``index`` is the first rejected item."""

    def __init__(self, index: int, what: str) -> None:
        super().__init__(f"{what}: item {index} rejected")
        self.what = what
        self.index = index


@dataclasses.dataclass(frozen=True, slots=True)
class Packed:
    """Byte strings packed for C: one blob and ``count + 1`` absolute native ``size_t`` offsets."""

    blob: bytes
    offsets: bytes
    count: int

    @classmethod
    def of(cls, items: Sequence[bytes]) -> Packed:
        """Pack ``items`` in order."""
        offsets = array("Q", [0])
        offsets.extend(accumulate(map(len, items)))
        return cls(b"".join(items), offsets.tobytes(), len(items))


def _chunks(n: int, threads: int) -> list[tuple[int, int]]:
    parts = max(1, min(threads * _CHUNKS_PER_THREAD, n // _MIN_CHUNK)) if threads > 1 else 1
    bounds = [n * i // parts for i in range(parts + 1)]
    return list(pairwise(bounds))


def _ro(data: bytes) -> Any:
    return ffi.from_buffer("unsigned char[]", data)


class GroupBatch:
    """Batch primitives over ristretto255 on ``threads`` threads (default: every core).

    Thread-safe: one instance may serve concurrent requests. Call :meth:`close` (or use it as a
    context manager) to stop its threads.
    """

    def __init__(self, threads: int | None = None) -> None:
        self.threads = max(1, threads if threads is not None else (os.cpu_count() or 1))
        self._pool = ThreadPoolExecutor(self.threads) if self.threads > 1 else None

    def close(self) -> None:
        """Stop the worker threads; the instance must not be used afterwards."""
        if self._pool is not None:
            self._pool.shutdown()

    def __enter__(self) -> GroupBatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, what: str, n: int, step: Callable[[int, int], int]) -> None:
        """Run ``step(lo, hi)`` over a partition of ``range(n)``; raise on the first rejection."""
        chunks = _chunks(n, self.threads)
        if self._pool is None or len(chunks) == 1:
            codes = [step(lo, hi) for lo, hi in chunks]
        else:
            codes = list(self._pool.map(lambda c: step(*c), chunks))
        for (lo, _), code in zip(chunks, codes, strict=True):
            if code:
                raise CurveError(lo + code - 1, what)

    def hash_to_group(self, inputs: Packed, dst: bytes) -> bytes:
        """RFC 9497 HashToGroup of each input (expand_message_xmd SHA-512, one-way map)."""
        out = bytearray(inputs.count * ELEMENT_BYTES)
        blob, dst_p, out_p = _ro(inputs.blob), _ro(dst), _w(out)
        offs = ffi.from_buffer("size_t[]", inputs.offsets)
        self._run(
            "input",
            inputs.count,
            lambda lo, hi: lib.psi_hash_to_group(
                blob, offs + lo, hi - lo, dst_p, len(dst), out_p + lo * ELEMENT_BYTES
            ),
        )
        return bytes(out)

    def scalarmult(self, scalars: bytes, elements: bytes) -> bytes:
        """``scalars[i] * elements[i]``; a single 32-byte scalar multiplies every element.

        Rejects identity and non-canonical elements, zero and non-reduced scalars, and identity
        products.
        """
        n = len(elements) // ELEMENT_BYTES
        stride = 0 if len(scalars) == SCALAR_BYTES else SCALAR_BYTES
        if len(elements) % ELEMENT_BYTES or (stride and len(scalars) != n * SCALAR_BYTES):
            raise CurveError(0, "length")
        out = bytearray(n * ELEMENT_BYTES)
        s_p, e_p, out_p = _ro(scalars), _ro(elements), _w(out)
        self._run(
            "element",
            n,
            lambda lo, hi: lib.psi_scalarmult(
                s_p + lo * stride,
                stride,
                e_p + lo * ELEMENT_BYTES,
                hi - lo,
                out_p + lo * ELEMENT_BYTES,
            ),
        )
        return bytes(out)

    def random_scalars(self, n: int) -> bytes:
        """``n`` uniformly random non-zero scalars from libsodium's CSPRNG."""
        out = bytearray(n * SCALAR_BYTES)
        lib.psi_scalar_random(n, _w(out))
        return bytes(out)

    def invert(self, scalars: bytes) -> bytes:
        """The inverse of each scalar mod L, by batch inversion (one inversion per chunk)."""
        n = len(scalars) // SCALAR_BYTES
        out, scratch = bytearray(len(scalars)), bytearray(len(scalars))
        s_p, out_p, scratch_p = _ro(scalars), _w(out), _w(scratch)
        self._run(
            "scalar",
            n,
            lambda lo, hi: lib.psi_scalar_invert(
                s_p + lo * SCALAR_BYTES,
                hi - lo,
                out_p + lo * SCALAR_BYTES,
                scratch_p + lo * SCALAR_BYTES,
            ),
        )
        return bytes(out)

    def finalize(self, inputs: Packed, elements: bytes) -> bytes:
        """RFC 9497 Finalize's hash of each ``(input, unblinded element)`` pair: 64 bytes each."""
        out = bytearray(inputs.count * HASH_BYTES)
        blob, e_p, out_p = _ro(inputs.blob), _ro(elements), _w(out)
        offs = ffi.from_buffer("size_t[]", inputs.offsets)
        self._run(
            "input",
            inputs.count,
            lambda lo, hi: lib.psi_finalize(
                blob, offs + lo, hi - lo, e_p + lo * ELEMENT_BYTES, out_p + lo * HASH_BYTES
            ),
        )
        return bytes(out)

    def digest(self, elements: bytes, label: bytes) -> bytes:
        """``SHA-512(I2OSP(32, 2) || element || label)`` of each element: 64 bytes each."""
        n = len(elements) // ELEMENT_BYTES
        out = bytearray(n * HASH_BYTES)
        e_p, label_p, out_p = _ro(elements), _ro(label), _w(out)
        self._run(
            "element",
            n,
            lambda lo, hi: lib.psi_element_digest(
                e_p + lo * ELEMENT_BYTES, hi - lo, label_p, len(label), out_p + lo * HASH_BYTES
            ),
        )
        return bytes(out)


def _w(buf: bytearray) -> Any:
    return ffi.from_buffer("unsigned char[]", buf, require_writable=True)


def hash_to_scalar(msg: bytes, dst: bytes) -> bytes | None:
    """RFC 9497 HashToScalar (expand_message_xmd SHA-512, reduce mod L); None if it gives 0."""
    out = bytearray(SCALAR_BYTES)
    if lib.psi_hash_to_scalar(_ro(msg), len(msg), _ro(dst), len(dst), _w(out)):
        return None
    return bytes(out)


def scalarmult_base(scalar: bytes) -> bytes:
    """``scalar * G``, the generator; raises :class:`CurveError` for a zero scalar."""
    out = bytearray(ELEMENT_BYTES)
    if len(scalar) != SCALAR_BYTES or lib.crypto_scalarmult_ristretto255_base(_w(out), _ro(scalar)):
        raise CurveError(0, "scalar")
    return bytes(out)
