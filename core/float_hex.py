"""``float.hex`` of a whole Arrow float column, from the IEEE 754 bits with numpy.

The columnar digest's (:mod:`core.digest`) encoding of a float is ``float.hex`` (exact; ``-0.0``
differs from ``0.0``; every NaN is ``nan``). Calling it per value costs a Python call and a
string per row; here the text is assembled for all values at once and equals ``float.hex`` byte
for byte (``tests/unit/test_digest.py`` checks every exponent and random mantissas).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["float_hex"]

_LB = pa.large_binary()


def _binary(rows: np.ndarray, keep: np.ndarray) -> pa.Array:
    """Each row of a 2-D uint8 array, only the bytes where ``keep`` is True, as large_binary."""
    offsets = np.zeros(len(rows) + 1, np.int64)
    np.cumsum(keep.sum(axis=1), out=offsets[1:])
    data = np.ascontiguousarray(rows[keep])
    return pa.LargeBinaryArray.from_buffers(
        _LB, len(rows), [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    )


def _exponents() -> tuple[np.ndarray, np.ndarray]:
    """``p<+|-><exponent>`` of every exponent ``float.hex`` writes (-1022..1023), padded to 6
    bytes, and their lengths; row ``e + 1022``."""
    texts = [f"p{e:+d}".encode() for e in range(-1022, 1024)]
    table = np.frombuffer(b"".join(t.ljust(6, b"\0") for t in texts), np.uint8).reshape(-1, 6)
    return table, np.array([len(t) for t in texts])


_EXPONENT_TEXT, _EXPONENT_LEN = _exponents()
#: The two hex digits of every byte.
_HEX_PAIRS = np.frombuffer(b"".join(f"{b:02x}".encode() for b in range(256)), np.uint8).reshape(
    256, 2
)


def float_hex(values: pa.Array, valid: np.ndarray) -> pa.Array:
    """``float.hex`` of every value (every NaN: ``nan``) as large_binary; empty where null.

    From the IEEE 754 bits: ``[-]0x1.<13 hex digits>p<+|-><exponent>`` (``0x0.`` and ``p-1022``
    when subnormal); zeros, infinities and NaNs are replaced whole. Only the valid values are
    computed (a mostly null column costs little).
    """
    present = values if values.null_count == 0 else values.drop_null()
    x = np.asarray(present.cast(pa.float64()).to_numpy(zero_copy_only=False))
    bits = x.view(np.uint64)
    negative = (bits >> np.uint64(63)).astype(bool)
    biased = ((bits >> np.uint64(52)) & np.uint64(0x7FF)).astype(np.int64)
    mantissa = bits & np.uint64((1 << 52) - 1)
    # The row of its exponent text (inf and NaN: any, they are replaced).
    exponent = np.minimum(np.where(biased == 0, -1022, biased - 1023) + 1022, 2045)
    n = len(x)
    rows = np.empty((n, 24), np.uint8)
    rows[:, 0] = ord("-")
    rows[:, 1:4] = np.frombuffer(b"0x1", np.uint8)
    rows[biased == 0, 3] = ord("0")
    rows[:, 4] = ord(".")
    # 52 bits of mantissa: the low 7 bytes, big-endian, less the first nibble: 13 hex digits.
    low = mantissa.astype(">u8").view(np.uint8).reshape(n, 8)[:, 1:]
    rows[:, 5:18] = _HEX_PAIRS[low].reshape(n, 14)[:, 1:]
    rows[:, 18:24] = _EXPONENT_TEXT[exponent]
    keep = np.ones((n, 24), bool)
    keep[:, 0] = negative
    keep[:, 18:24] = np.arange(6) < _EXPONENT_LEN[exponent][:, None]
    if len(present) < len(values):  # the nulls' rows: no bytes
        full_rows = np.zeros((len(values), 24), np.uint8)
        full_keep = np.zeros((len(values), 24), bool)
        full_rows[valid], full_keep[valid] = rows, keep
        rows, keep = full_rows, full_keep
    out = _binary(rows, keep)
    special = np.zeros(len(values), bool)
    for where, replacement in (
        ((biased == 0) & (mantissa == 0) & ~negative, b"0x0.0p+0"),
        ((biased == 0) & (mantissa == 0) & negative, b"-0x0.0p+0"),
        ((biased == 0x7FF) & (mantissa == 0) & ~negative, b"inf"),
        ((biased == 0x7FF) & (mantissa == 0) & negative, b"-inf"),
        ((biased == 0x7FF) & (mantissa != 0), b"nan"),
    ):
        if where.any():
            special[:] = False
            special[valid] = where
            out = pc.if_else(pa.array(special), pa.scalar(replacement, _LB), out)
    return out
