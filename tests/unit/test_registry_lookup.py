"""``core.schemas.RegistrySchemas`` over the standard library, against a registry on loopback.

The lookup sends the request confluent-kafka's client sent (the client the flow used before;
``tests/integration/test_registry_lookup.py`` compares both on the stack's registry): the
``Accept`` header, basic auth from the URL's userinfo, each comma-separated URL in turn. A 404
is "no such id"; anything else is retried and then a :class:`RegistryError`. And a lake-only
start-up no longer imports confluent-kafka's registry package (httpx2, authlib, attrs).
"""

from __future__ import annotations

import base64
import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from core.errors import RegistryError
from core.schemas import RegistrySchemas
from tests.fresh_python import run_python
from tests.ports import free_port

_SCHEMA = '{"type": "record", "name": "S", "fields": []}'


class _Registry(http.server.BaseHTTPRequestHandler):
    """Answers ``GET /schemas/ids/1``; 404 for any other id; ``failures`` 503s first."""

    seen: list[dict[str, Any]]
    failures: list[int]

    def do_GET(self) -> None:
        self.seen.append({"path": self.path, **{k: v for k, v in self.headers.items()}})
        if self.failures:
            self.failures.pop()
            self._answer(503, {"error_code": 50301, "message": "not now"})
        elif self.path == "/schemas/ids/1":
            self._answer(200, {"schema": _SCHEMA})
        else:
            self._answer(404, {"error_code": 40403, "message": "Schema not found"})

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def registry() -> Iterator[tuple[str, type[_Registry]]]:
    handler = type("Handler", (_Registry,), {"seen": [], "failures": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


def test_a_known_id_is_its_schema_text_and_an_unknown_one_none(
    registry: tuple[str, type[_Registry]],
) -> None:
    url, handler = registry
    lookup = RegistrySchemas(url + "/", attempts=1)
    assert lookup(1) == _SCHEMA
    assert lookup(7) is None
    assert [s["path"] for s in handler.seen] == ["/schemas/ids/1", "/schemas/ids/7"]
    assert handler.seen[0]["Accept"] == (
        "application/vnd.schemaregistry.v1+json, application/vnd.schemaregistry+json, "
        "application/json"
    )
    assert "Authorization" not in handler.seen[0]


def test_the_urls_userinfo_is_basic_auth(registry: tuple[str, type[_Registry]]) -> None:
    url, handler = registry
    with_user = url.replace("http://", "http://us%40er:p%3Ass@")
    assert RegistrySchemas(with_user, attempts=1)(1) == _SCHEMA
    expected = "Basic " + base64.b64encode(b"us@er:p:ss").decode()
    assert handler.seen[0]["Authorization"] == expected


def test_each_url_in_turn(registry: tuple[str, type[_Registry]]) -> None:
    url, handler = registry
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens: the next URL answers
    assert RegistrySchemas(f"{down}, {url}", attempts=1)(1) == _SCHEMA
    # A retriable status on the first URL goes on to the next one too.
    handler.failures.append(1)
    assert RegistrySchemas(f"{url},{url}", attempts=1)(1) == _SCHEMA


def test_failures_are_retried_then_a_registry_error(
    registry: tuple[str, type[_Registry]],
) -> None:
    url, handler = registry
    handler.failures.extend([1, 1])
    assert RegistrySchemas(url, attempts=3, first_backoff_s=0.001)(1) == _SCHEMA
    handler.failures.extend([1, 1, 1])
    with pytest.raises(RegistryError, match="unavailable after 3 attempts: HTTP 503: not now"):
        RegistrySchemas(url, attempts=3, first_backoff_s=0.001)(1)
    with pytest.raises(RegistryError, match="invalid schema registry url"):
        RegistrySchemas("ftp://example.com")


def test_a_flow_start_up_imports_no_confluent_registry_client() -> None:
    out = run_python(
        """
        import json, sys
        from core.lazy_pandas import defer_pandas
        defer_pandas()
        import igflow.cli, igflow.runner, flows.coherence
        from core.schemas import RegistrySchemas
        RegistrySchemas("https://127.0.0.1:9")
        heavy = ("confluent_kafka.schema_registry", "httpx2", "authlib", "attrs", "joserfc")
        print(json.dumps(sorted(m for m in heavy if m in sys.modules)))
        """
    )
    assert out == []
