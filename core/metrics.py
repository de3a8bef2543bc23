"""Prometheus metrics of the flow.

Counters are labelled by tenant and reason code only (bounded, non-sensitive label sets). Exposed
by ``igflow run --metrics-port``; Bytewax's own metrics share the same default registry.

The SLIs' tenant labels (``ingest_events_processed_total``, ``igflow_pipeline_latency_seconds``,
``igflow_ingest_failed_total``) are bounded by :func:`core.metric_labels.tenant_label`: registered
tenants, the SLO file's named ones, the first ``run.metrics_tenant_cap`` others, then
``(other)``. The steps' counters name registered tenants or ``(unregistered)``.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from core.metric_labels import TENANT_LABELS, TenantLabels, tenant_label
from core.slo import FRESHNESS_BUCKETS

__all__ = [
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


def serve(port: int) -> None:
    """Expose the default registry on ``127.0.0.1:port`` (no-op when ``port`` is 0)."""
    if port:
        start_http_server(port, addr="127.0.0.1")
