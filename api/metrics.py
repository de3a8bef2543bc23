"""Prometheus metrics of the API (names from the product brief), served at ``/metrics``.

Labels are bounded: the operation name comes from the persisted-query allowlist or the
operation's own name only when it is allowlisted (``other`` otherwise), and ``status`` is
``ok`` or a reason code.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "FANOUT_LATENCY",
    "HTTP_REQUESTS",
    "INGEST_PUBLISHED",
    "RATE_LIMITED",
    "REQUESTS",
    "REQUEST_SECONDS",
    "SUBSCRIBERS",
]

REQUEST_SECONDS = Histogram(
    "graphql_request_duration_seconds",
    "GraphQL request duration, by operation",
    ["op"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.35, 0.5, 0.7, 1.0, 2.5),
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
INGEST_PUBLISHED = Counter(
    "igflow_api_signals_published_total", "Signals acknowledged by Kafka, by entry point", ["via"]
)
