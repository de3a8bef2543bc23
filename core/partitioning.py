"""How the project's producers choose a partition: as Kafka's Java client does.

Kafka's Java producer (and Kafka Streams, Connect, ksqlDB) puts a keyed record on
``toPositive(murmur2(key)) % partitions``; librdkafka's default (``consistent_random``, CRC32)
does not, so records of one key produced by a Java service and by us would land on different
partitions, and a tenant's records would lose their order. librdkafka's ``murmur2_random`` is
the Java partitioner (a record without a key goes to a random partition). Every producer the
project owns (``igflow produce``, ``igflow quarantine release``, the API's publish, the DLQ)
merges :data:`JAVA_PARTITIONER` into its configuration.
"""

from __future__ import annotations

from typing import Final

__all__ = ["JAVA_PARTITIONER", "murmur2", "partition_of"]

JAVA_PARTITIONER: Final[dict[str, str]] = {"partitioner": "murmur2_random"}


def murmur2(data: bytes) -> int:
    """Kafka's ``Utils.murmur2`` (the Java client's key hash), as a signed 32-bit int."""
    m, r = 0x5BD1E995, 24
    length = len(data)
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    whole = length & ~3
    for i in range(0, whole, 4):
        k = data[i] | data[i + 1] << 8 | data[i + 2] << 16 | data[i + 3] << 24
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    extra = length % 4
    if extra == 3:
        h ^= data[whole + 2] << 16
    if extra >= 2:
        h ^= data[whole + 1] << 8
    if extra >= 1:
        h ^= data[whole]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def partition_of(key: bytes, partitions: int) -> int:
    """The partition the Java partitioner (:data:`JAVA_PARTITIONER`) puts a record keyed
    ``key`` on, of ``partitions``: ``toPositive(murmur2(key)) % partitions``. The project's
    producers key signals by tenant id, so this is a tenant's partition."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions
