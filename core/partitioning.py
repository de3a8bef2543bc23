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

__all__ = ["JAVA_PARTITIONER"]

JAVA_PARTITIONER: Final[dict[str, str]] = {"partitioner": "murmur2_random"}
