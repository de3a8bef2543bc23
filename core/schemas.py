"""The product's side of the schema registry: look up writer schemas, register the contracts.

Speaks the Confluent Schema Registry REST API through confluent-kafka's client, so the same code
runs against Confluent Schema Registry, Karapace, or the project's local registry (``registry/``).
"""

from __future__ import annotations

import dataclasses
import logging
import time

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from core.contracts import Contract
from core.errors import RegistryError

__all__ = ["RegisteredContract", "RegistrySchemas", "register_contracts"]

log = logging.getLogger(__name__)


class RegistrySchemas:
    """A :class:`~operators.decode.SchemaLookup` over a registry, with retries.

    ``None`` means the registry answered that the id does not exist. Any other failure (the
    registry down, a 5xx) is retried with exponential backoff and then raised as
    :class:`RegistryError`: an outage must not turn valid records into rejects.
    """

    def __init__(
        self,
        url: str,
        *,
        attempts: int = 6,
        first_backoff_s: float = 0.2,
        ca_location: str = "",
    ) -> None:
        # Our loop is the only retry: the client's own (default 3, backing off) multiplied it.
        config: dict[str, object] = {"url": url, "max.retries": 0}
        if ca_location:  # an https:// registry signed by this CA (the stack's, with TLS on)
            config["ssl.ca.location"] = ca_location
        self._client = SchemaRegistryClient(config)
        self._attempts = attempts
        self._backoff = first_backoff_s

    def __call__(self, schema_id: int) -> str | None:
        delay = self._backoff
        for attempt in range(1, self._attempts + 1):
            try:
                schema: Schema = self._client.get_schema(schema_id)
            except SchemaRegistryError as exc:
                if exc.http_status_code == 404:
                    return None
                failure: Exception = exc
            except Exception as exc:
                failure = exc
            else:
                text: str = schema.schema_str or ""
                return text
            log.warning(
                "schema registry lookup failed (attempt %d/%d): %s",
                attempt,
                self._attempts,
                failure,
                extra={"op": "registry.get_schema", "error_code": "REGISTRY_UNAVAILABLE"},
            )
            if attempt < self._attempts:
                time.sleep(delay)
                delay *= 2
        msg = f"schema registry unavailable after {self._attempts} attempts: {failure}"
        raise RegistryError(msg)


@dataclasses.dataclass(frozen=True, slots=True)
class RegisteredContract:
    """A contract version and the registry id it got."""

    subject: str
    version: int
    schema_id: int


def register_contracts(
    client: SchemaRegistryClient, subject: str, contracts: list[Contract]
) -> list[RegisteredContract]:
    """Register every version of a contract under ``subject``, oldest first (idempotent).

    An incompatible version fails with the registry's 409 as :class:`RegistryError`.
    """
    out = []
    for contract in contracts:
        try:
            schema_id = client.register_schema(subject, Schema(contract.text, "AVRO"))
        except SchemaRegistryError as exc:
            msg = f"cannot register {contract.path.name} under {subject}: {exc}"
            raise RegistryError(msg) from exc
        out.append(RegisteredContract(subject, contract.version, schema_id))
    return out
