"""Truncated PRF tags: what a server publishes per epoch and what a client looks its items up in.

A tag is the first :data:`TAG_BYTES` bytes of a 64-byte PRF output:

* full intersection: the RFC 9497 OPRF output ``Finalize(input, k * H(input))``, so a client
  can tie each tag to its own input;
* intersection cardinality: ``SHA-512(I2OSP(32, 2) || k * H(input) || CARDINALITY_LABEL)``, a
  digest of the unblinded element alone, because after the server's shuffle the client no longer
  knows which input an element belongs to. Each mode has its own key, so tags of one mode say
  nothing about the other.

False-positive bound: a client item outside the server's set has a pseudorandom tag, which
equals one of ``n_s`` published tags with probability at most ``n_s * 2^(-8t)``; by the union
bound, *any* false positive among ``n_c`` client items has probability at most
``n_c * n_s * 2^(-8t)`` (:func:`false_positive_bound`). ``t`` is chosen so that this stays at or
below 2^-128 up to the wire format's limits (``n_c <= MAX_BATCH = 2^16``, ``n_s <= MAX_SET =
2^24``): ``t = ceil((128 + 16 + 24) / 8) = 21`` bytes, i.e. 168-bit tags.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from psi.curve import HASH_BYTES, GroupBatch
from psi.messages import MAX_BATCH, MAX_SET, Table

__all__ = [
    "CARDINALITY_LABEL",
    "SECURITY_BITS",
    "TAG_BYTES",
    "TagSet",
    "cardinality_tags",
    "false_positive_bound",
    "sorted_tags",
    "truncate",
]

SECURITY_BITS = 128
TAG_BYTES = math.ceil((SECURITY_BITS + math.log2(MAX_BATCH) + math.log2(MAX_SET)) / 8)
CARDINALITY_LABEL = b"IGFLOW-PSI-CA-V1"


def false_positive_bound(client_items: int, server_items: int, tag_bytes: int = TAG_BYTES) -> float:
    """Upper bound on the probability that any client item is falsely reported as shared."""
    return client_items * server_items * 2.0 ** (-8 * tag_bytes)


def truncate(hashes: bytes) -> list[bytes]:
    """The tag of each packed 64-byte PRF output, in order."""
    return [hashes[i : i + TAG_BYTES] for i in range(0, len(hashes), HASH_BYTES)]


def cardinality_tags(batch: GroupBatch, unblinded: bytes) -> list[bytes]:
    """The cardinality-mode tag of each packed unblinded element ``k * H(input)``."""
    return truncate(batch.digest(unblinded, CARDINALITY_LABEL))


def sorted_tags(tags: Iterable[bytes]) -> bytes:
    """Tags packed in sorted order, so a table says nothing about the set's original order."""
    return b"".join(sorted(tags))


class TagSet:
    """A client's cached, hashed view of one :class:`Table` for constant-time lookups."""

    def __init__(self, table: Table) -> None:
        self.table = table
        width = table.tag_bytes
        self._tags = frozenset(table.tags[i : i + width] for i in range(0, len(table.tags), width))

    def __contains__(self, tag: object) -> bool:
        return tag in self._tags

    def __len__(self) -> int:
        return len(self._tags)
