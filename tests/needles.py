"""Plaintext scans: which of many byte strings occur whole in a store's raw bytes."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["found"]


def found(blobs: Iterable[bytes], needles: Iterable[bytes]) -> set[bytes]:
    """The needles that occur whole in any of ``blobs``: ``{n for n in needles if any(n in b
    for b in blobs)}``, with one pass over each blob instead of one per needle.

    Every needle starts with the needles' longest common prefix, so a needle can occur only
    where that prefix does: each occurrence is looked up among the needles, once per needle
    length. The needles the tests scan for share a format (Kafka values behind the wire format's
    five-byte header, selectors ``sel-NNNNN``), so the occurrences are few. Without a common
    prefix this is the plain scan. The sealed-recovery test's scan of 11 MB for 24,000 values
    and 9,705 selectors took 67 s the plain way."""
    wanted = set(needles)
    if not wanted:
        return set()
    # The longest common prefix of all is that of the least and the greatest.
    lo, hi = min(wanted), max(wanted)
    size = next((i for i, (x, y) in enumerate(zip(lo, hi, strict=False)) if x != y), len(lo))
    prefix = lo[:size]
    if not prefix:
        every = list(blobs)
        return {n for n in wanted if any(n in b for b in every)}
    lengths = sorted({len(n) for n in wanted})
    out: set[bytes] = set()
    for blob in blobs:
        at = blob.find(prefix)
        while at >= 0:
            out.update(p for p in (blob[at : at + n] for n in lengths) if p in wanted)
            at = blob.find(prefix, at + 1)
    return out
