"""Set-up and inspection: topics, tables, the notebook catalog file, what landed.

Every function here is idempotent: ``igflow setup`` can run before every start.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic
from confluent_kafka.schema_registry import SchemaRegistryClient
from pyiceberg.catalog import Catalog

from api.jwt_keys import ensure_dev_keys
from core.catalog import catalog
from core.contracts import signal_contracts
from core.errors import IgflowError
from core.migrations import apply as apply_migrations
from core.schemas import RegisteredContract, register_contracts
from core.settings import KafkaSettings, Settings
from igflow.workload import seed_demo_tenants
from sinks.dlq import dlq_max_message_bytes, marks_topic_spec
from sinks.iceberg import ensure_table
from sinks.lake_tables import SIGNALS, TABLES

__all__ = [
    "LakeSummary",
    "create_tables",
    "create_topics",
    "lake_summary",
    "register_schemas",
    "setup",
    "topic_specs",
]


def topic_specs(kafka: KafkaSettings) -> list[NewTopic]:
    """The signal and DLQ topics, and the DLQ's compacted marks topic
    (:func:`sinks.dlq.marks_topic_spec`), as ``igflow setup`` creates them: explicit partitions,
    replication and configs. The DLQ accepts every record the signal topic does, plus the DLQ
    headers (:func:`sinks.dlq.dlq_max_message_bytes`); both keep producer timestamps, which the
    validate step checks event times against, no further ahead of the broker's clock than
    ``kafka.timestamp_after_max_ms``."""
    common = {
        "cleanup.policy": "delete",
        "message.timestamp.type": "CreateTime",
        "message.timestamp.after.max.ms": str(kafka.timestamp_after_max_ms),
    }
    signals = {
        **common,
        "max.message.bytes": str(kafka.max_message_bytes),
        "retention.ms": str(kafka.retention_ms),
    }
    dlq = {
        **common,
        "max.message.bytes": str(dlq_max_message_bytes(kafka.max_message_bytes)),
        "retention.ms": str(kafka.dlq_retention_ms),
    }
    return [
        *(
            NewTopic(
                topic,
                num_partitions=kafka.partitions,
                replication_factor=kafka.replication_factor,
                config=config,
            )
            for topic, config in ((kafka.topic, signals), (kafka.dlq_topic, dlq))
        ),
        marks_topic_spec(kafka.dlq_topic, kafka.replication_factor),
    ]


def create_topics(settings: Settings, timeout_s: float = 30.0) -> list[str]:
    """Create the signal and DLQ topics (:func:`topic_specs`) if missing; returns the ones
    created. Existing topics are left as they are."""
    admin = AdminClient(settings.kafka.client_config())
    existing = admin.list_topics(timeout=timeout_s).topics
    wanted = [spec for spec in topic_specs(settings.kafka) if spec.topic not in existing]
    if not wanted:
        return []
    futures = admin.create_topics(wanted, operation_timeout=timeout_s)
    created = []
    for topic, future in futures.items():
        try:
            future.result()
            created.append(topic)
        except Exception as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                msg = f"cannot create topic {topic}: {exc}"
                raise IgflowError(msg) from exc
    return created


def create_tables(settings: Settings) -> list[str]:
    """Create the Iceberg namespace and tables if missing; returns their identifiers."""
    cat = catalog(settings)
    for table in TABLES:
        ensure_table(cat, settings.lake.namespace, table)
    return [f"{settings.lake.namespace}.{table.name}" for table in TABLES]


def write_pyiceberg_config(settings: Settings, home: Path) -> Path:
    """Write ``home/.pyiceberg.yaml`` so ``load_catalog("igflow")`` works in a notebook."""
    home.mkdir(parents=True, exist_ok=True)
    path = home / ".pyiceberg.yaml"
    props = settings.catalog_properties
    lines = ["catalog:", f"  {settings.lake.catalog_name}:"]
    lines += [f"    {key}: {value}" for key, value in props.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def register_schemas(settings: Settings) -> list[RegisteredContract]:
    """Register every version of the Signal contract under the configured subject."""
    with SchemaRegistryClient(settings.kafka.registry_config()) as client:
        return register_contracts(client, settings.kafka.subject, signal_contracts())


def setup(settings: Settings, pyiceberg_home: Path | None = None) -> dict[str, Any]:
    """Register the schemas, create topics and tables, apply the Postgres migrations, register
    the demo tenants (only those missing), write the notebook catalog file."""
    out: dict[str, Any] = {
        "schemas": [dataclasses.asdict(r) for r in register_schemas(settings)],
        "topics_created": create_topics(settings),
        "tables": create_tables(settings),
        "migrations_applied": apply_migrations(settings.stores.postgres_dsn),
        "tenants_registered": seed_demo_tenants(settings.stores.postgres_dsn),
        "api_keys_dir": str(ensure_dev_keys(settings)),
    }
    if pyiceberg_home is not None:
        out["pyiceberg_config"] = str(write_pyiceberg_config(settings, pyiceberg_home))
    return out


@dataclasses.dataclass(frozen=True, slots=True)
class LakeSummary:
    """What landed in ``coherence.signals``."""

    rows: int
    per_tenant: dict[str, int]
    snapshots: int
    sample: list[dict[str, Any]]
    #: Rows of every other table of the namespace (scores, quarantine, audit).
    others: dict[str, int] = dataclasses.field(default_factory=dict)


def lake_summary(settings: Settings, sample: int = 5) -> LakeSummary:
    """Rows per tenant, snapshot count and a few rows of the signals table."""
    cat = catalog(settings)
    table = cat.load_table(f"{settings.lake.namespace}.{SIGNALS.name}")
    arrow = table.scan().to_arrow()
    per_tenant: dict[str, int] = {}
    for tenant in arrow.column("tenant_id").to_pylist():
        per_tenant[tenant] = per_tenant.get(tenant, 0) + 1
    rows = arrow.sort_by([("tenant_id", "ascending"), ("ts", "ascending")]).slice(0, sample)
    return LakeSummary(
        rows=arrow.num_rows,
        per_tenant=dict(sorted(per_tenant.items())),
        snapshots=len(table.metadata.snapshots),
        sample=rows.to_pylist(),
        others={
            t.name: _count(cat, f"{settings.lake.namespace}.{t.name}")
            for t in TABLES
            if t is not SIGNALS
        },
    )


def _count(cat: Catalog, identifier: str) -> int:
    if not cat.table_exists(identifier):
        return 0
    return int(cat.load_table(identifier).scan().count())
