"""Re-derive the ``scores`` table from landed ``signals`` when Kafka no longer has the records.

``igflow replay`` re-reads Kafka; once the topic's retention has passed, the signals are only in
the lake. Every signal that reached the flow's ``score`` step landed in ``signals`` (drift
quarantine, dedupe and the DLQ drop a record before both; the psi step passes every signal on
unchanged), so the scores follow from the ``signals`` rows alone. :func:`derive_scores` is a
bounded, in-process Bytewax run::

    signals rows of SOURCE ─▶ Tagged ─▶ by tenant ─▶ score ─▶ INTO.scores (ledger lanes, once)

- One source partition per tenant, read from one pinned snapshot of ``SOURCE.signals``. Each
  tenant's rows come in ``(kafka_partition, kafka_offset)`` order, rebuilt as
  :class:`~core.records.Tagged` (signal, provenance, policy tags, ``policy_version`` and
  ``provenance_id`` from the row; ``selectors`` and the Kafka timestamp are not landed and are
  left empty: the score does not read them).
- The scores land through the flow's own lake path (tenant runs, ``collect``,
  :class:`~sinks.iceberg.IcebergSink`) into namespace ``INTO``, which must be new or empty (the
  ledger would skip offsets already committed there) and differ from ``SOURCE``.

Order assumption. The score step saw a tenant's signals in arrival order. The producer keys
records by tenant, so a tenant's records are in one Kafka partition and arrival order is offset
order: the re-derived rows then equal the original ``scores`` rows exactly (score, status,
``seq``, provenance...). A tenant whose records span partitions (another producer, a changed
partition count) was scored in an interleaving that the lake does not record; its re-derived
*sequence* of changes can differ, but its **final score is the same**: the final window holds
exactly the signals with ``ts`` in ``(W - window, W]`` (``W`` the tenant's newest ``ts``)
whatever the order, and the score is its exact weighted mean. Each tenant's rows are held in
memory (as Arrow) while they are sorted and emitted.

Ticks closed by the drift step's horizon (``score.close_on = "horizon"``, the default). The
horizon a flow's score step read (:attr:`~core.records.Decoded.horizon`) is not landed: it
follows from the drift step's whole input (quarantined records and duplicates included), which
the ``signals`` table does not hold. A derivation computes with ``close_on = "signal"`` (and its
commits record that) and warns: each tenant's per-record changes are the same (a derived row and
an original row of the same ``seq`` are equal) and so is its last change, but the original
published some changes earlier, so the set of ``seq`` published can differ. An exact copy of
such a range comes from ``igflow replay`` of Kafka, which runs the drift step again.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import bytewax.operators as op
import pyarrow as pa
import pyarrow.compute as pc
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from pyiceberg.catalog import Catalog
from pyiceberg.expressions import EqualTo, Reference
from pyiceberg.expressions.literals import literal

from core.catalog import catalog
from core.errors import ConfigError
from core.records import Decoded, PolicyTags, Provenance, Signal, Tagged
from core.settings import Settings
from flows.coherence import land
from operators.batching import runs_on
from operators.score import score
from replay.run import Progress, run_with_progress
from replay.settings import SettingsUsed, original_settings, own_record
from sinks.lake_tables import SCORES, SIGNALS

__all__ = ["DeriveReport", "derive_scores", "signals_source"]

log = logging.getLogger(__name__)

FLOW_ID = "derive_scores"


@dataclasses.dataclass(frozen=True, slots=True)
class DeriveReport:
    """What a derivation read and where it landed."""

    source: str
    namespace: str
    #: The ``signals`` snapshot read (``None``: the table had no snapshot, nothing was read).
    snapshot_id: int | None
    tenants: int
    rows: int
    seconds: float
    #: Which score settings it computed with (:mod:`replay.settings`).
    settings: SettingsUsed = dataclasses.field(default_factory=lambda: SettingsUsed("unrecorded"))


def _tagged(row: dict[str, Any]) -> Tagged:
    signal = Signal(
        tenant_id=row["tenant_id"],
        signal_id=row["signal_id"],
        type=row["type"],
        value=row["value"],
        weight=row["weight"],
        source=row["source"],
        ts=row["ts"],
    )
    provenance = Provenance(
        topic=row["kafka_topic"],
        kafka_partition=row["kafka_partition"],
        kafka_offset=row["kafka_offset"],
        schema_version=row["schema_version"],
        input_hash=row["input_hash"],
    )
    tags = PolicyTags(
        purpose=row["purpose"],
        retention=row["retention"],
        license=row["license"],
        residency=row["residency"],
    )
    return Tagged(
        decoded=Decoded(signal=signal, provenance=provenance),
        tags=tags,
        policy_version=row["policy_version"],
        provenance_id=row["provenance_id"],
    )


class _Counter:
    """Rows emitted so far, shared by the source's partitions (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.rows = 0

    def add(self, n: int) -> None:
        with self._lock:
            self.rows += n


class _TenantPartition(StatefulSourcePartition[Tagged, int]):
    """One tenant's rows in ``(kafka_partition, kafka_offset)`` order; the state is rows emitted."""

    def __init__(
        self,
        read: Callable[[], pa.Table],
        resume: int,
        batch_size: int,
        counter: _Counter,
    ) -> None:
        self._read = read
        self._next = resume
        self._batch_size = batch_size
        self._counter = counter
        self._batches: Iterator[pa.RecordBatch] | None = None

    def next_batch(self) -> list[Tagged]:
        if self._batches is None:
            rows = self._read().sort_by(
                [("kafka_partition", "ascending"), ("kafka_offset", "ascending")]
            )
            self._batches = iter(rows.slice(self._next).to_batches(self._batch_size))
        batch = next(self._batches)  # StopIteration: this tenant is done
        items = [_tagged(row) for row in batch.to_pylist()]
        self._next += len(items)
        self._counter.add(len(items))
        return items

    def snapshot(self) -> int:
        return self._next


