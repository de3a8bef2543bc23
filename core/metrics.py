"""Prometheus metrics of the flow.

Counters are labelled by tenant and reason code only (bounded, non-sensitive label sets). Exposed
by ``igflow run --metrics-port``; Bytewax's own metrics share the same default registry.

The SLIs' tenant labels (``ingest_events_processed_total``, ``igflow_pipeline_latency_seconds``,
``igflow_ingest_failed_total``) are bounded by :func:`core.metric_labels.tenant_label`: registered
tenants, the SLO file's named ones, the first ``run.metrics_tenant_cap`` others, then
``(other)``. The steps' counters name registered tenants or ``(unregistered)``.

:func:`start_server` serves the default registry for every process of the project (the flow,
``igflow serve``'s metrics port, ``igflow probe``): plain HTTP, or HTTPS with the stack's
certificate when TLS is on (``Settings.server_tls()``), which the stack's Prometheus scrapes
verifying the CA.
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Mapping
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import (
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    make_wsgi_app,
    start_http_server,
)
from prometheus_client.exposition import ThreadingWSGIServer

from core.metric_labels import TENANT_LABELS, TenantLabels, tenant_label
from core.slo import FRESHNESS_BUCKETS

__all__ = [
    "CACHE_AGE",
    "COMMIT_SECONDS",
    "DEDUPE_KEYS",
    "DEDUPE_RATE",
    "DLQ_BY_REFERENCE",
    "DLQ_EVENTS",
    "DLQ_SKIPPED",
    "DRIFT_BATCHES",
    "DUPLICATES",
    "EVENTS_IN",
    "EVENTS_OUT",
    "HANDSHAKE_TIMEOUT_S",
    "INGEST_FAILED",
    "LAKE_BATCH_ROWS",
    "LAKE_COMMIT_RETRIES",
    "LAKE_SKIPPED",
    "PIPELINE_LATENCY",
    "QUARANTINED",
    "REJECTED",
    "SCORE_CHANGES",
    "SINK_BATCHES",
    "SINK_BLOCKED_SECONDS",
    "SINK_DEAD_LETTERS",
    "SINK_PENDING",
    "SINK_RETRIES",
    "SINK_ROWS",
    "SINK_SECONDS",
    "SNAPSHOT_WITHHELD",
    "TENANT_LABELS",
    "TenantLabels",
    "serve",
    "start_server",
    "tenant_label",
]

EVENTS_IN = Counter("igflow_events_in_total", "Kafka records read by the flow", ["topic"])
EVENTS_OUT = Counter(
    "ingest_events_processed_total", "Signals landed in the lake", ["tenant_id", "table"]
)
DLQ_EVENTS = Counter("igflow_dlq_events_total", "Records sent to the DLQ", ["reason"])
DLQ_BY_REFERENCE = Counter(
    "igflow_dlq_by_reference_total",
    "DLQ messages sent without their value (too large for the DLQ; the bytes are in quarantine)",
)
DLQ_SKIPPED = Counter(
    "igflow_dlq_skipped_total",
    "Rejects not sent to the DLQ again: at or below their lane's mark (a resume or a re-run)",
)
LAKE_SKIPPED = Counter(
    "igflow_lake_skipped_total",
    "Rows not appended because their offset was already committed (replay after a resume)",
    ["table"],
)
LAKE_BATCH_ROWS = Histogram(
    "igflow_lake_batch_rows",
    "Rows per Iceberg append",
    ["table"],
    buckets=(1, 10, 100, 500, 1000, 2500, 5000, 10000, 50000),
)
COMMIT_SECONDS = Histogram(
    "igflow_lake_commit_seconds", "Latency of one Iceberg append (write files + commit)", ["table"]
)
LAKE_COMMIT_RETRIES = Counter(
    "igflow_lake_commit_retries_total",
    "Iceberg commits retried after a concurrent commit",
    ["table"],
)
PIPELINE_LATENCY = Histogram(
    "igflow_pipeline_latency_seconds",
    "From the Kafka record's timestamp to its commit in the lake (per commit and tenant: the "
    "tenant's oldest record in the commit)",
    ["table", "tenant_id"],
    buckets=FRESHNESS_BUCKETS,
)
INGEST_FAILED = Counter(
    "igflow_ingest_failed_total",
    "Rows a store gave up on after its retries (dead-lettered as SINK_UNAVAILABLE), by tenant",
    ["tenant_id"],
)

REJECTED = Counter(
    "igflow_rejected_total", "Records rejected by a step", ["stage", "reason", "tenant_id"]
)
QUARANTINED = Counter(
    "igflow_quarantined_total", "Records held in quarantine", ["tenant_id", "reason"]
)
DRIFT_BATCHES = Counter(
    "igflow_drift_batches_total",
    "Micro-batches checked for drift, by outcome (learning, passed, drifted, schema_drift)",
    ["tenant_id", "outcome"],
)
DUPLICATES = Counter("igflow_duplicates_total", "Duplicate signals not landed", ["tenant_id"])
DEDUPE_RATE = Gauge(
    "ingest_dedupe_rate", "Fraction of a tenant's signals that were duplicates", ["tenant_id"]
)
CONSUMER_LAG = Gauge(
    "igflow_consumer_lag",
    "High watermark minus the flow's committed group offset (after durable lake commits)",
    ["topic", "partition"],
)
DEDUPE_KEYS = Gauge("igflow_dedupe_keys", "Idempotency keys held by the dedupe step", ["tenant_id"])
SCORE_CHANGES = Counter(
    "igflow_score_changes_total", "Coherence score changes emitted", ["tenant_id", "status"]
)

SNAPSHOT_WITHHELD = Counter(
    "igflow_snapshot_withheld_total",
    "Recovery-snapshot items (or whole states) discarded on resume, their tenant's keys destroyed",
    ["step", "reason"],
)
CACHE_AGE = Gauge(
    "igflow_cache_age_seconds",
    "Seconds since a Postgres-backed cache (tenants, switches, source_revisions) last loaded its"
    " copy; the oldest live copy of that cache in the process",
    ["cache"],
)
SINK_BATCHES = Counter("igflow_sink_batches_total", "Batches written to a serving store", ["sink"])
SINK_ROWS = Counter("igflow_sink_rows_total", "Rows written to a serving store", ["sink"])
SINK_RETRIES = Counter(
    "igflow_sink_retries_total", "Store writes retried after a transient error", ["sink"]
)
SINK_DEAD_LETTERS = Counter(
    "igflow_sink_dead_letters_total",
    "Rows sent to the DLQ (SINK_UNAVAILABLE) after the last attempt",
    ["sink"],
)
SINK_SECONDS = Histogram(
    "igflow_sink_write_seconds", "Latency of one batch write, retries included", ["sink"]
)
SINK_PENDING = Gauge(
    "igflow_sink_pending_rows",
    "Rows handed to a serving store's writer thread and not yet acknowledged",
    ["sink"],
)
SINK_BLOCKED_SECONDS = Counter(
    "igflow_sink_blocked_seconds_total",
    "Seconds the worker waited because a serving store's pipeline was full (backpressure)",
    ["sink"],
)


def serve(port: int, certificate: Mapping[str, str] | None = None, host: str = "127.0.0.1") -> None:
    """Expose the default registry on ``host:port`` (no-op when ``port`` is 0), over HTTPS
    when ``certificate`` is given (see :func:`start_server`)."""
    if port:
        start_server(host, port, certificate)


#: How long a connection to an HTTPS metrics port may take to finish its TLS handshake.
HANDSHAKE_TIMEOUT_S = 10.0


class _SilentHandler(WSGIRequestHandler):
    """No access log on stderr (a scrape every 15 s)."""

    def log_message(self, format: str, *args: Any) -> None:
        """Say nothing."""


class _TlsServer(ThreadingWSGIServer):
    """prometheus_client's threading WSGI server, over TLS. The handshake runs in the
    connection's own thread with a deadline, not in ``accept()`` as in prometheus_client's
    ``certfile`` option, where one client that connects and says nothing would hold up every
    scrape after it."""

    context: ssl.SSLContext

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(HANDSHAKE_TIMEOUT_S)
        # A plaintext client or one that does not trust our CA fails here: nothing is served.
        with self.context.wrap_socket(request, server_side=True) as conn:
            conn.settimeout(None)
            handler: Any = self.RequestHandlerClass  # typeshed types its server as Self
            handler(conn, client_address, self)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A refused handshake or a dropped connection is the client's business, not a
        traceback on stderr."""


def start_server(
    host: str, port: int, certificate: Mapping[str, str] | None = None
) -> tuple[WSGIServer, threading.Thread]:
    """Serve the default registry's ``/metrics`` on ``host:port`` in a daemon thread: plain HTTP
    without ``certificate``, else HTTPS only with uvicorn's arguments as
    ``Settings.server_tls()`` gives them (``ssl_certfile``, ``ssl_keyfile``). Returns the server
    (``shutdown()`` and ``server_close()`` stop it) and its thread. ``OSError`` if the address
    cannot be bound or the files not read."""
    if not certificate:
        return start_http_server(port, addr=host)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certificate["ssl_certfile"], certificate["ssl_keyfile"])

    class Server(_TlsServer):
        address_family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]

    Server.context = context
    server = make_server(host, port, make_wsgi_app(REGISTRY), Server, _SilentHandler)
    thread = threading.Thread(target=server.serve_forever, name="metrics-https", daemon=True)
    thread.start()
    return server, thread
