"""The coherence flow: Kafka → decode → Iceberg, rejects → DLQ.

Run it as ``python -m bytewax.run flows.coherence:flow`` (settings from ``IGFLOW_*``) or as
``igflow run``. Bytewax resolves ``flow`` through this module's ``__getattr__``, so importing the
module reads nothing and connects to nothing: the dataflow is built from one :class:`Settings`
at the entry point.

Batching for the lake is Bytewax's ``collect`` keyed by Kafka partition (by size and time): it is
a stateful step, so rows that are batched but not yet committed are in the recovery snapshot
and survive a crash together with the source offsets.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.outputs import Sink

from igflow.contracts import signal_contracts
from igflow.records import Decoded
from igflow.schemas import RegistrySchemas
from igflow.settings import Settings
from operators.decode import SchemaLookup, SignalDecoder, decode
from sinks.dlq import dlq_message, dlq_sink
from sinks.iceberg import IcebergSink
from sinks.lake_tables import SIGNALS
from sources.kafka import KafkaTopicSource

__all__ = ["build", "kafka_source"]  # and `flow`, built on access

FLOW_ID = "coherence"


def kafka_source(settings: Settings) -> KafkaTopicSource:
    """The signal topic, from the beginning (or from the recovery snapshot on resume)."""
    return KafkaTopicSource(
        settings.kafka.bootstrap,
        settings.kafka.topic,
        bounded=settings.run.bounded,
        batch_size=settings.kafka.batch_size,
    )


def _partition_key(item: Decoded) -> str:
    return f"{item.provenance.topic}/{item.provenance.kafka_partition}"


def build(
    settings: Settings,
    *,
    source: Source[Any] | None = None,
    lookup: SchemaLookup | None = None,
    lake: Sink[Any] | None = None,
    dlq: Sink[Any] | None = None,
) -> Dataflow:
    """The dataflow for ``settings``; the keyword arguments replace its edges (for tests)."""
    reader = signal_contracts()[-1].parsed
    decoder = SignalDecoder(lookup or RegistrySchemas(settings.kafka.schema_registry_url), reader)
    flow = Dataflow(FLOW_ID)
    raw = op.input("kafka", flow, source or kafka_source(settings))
    decoded = decode("decode", raw, decoder)
    op.output(
        "dlq",
        op.map("dlq_message", decoded.errs, dlq_message),
        dlq or dlq_sink(settings.kafka.bootstrap, settings.kafka.dlq_topic),
    )
    keyed = op.key_on("by_partition", decoded.oks, _partition_key)
    batches = op.collect(
        "lake_batch",
        keyed,
        timeout=timedelta(seconds=settings.lake.batch_max_seconds),
        max_size=settings.lake.batch_max_rows,
    )
    lake_sink = lake or IcebergSink(
        settings.lake.catalog_name,
        settings.catalog_properties,
        settings.lake.namespace,
        SIGNALS,
        commit_attempts=settings.lake.commit_attempts,
    )
    op.output("lake", batches, lake_sink)
    return flow


def __getattr__(name: str) -> Dataflow:
    # `python -m bytewax.run flows.coherence:flow`: this is the entry point's edge.
    if name == "flow":
        from igflow import logs

        settings = Settings.load()
        logs.configure(settings.run.log_level)
        return build(settings)
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)