class _SignalsSource(FixedPartitionedSource[Tagged, int]):
    """The ``signals`` rows of one table snapshot, one partition per tenant."""

    def __init__(
        self,
        catalog: Catalog,
        identifier: str,
        snapshot_id: int | None,
        tenants: list[str],
        batch_size: int,
        counter: _Counter,
    ) -> None:
        self._catalog = catalog
        self._identifier = identifier
        self._snapshot_id = snapshot_id
        self._tenants = tenants
        self._batch_size = batch_size
        self._counter = counter

    def list_parts(self) -> list[str]:
        return list(self._tenants)

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _TenantPartition:
        def read() -> pa.Table:
            table = self._catalog.load_table(self._identifier)
            scan = table.scan(
                row_filter=EqualTo(term=Reference("tenant_id"), value=literal(for_part)),
                snapshot_id=self._snapshot_id,
            )
            return scan.to_arrow()

        return _TenantPartition(read, resume_state or 0, self._batch_size, self._counter)


def signals_source(
    catalog: Catalog, namespace: str, batch_size: int = 1000
) -> tuple[FixedPartitionedSource[Tagged, int], int | None, int, Callable[[], int]]:
    """A source over ``namespace.signals`` at its current snapshot, one partition per tenant.

    Returns the source, the snapshot id read, the number of rows in it, and a function telling
    the rows emitted so far. :class:`ConfigError` when the table does not exist.
    """
    identifier = f"{namespace}.{SIGNALS.name}"
    if not catalog.table_exists(identifier):
        msg = f"{identifier} does not exist: nothing to derive from"
        raise ConfigError(msg)
    table = catalog.load_table(identifier)
    current = table.current_snapshot()
    snapshot_id = current.snapshot_id if current is not None else None
    tenants: list[str] = []
    total = 0
    if snapshot_id is not None:
        column = table.scan(selected_fields=("tenant_id",), snapshot_id=snapshot_id).to_arrow()
        total = column.num_rows
        tenants = sorted(pc.unique(column["tenant_id"]).to_pylist())
    counter = _Counter()
    source = _SignalsSource(catalog, identifier, snapshot_id, tenants, batch_size, counter)
    return source, snapshot_id, total, lambda: counter.rows


def _check_target(settings: Settings, catalog: Catalog, source: str, into: str) -> None:
    if into in (source, settings.lake.namespace):
        msg = f"--into {into} is the source or the flow's own namespace; derive needs a scratch one"
        raise ConfigError(msg)
    if catalog.namespace_exists(into) and catalog.list_tables(into):
        msg = f"namespace {into} already has tables; derive needs a new (or empty) namespace"
        raise ConfigError(msg)


def derive_scores(
    settings: Settings,
    source_namespace: str,
    into: str,
    progress: Callable[[Progress], None] | None = None,
    *,
    interval: float = 0.25,
    settings_from: str = "original",
) -> DeriveReport:
    """Re-derive ``scores`` from ``source_namespace.signals`` into namespace ``into``; blocks.

    Uses the score settings the source's commits recorded (``settings_from="original"``; refused
    when they differ between its commits), or ``settings.score`` (``current``, or a source
    landed before settings were recorded: then the window, thresholds and tick must be the
    original run's for the rows to match); the lake settings for the catalog and batching.
    ``progress`` is called every ``interval`` seconds while the flow runs and once at the end
    (``offsets`` counts rows read, ``total`` the rows of the snapshot). :class:`ConfigError`
    when ``into`` is ``source_namespace`` or the flow's namespace, already has tables, or the
    source has no ``signals`` table.
    """

    cat = catalog(settings)
    _check_target(settings, cat, source_namespace, into)
    settings, used = original_settings(
        settings, cat, use=settings_from, namespace=source_namespace, sections=("score",)
    )
    if settings.score.close_on != "signal":
        # The drift step's horizons are not landed: computed as what they are, per signal.
        log.warning(
            "score.close_on is %r, but signals rows carry no drift horizon: deriving with "
            "ticks closed by signals only; changes of the same seq equal the original's, each "
            "tenant's last change too, but which changes were published can differ",
            settings.score.close_on,
        )
        settings = settings.with_changes("score", close_on="signal")
    target = (
        settings.with_changes("lake", namespace=into)
        .with_changes("stores", sinks="")
        .with_changes("run", bounded=True, recovery_dir="", metrics_port=0)
    )
    source, snapshot_id, total, read = signals_source(
        cat, source_namespace, target.kafka.batch_size
    )

    def _tenant(item: Tagged) -> str:
        return item.signal.tenant_id

    flow = Dataflow(FLOW_ID)
    tagged = op.input("signals", flow, source)
    by_tenant = runs_on("by_tenant", tagged, _tenant)
    changes = score("score", by_tenant, target.score)
    # Its commits name the settings they were computed with, as a run's do. The score's runs
    # are keyed by tenant: the lake's collect key (the lane scores:<tenant>'s tenant).
    record = own_record(target)
    land("lake_scores", changes, SCORES, target, record=record)

    def measure(seconds: float) -> Progress:
        rows = read()
        return Progress(rows, rows, total, seconds)

    last = run_with_progress(flow, target, measure, progress, interval)
    return DeriveReport(
        source_namespace,
        into,
        snapshot_id,
        len(source.list_parts()),
        last.rows,
        last.seconds,
        used,
    )
