"""The product's side of the schema registry: look up writer schemas, register the contracts.

Speaks the Confluent Schema Registry REST API, so the same code runs against Confluent Schema
Registry, Karapace, or the project's local registry (``registry/``). Registering goes through
confluent-kafka's client (``igflow setup``); the flow's lookups (:class:`RegistrySchemas`, one
``GET /schemas/ids/<id>`` per new id) go through the standard library, because importing
confluent-kafka's client package (httpx2, authlib, attrs, joserfc) cost every ``igflow run``
0.083-0.087 CPU s for that one request (a stdlib GET: 0.004 s of imports). The request is the
one that client sends: each of the comma-separated URLs in turn, its ``Accept`` header, basic
auth from the first URL's userinfo, the CA as the client picks it (``ssl_ca_location``, else
``SSL_CERT_FILE``/``SSL_CERT_DIR``, else certifi's), and the environment's proxies.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import os
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit, urlunsplit

from core.contracts import Contract
from core.errors import RegistryError

if TYPE_CHECKING:
    from confluent_kafka.schema_registry import SchemaRegistryClient

__all__ = ["RegisteredContract", "RegistrySchemas", "register_contracts"]

log = logging.getLogger(__name__)

#: What confluent-kafka's client accepts (its ``send_request``).
_ACCEPT = (
    "application/vnd.schemaregistry.v1+json, application/vnd.schemaregistry+json, application/json"
)
#: One request's deadline (confluent-kafka's client has none by default: a hung registry held
#: the lookup, and so the flow, forever).
_TIMEOUT_S = 30.0


class RegistryHttpError(Exception):
    """The registry answered a lookup with an error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


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
        # Our loop is the only retry (confluent-kafka's client, used before, had its own
        # switched off with max.retries 0).
        self._urls = [u.strip().rstrip("/") for u in url.split(",") if u.strip()]
        if not self._urls or not all(u.startswith("http") for u in self._urls):
            msg = f"invalid schema registry url {url!r}"
            raise RegistryError(msg)
        self._headers = {"Accept": _ACCEPT}
        first = urlsplit(self._urls[0])
        if first.username is not None or first.password is not None:
            pair = f"{unquote(first.username or '')}:{unquote(first.password or '')}"
            self._headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        self._urls = [_without_userinfo(u) for u in self._urls]
        handlers: list[Any] = []
        if any(u.startswith("https:") for u in self._urls):
            handlers.append(urllib.request.HTTPSHandler(context=_tls_context(ca_location)))
        self._opener = urllib.request.build_opener(*handlers)  # and the environment's proxies
        self._attempts = attempts
        self._backoff = first_backoff_s

    def __call__(self, schema_id: int) -> str | None:
        delay = self._backoff
        for attempt in range(1, self._attempts + 1):
            try:
                text = self._get(schema_id)
            except RegistryHttpError as exc:
                if exc.status == 404:
                    return None
                failure: Exception = exc
            except Exception as exc:
                failure = exc
            else:
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

    def _get(self, schema_id: int) -> str:
        """The schema text of ``schema_id``: each URL in turn, as confluent-kafka's client
        tries them (the next one after a failure or a retriable status, 408, 429, 5xx)."""
        error: Exception | None = None
        for i, base in enumerate(self._urls):
            request = urllib.request.Request(
                f"{base}/schemas/ids/{int(schema_id)}", headers=self._headers
            )
            try:
                with self._opener.open(request, timeout=_TIMEOUT_S) as response:
                    body = response.read()
            except urllib.error.HTTPError as exc:
                with exc:  # it holds the connection
                    error = RegistryHttpError(exc.code, _message(exc.read()))
                retriable = exc.code in (408, 429) or exc.code >= 500
                if not retriable or i == len(self._urls) - 1:
                    raise error from None
                continue
            except Exception as exc:
                if i == len(self._urls) - 1:
                    raise
                error = exc
                continue
            text: str = json.loads(body).get("schema") or ""
            return text
        raise error or RegistryError("no schema registry url")


def _without_userinfo(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def _tls_context(ca_location: str) -> ssl.SSLContext:
    """The CA confluent-kafka's client trusts: the one given, else ``SSL_CERT_FILE`` or
    ``SSL_CERT_DIR``, else certifi's bundle."""
    if ca_location:
        if Path(ca_location).is_dir():
            return ssl.create_default_context(capath=ca_location)
        return ssl.create_default_context(cafile=ca_location)
    if "SSL_CERT_FILE" in os.environ:
        return ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
    if "SSL_CERT_DIR" in os.environ:
        return ssl.create_default_context(capath=os.environ["SSL_CERT_DIR"])
    import certifi

    return ssl.create_default_context(cafile=certifi.where())


def _message(body: bytes) -> str:
    try:
        return str(json.loads(body).get("message"))
    except (ValueError, AttributeError):
        return body[:200].decode(errors="replace")


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
    from confluent_kafka.schema_registry import Schema
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    out = []
    for contract in contracts:
        try:
            schema_id = client.register_schema(subject, Schema(contract.text, "AVRO"))
        except SchemaRegistryError as exc:
            msg = f"cannot register {contract.path.name} under {subject}: {exc}"
            raise RegistryError(msg) from exc
        out.append(RegisteredContract(subject, contract.version, schema_id))
    return out
