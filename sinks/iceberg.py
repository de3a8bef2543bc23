"""Iceberg sink with an exactly-once effect over Bytewax's at-least-once delivery.

How: the table's snapshots record the highest Kafka offset landed so far for every (topic,
partition, lane): the *ledger*. Each append stores in its snapshot summary the lanes it raised
(``igflow.offsets.delta``) and, every few commits, a checkpoint file with the whole ledger
(:mod:`sinks.ledger_format`: a summary's size does not grow with the number of tenants). Before
appending, a writer reads the ledger of the table's current snapshot and drops every item at or
below it. After a crash, Bytewax resumes the source from its last snapshot, which may be behind
what landed; the replayed items are dropped here, so each record lands once.

Each append also stores ``igflow.digest``: an order-independent digest of the rows it appended
per (tenant, partition), so ``igflow verify --from-history`` can check history without a scan
(:mod:`core.digest`); and ``igflow.settings``, the hash of the settings its rows were computed
with, so a replay computes with them (:mod:`sinks.settings_record`).

Lanes: a high-water mark is only sound if the items of one ledger key reach the sink in offset
order. The keyed stages (drift, dedupe, score) keep the order of each *tenant's* records but
interleave tenants differently from the Kafka partition, and different streams (validate rejects,
drift quarantine) reach one table by different paths. So each table names a lane per item (the
tenant, or the stage and tenant), and the ledger keeps one mark per (topic, partition, lane).

Row order: each append sorts its rows by Kafka coordinates (topic, partition, offset, then lane),
so a commit's data files depend only on which rows it holds, not on the order in which Bytewax
delivered them; a replay that commits the same rows together writes byte-identical files
(:mod:`sinks.lake_plan`). Filtering and ordering run on Arrow columns (:mod:`sinks.lake_batch`).

Concurrency: several workers or processes append to one table. Iceberg commits are optimistic;
a writer that loses the race (``CommitFailedException``) refreshes the table, re-reads the ledger
(now including the winner's offsets), filters again and retries with jittered backoff
(:mod:`core.retry`). A commit lands only on the snapshot its ledger was read at, so its delta
is exactly what it raised and no writer's offsets are lost. Within one run a Kafka partition is
read by one worker and its items reach the sink in offset order, which is what makes a
per-partition high-water mark sufficient.

A lost race costs a commit, not a whole append: writers of one table own disjoint lanes (a
cluster routes each tenant to one process), so the retry nearly always selects the very rows it
selected before. It then reuses what is a pure function of those rows (:class:`_Kept`): the
digest, the spilled delta and, through :class:`sinks.lake_write.Reuse`, the data files written
for the lost commit; only the ledger read, the checkpoint, the content marks, the manifests and
the commit are done again. Rows that differ (the winner landed some of ours: a replay racing a
flow) are written to new files as before; the lost attempt's files stay unreferenced.

History: every snapshot kept makes a commit dearer (pyiceberg rewrites the whole metadata), so
each checkpoint also writes a history file holding the commits before it
(:mod:`sinks.ledger_history`), and after a commit the appender expires the snapshots neither the
ledger nor that chain needs once the table keeps more than ``snapshots_kept``
(:meth:`IcebergAppender.expire`). Each append also adds a manifest that every later commit lists,
so once the current snapshot lists more than ``manifests_kept`` the appender rewrites them into
few in a commit of its own (:mod:`sinks.lake_manifests`, :meth:`IcebergAppender.compact`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any, Generic, TypeVar

import numpy as np
import pyarrow as pa
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import CommitFailedException, NoSuchNamespaceError, NoSuchTableError
from pyiceberg.table import Table

from core import metrics, tracing
from core.catalog import CatalogOnce
from core.digest import DIGEST_KEY, digest_arrow, dump_summary
from core.errors import RetryableSinkError
from core.handed import Handed
from core.output_settings import OutputSettings
from core.retry import RetriesExhausted, RetryPolicy, retrying
from core.tls import Brokers
from sinks import lake_write
from sinks.group_offsets import GroupOffsets, GroupTarget, group_offsets
from sinks.lake_batch import LakeBatch
from sinks.lake_group import IN_FLIGHT, GroupCommit
from sinks.lake_manifests import CompactResult, compact_manifests
from sinks.lake_retention import ExpiryResult, expire_snapshots
from sinks.lake_tables import TableDef
from sinks.ledger_content import (
    MARKS_KEY,
    ContentCheck,
    KafkaRecordReader,
    dump_marks,
    merge_marks,
    recorded_marks,
)
from sinks.ledger_format import (
    CHECKPOINT_EVERY,
    CHECKPOINT_KEY,
    DELTA_KEY,
    LEDGER_KEY,
    Ledger,
    LedgerState,
    dump_ledger,
    parse_ledger,
    read_ledger,
    spill,
    write_checkpoint,
)
from sinks.ledger_history import HISTORY_KEY, write_history
from sinks.settings_record import SETTINGS_KEY, write_settings
from sinks.topic_identity import TOPIC_IDS_KEY, TopicIds, check_topic_ids, recorded_topic_ids
from tenancy.sealing import Sealer

__all__ = [
    "LEDGER_KEY",
    "AppendResult",
    "IcebergAppender",
    "IcebergSink",
    "Ledger",
    "ensure_table",
    "ledger",
    "parse_ledger",
]

T = TypeVar("T")
log = logging.getLogger(__name__)


def ledger(table: Table) -> Ledger:
    """The committed offsets of ``table`` at its current snapshot (:mod:`sinks.ledger_format`).

    Snapshots written by other tools (compaction, an analyst's fix-up) carry no ledger; the walk
    back over the current snapshot's ancestors skips them.
    """
    return dict(read_ledger(table).ledger)


#: pyiceberg's own commit retry re-applies the *same* snapshot summary on top of the winner's
#: commit, which would roll the winner's offsets out of the ledger. Our tables turn it off; the
#: appender retries itself, re-reading the ledger each time.
_TABLE_PROPERTIES = {"commit.retry.num-retries": "0"}


#: Lost commit races are retried after 50 ms, doubling up to 2 s, each wait jittered between half
#: and one and a half times that; ``commit_attempts`` sets the attempts.
_COMMIT_RETRY = RetryPolicy(attempts=8, base_seconds=0.05, cap_seconds=2.0, jitter="around")


def _lost_race(exc: BaseException) -> bool:
    return isinstance(exc, CommitFailedException)


def ensure_table(catalog: Catalog, namespace: str, table: TableDef[Any]) -> Table:
    """Create the namespace and table if missing (safe when several writers race).

    A table that exists already gets the properties the ledger relies on. Workers of one flow
    start together, so each step tolerates losing the race to another writer: pyiceberg's SQL
    catalog reports a namespace created concurrently as a raw database error, not as "exists".

    An existing table is loaded first: pyiceberg's ``create_table_if_not_exists`` tries to
    create it and loads it only once the catalog refuses the row, so every start of every
    worker checked the namespace, wrote a new metadata file that no table ever names (an orphan
    in the warehouse, per table and worker) and had the database reject a duplicate key:
    ~50-90 ms of wall and ~17-27 ms of CPU for the four tables on the local stack, against
    ~1-2 ms for the loads.
    """
    try:
        created = catalog.load_table((namespace, table.name))
    except (NoSuchTableError, NoSuchNamespaceError):
        created = _create_table(catalog, namespace, table)
    _add_missing_columns(created, table)
    for _attempt in range(5):
        missing = {k: v for k, v in _TABLE_PROPERTIES.items() if created.properties.get(k) != v}
        if not missing:
            break
        try:
            with created.transaction() as tx:
                tx.set_properties(missing)
        except CommitFailedException:
            created.refresh()
    return created


def _create_table(catalog: Catalog, namespace: str, table: TableDef[Any]) -> Table:
    """The namespace and the table created, or loaded if another writer created them first."""
    try:
        catalog.create_namespace_if_not_exists(namespace)
    except Exception:
        if not catalog.namespace_exists(namespace):
            raise
    return catalog.create_table_if_not_exists(
        (namespace, table.name),
        schema=table.schema,
        partition_spec=table.partition_spec,
        properties=_TABLE_PROPERTIES,
    )


def _add_missing_columns(created: Table, table: TableDef[Any]) -> None:
    """Evolve a table written by an older release: add the columns it lacks (never drop any).

    Added columns are optional, as Iceberg requires (older data files have no value for them);
    new rows still always carry them. Field ids in :mod:`sinks.lake_tables` only grow at the end.
    """
    for _attempt in range(5):
        have = {f.name for f in created.schema().fields}
        missing = [f for f in table.schema.fields if f.name not in have]
        if not missing:
            return
        try:
            with created.update_schema() as update:
                for field in missing:
                    update.add_column(field.name, field.field_type, doc=field.doc, required=False)
        except CommitFailedException:
            created.refresh()


@dataclasses.dataclass(slots=True)
class _Kept:
    """What one append's last attempt derived from the rows it selected alone, for its next
    attempt (after a lost race) that selects the same rows: the rows (``batch.rows`` of that
    order), the summary entries of the digest and the delta (inline or spilled: a file named by
    its content) and whether the delta spilled; and the data files (``files``)."""

    order: pa.Array | None = None
    rows: pa.Table | None = None
    at: np.ndarray | None = None
    entries: dict[str, str] = dataclasses.field(default_factory=dict)
    spilled: bool = False
    files: lake_write.Reuse = dataclasses.field(default_factory=lake_write.Reuse)

    def same(self, order: pa.Array, rows: pa.Table) -> bool:
        """Whether ``order`` selects what the kept attempt selected, into equal rows (the same
        columns, sealed alike: a table built per attempt is compared value by value)."""
        return (
            self.order is not None
            and self.rows is not None
            and self.order.equals(order)
            and (self.rows is rows or self.rows.equals(rows, check_metadata=True))
        )


@dataclasses.dataclass(frozen=True, slots=True)
class AppendResult:
    """What one :meth:`IcebergAppender.append` did."""

    appended: int
    skipped: int
    attempts: int
    seconds: float
    snapshot_id: int | None
    #: Rows appended per tenant.
    per_tenant: Mapping[str, int] = dataclasses.field(default_factory=dict)
    #: The ledger the append committed (empty when it appended nothing).
    ledger: Mapping[tuple[str, int, str], int] = dataclasses.field(default_factory=dict)
    #: Per tenant, the oldest Kafka timestamp (ms) of the items given, appended or not.
    oldest_ms: Mapping[str, int] = dataclasses.field(default_factory=dict)


class IcebergAppender(Generic[T]):
    """Appends items to one table exactly once, keyed by their Kafka provenance."""

    def __init__(
        self,
        table: Table,
        table_def: TableDef[T],
        *,
        attempts: int = 8,
        flow: str = "coherence",
        topic_ids: TopicIds | None = None,
        content: ContentCheck | None = None,
        checkpoint_every: int = CHECKPOINT_EVERY,
        sealer: Sealer | None = None,
        settings: OutputSettings | None = None,
        snapshots_kept: int = 0,
        manifests_kept: int = 0,
    ) -> None:
        """``topic_ids``: bind the ledger to the input topics' identities
        (:mod:`sinks.topic_identity`); ``content``: to the records at its marks
        (:mod:`sinks.ledger_content`); ``None`` leaves them unchecked (replays, tests).
        ``checkpoint_every``: commits between ledger checkpoints (:mod:`sinks.ledger_format`).
        ``sealer``: seal the table's sensitive columns (:mod:`core.sealing`); the key store
        unavailable fails the append (nothing sensitive lands in the clear). ``settings``: the
        deciding settings the rows were computed with, named in every commit
        (:mod:`sinks.settings_record`; ``None``: none, as in tests of the lake alone).
        ``snapshots_kept``: after a commit, when the table keeps more snapshots than this, expire
        those the ledger and the history chain do not need (:meth:`expire`; 0: never).
        ``manifests_kept``: after a commit, when the current snapshot lists more data manifests
        than this, rewrite them into few (:meth:`compact`; 0: never)."""
        self._snapshots_kept = snapshots_kept
        self._manifests_kept = manifests_kept
        self._settings = settings
        #: The record's SHA-256 once its file is written (once per appender).
        self._settings_sha: str | None = None
        self._sealer = sealer
        self._checkpoint_every = max(1, checkpoint_every)
        #: The ledger at the last snapshot this appender read or wrote: a re-read walks back to
        #: it at most (only the deltas committed since).
        self._state: LedgerState | None = None
        self._topic_ids = topic_ids
        self._content = content
        self._table = table
        self._def = table_def
        self._attempts = attempts
        self._flow = flow

    @property
    def table(self) -> Table:
        """The Iceberg table written to."""
        return self._table

    def append(self, items: Sequence[T]) -> AppendResult:
        """Land the items not yet committed, in one snapshot; retry lost commit races."""
        start = time.perf_counter()
        batch = LakeBatch(self._def, items, self._sealer)  # columns once, whatever the attempts
        current: dict[str, str] = {}
        if self._topic_ids is not None:
            current = {topic: self._topic_ids(topic) for topic in batch.topics}

        def lost_race(attempt: int, exc: Exception, _wait: float | None) -> None:
            metrics.LAKE_COMMIT_RETRIES.labels(self._def.name).inc()
            log.info(
                "lost a commit race on %s (attempt %d): %s",
                self._def.name,
                attempt,
                exc,
                extra={"op": "lake.append", "table": self._def.name},
            )

        kept = _Kept()  # across this append's attempts only

        def attempt_once(attempt: int) -> AppendResult:
            try:
                return self._attempt(batch, current, attempt, start, kept)
            except FileNotFoundError as exc:
                self._lost_if_moved_on(exc)
                raise

        try:
            result = retrying(
                attempt_once,
                dataclasses.replace(_COMMIT_RETRY, attempts=self._attempts),
                transient=_lost_race,
                on_failure=lost_race,
            )
        except RetriesExhausted as gave_up:
            msg = f"{self._def.name}: gave up after {self._attempts} lost commit races"
            raise RetryableSinkError(msg) from gave_up.last
        if result.snapshot_id is not None:
            self.expire()
            self.compact()
        return result

    def compact(self) -> CompactResult | None:
        """When the current snapshot lists more than ``manifests_kept`` data manifests, rewrite
        them into few in a ``replace`` commit (:func:`compact_manifests`: no data change, and
        every reader of the lineage skips it). One attempt, as :meth:`expire`: a lost commit
        race waits for the next commit; a failure is logged, never raised. ``None``: nothing to
        do, or it failed."""
        if not self._manifests_kept:
            return None
        try:
            result = compact_manifests(self._table, self._manifests_kept)
        except Exception as exc:  # a compaction never stops the flow
            lost = isinstance(exc, CommitFailedException)
            self._upkeep_failed("manifest compaction", "lake.compact_failed", exc, lost=lost)
            return None
        if result is not None:
            log.info(
                "rewrote the %d manifests of %s into %d (%d entries)",
                result.before,
                self._def.name,
                result.after,
                result.entries,
                extra={"op": "lake.compact", "table": self._def.name},
            )
        return result

    def _upkeep_failed(self, what: str, op: str, exc: BaseException, *, lost: bool) -> None:
        """Log a compaction's or an expiry's failure: at INFO for a lost commit race (the next
        commit tries again), else at WARNING; the flow goes on either way."""
        log.log(
            logging.INFO if lost else logging.WARNING,
            "%s on %s %s (tried again after the next commit): %s",
            what,
            self._def.name,
            "lost a commit race" if lost else "failed",
            exc,
            extra={"op": op, "table": self._def.name},
        )

    def expire(self) -> ExpiryResult | None:
        """When the table keeps more than ``snapshots_kept`` snapshots, expire those older than
        what the ledger's walk and the history chain need (:func:`expire_snapshots`: none while
        no history file holds the lineage's older commits, a lake of the format before; it also
        deletes the files only they referenced), all at once: the next one when the table keeps
        more than ``snapshots_kept`` again. One attempt: a lost commit race waits for the next
        commit; a failure is logged, never raised (the flow goes on, its
        commits a little dearer). ``None``: nothing to do, or it failed."""
        if not self._snapshots_kept or len(self._table.metadata.snapshots) <= self._snapshots_kept:
            return None
        try:
            result = expire_snapshots(self._table, None, attempts=1, history=True)
        except Exception as exc:  # an expiry never stops the flow
            lost = isinstance(exc.__cause__, CommitFailedException)
            self._upkeep_failed("snapshot expiry", "lake.expire_failed", exc, lost=lost)
            return None
        log.info(
            "expired %d snapshots of %s (%d kept, %d files deleted)",
            len(result.expired),
            self._def.name,
            result.kept,
            result.files_deleted,
            extra={"op": "lake.expire", "table": self._def.name},
        )
        return result

    def _lost_if_moved_on(self, exc: FileNotFoundError) -> None:
        """Raise ``CommitFailedException`` (a lost race, retried from the new snapshot) when a
        file of the table an attempt read is gone because the table has moved on; return
        (the caller re-raises ``exc``) when the table is where the attempt left it.

        Another writer (the other processes of a cluster, ``igflow retention``, a compactor) may
        commit and expire the snapshot an attempt refreshed to, deleting its manifest list,
        while the attempt writes its data files; pyiceberg then reads the list to build the
        commit and raises ``FileNotFoundError``."""
        loaded = self._table.metadata_location
        self._table.refresh()
        if self._table.metadata_location != loaded:
            msg = (
                f"{self._def.name}: a file of the snapshot the attempt started from is gone"
                f" and the table has moved on (another writer's commit and expiry): {exc}"
            )
            raise CommitFailedException(msg) from exc

    def _attempt(
        self,
        batch: LakeBatch[T],
        current: Mapping[str, str],
        attempt: int,
        start: float,
        kept: _Kept,
    ) -> AppendResult:
        """One try at the append: re-read the ledger, keep what it lacks, commit that (with
        what ``kept`` holds of an earlier attempt that selected the same rows)."""
        self._table.refresh()
        ids = check_topic_ids(self._def.name, recorded_topic_ids(self._table), current)
        state = read_ledger(self._table, self._state)
        self._state = state
        chosen = batch.select(state.ledger)
        merged = chosen.merged
        marks = recorded_marks(self._table) if self._content is not None else {}
        if self._content is not None:
            # Before skipping anything: items at or below a mark are what a lost log
            # hands out again. Once per (topic, partition) and process: one Kafka read.
            self._content(self._def.name, marks, chosen.seen)
        appended = len(chosen.order)
        skipped = len(batch) - appended
        oldest = batch.oldest_ms()
        if not appended:
            return AppendResult(
                0, skipped, attempt, time.perf_counter() - start, None, oldest_ms=oldest
            )
        # The batch's columns and where the appended rows are in them: taken once per partition
        # by the write, not once here and again per partition.
        rows, at = batch.rows(chosen.order)
        properties = {"igflow.flow": self._flow, "igflow.rows": str(appended)}
        if kept.same(chosen.order, rows):
            # An earlier attempt lost the race with these very rows: its delta, digest and
            # data files are the ones this attempt would write.
            assert kept.rows is not None
            rows, at, spilled = kept.rows, kept.at, kept.spilled
            properties.update(kept.entries)
        else:
            entries: dict[str, str] = {}
            # Only the lanes this commit raised: bounded by its rows, not by the tenants; a long
            # one goes to a file (with a checkpoint, so that reading the ledger never needs it).
            spilled = spill(self._table, entries, DELTA_KEY, dump_ledger(chosen.raised))
            # The content digest of exactly these rows, for `igflow verify --from-history`: it
            # does not depend on their order, so the batch's columns as they are when every
            # row lands.
            chosen_rows = rows if at is None or len(at) == rows.num_rows else rows.take(at)
            digest = dump_summary(digest_arrow(self._def.name, chosen_rows))
            spill(self._table, entries, DIGEST_KEY, digest)
            properties.update(entries)
            kept.order, kept.rows, kept.at, kept.entries, kept.spilled = (
                chosen.order,
                rows,
                at,
                entries,
                spilled,
            )
            kept.files = lake_write.Reuse()
        if ids:
            properties[TOPIC_IDS_KEY] = json.dumps(ids, sort_keys=True)
        if self._settings is not None:
            if self._settings_sha is None:
                self._settings_sha = write_settings(self._table, self._settings)
            properties[SETTINGS_KEY] = self._settings_sha
        if self._content is not None:
            properties[MARKS_KEY] = dump_marks(merge_marks(marks, chosen.landed))
        depth = state.depth + 1
        if depth >= self._checkpoint_every or spilled:
            # The whole ledger, in a file beside the metadata: bounds the next reader's walk.
            # A lost race leaves the file unreferenced (named by its hash: harmless).
            properties[CHECKPOINT_KEY] = write_checkpoint(self._table, merged)
            # The commits since the previous history file, in one more (sinks.ledger_history):
            # the snapshots before this one may then expire without losing the history.
            history = write_history(self._table)
            if history is not None:
                properties[HISTORY_KEY] = history
            depth = 0
        # Table.append's files, without its per-partition filters (sinks.lake_write).
        # CommitFailedException: retried, with these data files kept in ``kept.files``.
        lake_write.append(self._table, rows, properties, at, kept.files)
        snapshot = self._table.current_snapshot()
        if snapshot is not None:
            self._state = LedgerState(snapshot.snapshot_id, merged, depth)
        return AppendResult(
            appended,
            skipped,
            attempt,
            time.perf_counter() - start,
            snapshot.snapshot_id if snapshot else None,
            chosen.per_tenant,
            merged,
            oldest,
        )


#: How long the end of input waits for the group's last offsets (monitoring only: a commit
#: that takes longer is not worth holding the flow's end for).
_GROUP_FLUSH_SECONDS = 30.0


class _IcebergPartition(StatelessSinkPartition[tuple[str, list[T]]]):
    def __init__(
        self,
        appender: IcebergAppender[T],
        table_def: TableDef[T],
        *,
        commit_each: bool,
        together: GroupCommit[T],
        group: GroupOffsets | None = None,
    ) -> None:
        self._appender = appender
        self._def = table_def
        self._commit_each = commit_each
        self._group = group
        self._together = together

    def write_batch(self, items: list[tuple[str, list[T]]]) -> None:
        if self._commit_each:
            # Each its own append (a planned commit), in order: the table's writer does not
            # merge them (sinks.lake_group, merge=False).
            for _key, group in items:
                if group:
                    self._together.submit(group, self._append)
            return
        # Queued for the table's writer thread (sinks.lake_group); each handed batch is
        # acknowledged to the collect that keeps it until its rows are committed.
        rows = [item for _key, group in items for item in group]
        acks = [group.ack for _key, group in items if isinstance(group, Handed)]
        if rows:
            self._together.submit(rows, self._append, acks)
        else:
            for ack in acks:
                ack()

    def write_now(self, items: list[T]) -> None:
        """Append ``items`` on this thread, returning once they are committed."""
        self._append(items)

    def close(self) -> None:
        # The end of input: the flow ends only once what it handed the writer is committed
        # (or fails with what the append raised), and the group's offsets after it.
        self._together.close()
        if self._group is not None:
            self._group.flush(_GROUP_FLUSH_SECONDS)

    def _append(self, batch: list[T]) -> None:
        if not batch:
            return
        traced_from = time.time_ns() if tracing.enabled() else 0
        result = self._appender.append(batch)
        if traced_from:
            tracing.write_spans(
                f"lake.{self._def.name}",
                batch,
                traced_from,
                attributes={"igflow.lake.attempts": result.attempts},
            )
        if self._group is not None and result.appended:
            self._group.landed(result.ledger)
        name = self._def.name
        metrics.LAKE_BATCH_ROWS.labels(name).observe(result.appended)
        metrics.COMMIT_SECONDS.labels(name).observe(result.seconds)
        if result.skipped:
            metrics.LAKE_SKIPPED.labels(name).inc(result.skipped)
        for tenant, count in result.per_tenant.items():
            metrics.EVENTS_OUT.labels(metrics.tenant_label(tenant), name).inc(count)
        if result.appended:
            # Wall clock in a metric only, never in landed data: each tenant's oldest record's wait.
            now = time.time()
            for tenant, stamp in result.oldest_ms.items():
                metrics.PIPELINE_LATENCY.labels(name, metrics.tenant_label(tenant)).observe(
                    max(0.0, now - stamp / 1000)
                )
        log.info(
            "appended %d rows to %s (%d already committed, attempt %d, %.0f ms)",
            result.appended,
            name,
            result.skipped,
            result.attempts,
            result.seconds * 1000,
            extra={
                "op": "lake.append",
                "table": name,
                "rows": result.appended,
                "rows_per_tenant": dict(result.per_tenant),
                "latency_ms": round(result.seconds * 1000, 1),
            },
        )


class IcebergSink(DynamicSink[tuple[str, list[T]]]):
    """Bytewax sink: each upstream item is ``(key, [values])``, a batch from ``op.collect``.

    The workers share the catalog given as ``catalog`` (a flow's sinks share one: see
    :class:`~core.catalog.CatalogOnce`), or the sink opens one for all of them; each worker
    loads its own table. Batches arriving in one ``write_batch`` call are queued for the
    table's writer thread, which commits them as one snapshot together with what else the
    process's workers queued meanwhile (:mod:`sinks.lake_group`); the worker goes on, and each
    :class:`~core.handed.Handed` batch is acknowledged once committed. With ``commit_each`` (a
    replay's planned commits, :mod:`sinks.lake_plan`) each batch is its own snapshot, appended
    by the same writer thread in the order handed while the worker goes on (a replay has no
    recovery store; its end of input waits for every commit).
    """

    def __init__(
        self,
        catalog_name: str,
        catalog_properties: Mapping[str, str],
        namespace: str,
        table_def: TableDef[T],
        *,
        commit_attempts: int = 8,
        commit_each: bool = False,
        group: GroupTarget | None = None,
        bootstrap: Brokers | None = None,
        sealer: Sealer | None = None,
        settings: OutputSettings | None = None,
        catalog: CatalogOnce | None = None,
        workers: int = 1,
        in_flight: int = IN_FLIGHT,
        batch_rows: int = 1,
        snapshots_kept: int = 0,
        checkpoint_every: int = CHECKPOINT_EVERY,
        manifests_kept: int = 0,
    ) -> None:
        """``workers``: the process's workers, whose batches an append waits for
        (:mod:`sinks.lake_group`); ``in_flight``: the batches of ``batch_rows`` rows the
        table's writer thread may hold before a worker waits. ``group``: commit that
        consumer group's offsets after each append, for monitoring
        (:mod:`sinks.group_offsets`). ``bootstrap``: bind the ledger to the input topics' ids
        there (:mod:`sinks.topic_identity`) and to the records at its marks
        (:mod:`sinks.ledger_content`). ``sealer``: seal the sensitive columns. ``settings``: the
        deciding settings, named in every commit (:mod:`sinks.settings_record`). ``catalog``:
        the catalog to share (``catalog_name`` and ``catalog_properties`` are then its own).
        ``snapshots_kept``, ``checkpoint_every``, ``manifests_kept``: the appender's
        (:class:`IcebergAppender`)."""
        self._snapshots_kept = snapshots_kept
        self._manifests_kept = manifests_kept
        self._checkpoint_every = checkpoint_every
        self._settings = settings
        self._catalog = catalog or CatalogOnce(catalog_name, dict(catalog_properties))
        self._sealer = sealer
        self._group = group
        self._bootstrap = bootstrap
        self._commit_each = commit_each
        self._namespace = namespace
        self._def = table_def
        self._attempts = commit_attempts
        #: The process's workers' appends off their threads, grouped (sinks.lake_group); a
        #: replay's planned commits one append each, in the order handed.
        self._together: GroupCommit[T] = GroupCommit(
            workers,
            in_flight=in_flight,
            batch_rows=batch_rows,
            name=f"{namespace}.{table_def.name}",
            merge=not commit_each,
        )

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _IcebergPartition[T]:
        # Opened once for the process's workers (and it makes pyiceberg parse .pyiceberg.yaml
        # once, not ~4x per append: core.catalog.parse_config_once).
        table = ensure_table(self._catalog.get(), self._namespace, self._def)
        topic_ids = content = None
        if self._bootstrap is not None:
            topic_ids = TopicIds(self._bootstrap)
            content = ContentCheck(KafkaRecordReader(self._bootstrap))
        appender = IcebergAppender(
            table,
            self._def,
            attempts=self._attempts,
            topic_ids=topic_ids,
            content=content,
            sealer=self._sealer,
            settings=self._settings,
            snapshots_kept=self._snapshots_kept,
            checkpoint_every=self._checkpoint_every,
            manifests_kept=self._manifests_kept,
        )
        group = group_offsets(self._group) if self._group is not None else None
        return _IcebergPartition(
            appender, self._def, commit_each=self._commit_each, together=self._together, group=group
        )

    def land_now(self, items: list[T]) -> None:
        """Append ``items`` now, exactly once, as a worker's partition of this sink would (a
        retired batching step's resumed batch: :func:`operators.collect.land_resumed`)."""
        self.build("land_now", 0, 1).write_now(items)
