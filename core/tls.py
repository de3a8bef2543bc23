"""Endpoints in their TLS form: what every client of the stack needs to verify its server.

Plain functions over strings, used by :meth:`core.settings.Settings.load` when the ``tls``
section is enabled, so every client (libpq, redis-py, librdkafka, the registry's client, the
Bolt driver) reads an endpoint that already says "encrypted, and verified against this CA".
An endpoint that already names its own TLS options (a production DSN with ``sslmode``, a
``rediss://`` URL) is left as it is: the operator's choice wins over the stack's default.

=============  ==============================================================================
hop            what the TLS form is
=============  ==============================================================================
Postgres       ``sslmode=verify-full`` (certificate chain *and* host name) + ``sslrootcert``
Redis          ``rediss://`` + ``ssl_cert_reqs=required`` + ``ssl_ca_certs`` (redis-py checks
               the host name by default)
Kafka          ``security.protocol=SSL`` + ``ssl.ca.location`` (librdkafka verifies the
               certificate and, since 2.0, the host name by default)
registry       ``https://``; its client gets ``ssl.ca.location``
Bolt           the driver's ``trusted_certificates`` (see ``sinks/bolt.py``)
=============  ==============================================================================
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = [
    "Brokers",
    "KafkaConfig",
    "KafkaConnection",
    "https_url",
    "kafka_client_config",
    "kafka_connection",
    "postgres_dsn",
    "redis_url",
]


def postgres_dsn(dsn: str, ca_file: str) -> str:
    """``dsn`` (a ``postgresql://`` URL or a libpq ``key=value`` string) with
    ``sslmode=verify-full`` and ``sslrootcert=ca_file``, unless it sets ``sslmode`` already."""
    parts = urlsplit(dsn)
    if parts.scheme:
        query = parse_qsl(parts.query, keep_blank_values=True)
        if any(key == "sslmode" for key, _ in query):
            return dsn
        query += [("sslmode", "verify-full"), ("sslrootcert", ca_file)]
        return urlunsplit(parts._replace(query=urlencode(query)))
    if "sslmode=" in dsn:
        return dsn
    quoted = ca_file.replace("\\", "\\\\").replace("'", "\\'")
    return f"{dsn} sslmode=verify-full sslrootcert='{quoted}'".strip()


def redis_url(url: str, ca_file: str) -> str:
    """``redis://`` ``url`` as ``rediss://`` that requires a certificate signed by ``ca_file``;
    a ``rediss://`` or ``unix://`` URL is returned as it is."""
    parts = urlsplit(url)
    if parts.scheme != "redis":
        return url
    query = parse_qsl(parts.query, keep_blank_values=True)
    query += [("ssl_cert_reqs", "required"), ("ssl_ca_certs", ca_file)]
    return urlunsplit(parts._replace(scheme="rediss", query=urlencode(query)))


def https_url(url: str) -> str:
    """An ``http://`` URL as ``https://`` (anything else unchanged)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(scheme="https")) if parts.scheme == "http" else url


def kafka_client_config(security_protocol: str, ca_location: str) -> dict[str, str]:
    """The librdkafka properties of a connection beside ``bootstrap.servers``: none for
    ``PLAINTEXT``; for ``SSL`` the protocol, and the CA when one is named (else the system's)."""
    if security_protocol == "PLAINTEXT":
        return {}
    config = {"security.protocol": security_protocol}
    if ca_location:
        config["ssl.ca.location"] = ca_location
    return config


#: Where a Kafka client connects: a bootstrap list (plaintext), or librdkafka's connection
#: properties (``KafkaSettings.client_config()``: bootstrap servers and, with TLS, protocol and CA).
Brokers = str | Mapping[str, str | int | float | bool]
#: A librdkafka configuration, as confluent-kafka's clients type it.
KafkaConfig = dict[str, str | int | float | bool]


def kafka_connection(brokers: Brokers) -> KafkaConfig:
    """The librdkafka properties of ``brokers`` (a fresh dict the caller may extend)."""
    if isinstance(brokers, str):
        return {"bootstrap.servers": brokers}
    return dict(brokers)


class KafkaConnection(Mapping[str, str | int | float | bool]):
    """Immutable, hashable librdkafka connection properties, for the frozen (hashed) values
    that say where to connect (``DeadLetterTarget``, ``GroupTarget``); pickles with them."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, str | int | float | bool]) -> None:
        self._items = dict(items)

    def __getitem__(self, key: str) -> str | int | float | bool:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(tuple(sorted((k, str(v)) for k, v in self._items.items())))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mapping) and dict(self._items) == dict(other)

    def __repr__(self) -> str:
        return f"KafkaConnection({self._items!r})"

    def __reduce__(
        self,
    ) -> tuple[type[KafkaConnection], tuple[dict[str, str | int | float | bool]]]:
        return (KafkaConnection, (self._items,))
