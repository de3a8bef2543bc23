"""Prometheus metrics of the API (names from the product brief).

Labels are bounded: the operation name comes from the persisted-query allowlist or the
operation's own name only when it is allowlisted (``other`` otherwise), and ``status`` is
``ok`` or a reason code. Some labels name tenants, so ``/metrics`` is not a route of the API: it is
served on its own port (``api.metrics_host``/``api.metrics_port``, loopback by default) by
:class:`MetricsServer`.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from wsgiref.simple_server import WSGIServer

from prometheus_client import Counter, Gauge, Histogram

from core.errors import ConfigError
from core.metrics import start_server
from core.slo import API_LATENCY_BUCKETS

__all__ = [
    "API_SECONDS",
    "AUTH_THROTTLED",
    "FANOUT_LATENCY",
    "HTTP_REQUESTS",
    "INGEST_PUBLISHED",
    "KEY_LISTENER_UP",
    "KEY_LOOKUPS",
    "RATE_LIMITED",
    "REQUESTS",
    "REQUEST_SECONDS",
    "SUBSCRIBERS",
    "MetricsServer",
]

REQUEST_SECONDS = Histogram(
    "graphql_request_duration_seconds",
    "GraphQL request duration, by operation",
    ["op"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.35, 0.5, 0.7, 1.0, 2.5),
)
#: The API latency SLIs (core/slo.py): every authenticated GraphQL request (``read``: a query,
#: ``write``: a mutation) and ``POST /v1/signals`` (``write``), by bounded tenant label.
API_SECONDS = Histogram(
    "igflow_api_request_duration_seconds",
    "Authenticated API request duration, by kind (read or write) and tenant",
    ["kind", "tenant_id"],
    buckets=API_LATENCY_BUCKETS,
)
REQUESTS = Counter("graphql_requests_total", "GraphQL requests, by outcome", ["status"])
HTTP_REQUESTS = Counter(
    "igflow_api_http_requests_total", "REST requests, by route and HTTP status", ["route", "code"]
)
FANOUT_LATENCY = Histogram(
    "subscription_fanout_latency_ms",
    "From an event's arrival from Redis to its delivery to a subscriber (includes the "
    "coalescing window), milliseconds",
    buckets=(1, 5, 10, 25, 50, 100, 125, 150, 200, 250, 350, 500, 1000),
)
SUBSCRIBERS = Gauge("igflow_api_subscribers", "Open GraphQL subscriptions in this process")
RATE_LIMITED = Counter(
    "igflow_api_rate_limited_total", "Requests refused by a tenant's token bucket", ["tenant_id"]
)
AUTH_THROTTLED = Counter(
    "igflow_api_auth_throttled_total",
    "Requests refused unread because their address failed authentication too often",
)
KEY_LOOKUPS = Counter(
    "igflow_api_key_lookups_total", "API key lookups that queried Postgres (cache misses)"
)
KEY_LISTENER_UP = Gauge(
    "igflow_api_key_listener_up",
    "1 while this process hears API key changes from Postgres (LISTEN), else 0",
)
INGEST_PUBLISHED = Counter(
    "igflow_api_signals_published_total", "Signals acknowledged by Kafka, by entry point", ["via"]
)


class MetricsServer:
    """The default registry over HTTP (``GET /metrics``) on ``host:port``, in a daemon thread:
    started in the API's lifespan, stopped with it. Port 0 serves nothing. With
    ``certificate`` (``Settings.server_tls()``: TLS on) it serves HTTPS only."""

    def __init__(self, host: str, port: int, certificate: Mapping[str, str] | None = None) -> None:
        self.host = host
        self.port = port
        self.certificate = dict(certificate or {})
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Listen; ``ConfigError`` if the address cannot be bound (a second server on one host
        needs its own ``api.metrics_port``)."""
        if not self.port:
            return
        try:
            self._server, self._thread = start_server(self.host, self.port, self.certificate)
        except OSError as exc:
            msg = f"cannot serve metrics on {self.host}:{self.port} (api.metrics_port): {exc}"
            raise ConfigError(msg) from exc

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
