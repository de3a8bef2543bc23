"""The coherence flow: Kafka → decode → validate → drift → dedupe → tenant-tag → redact → psi →
score.

Run it as ``python -m bytewax.run flows.coherence:flow`` (settings from ``IGFLOW_*``) or as
``igflow run``. Bytewax resolves ``flow`` through this module's ``__getattr__``, so importing the
module reads nothing and connects to nothing: the dataflow is built from one :class:`Settings`
at the entry point.

::

    kafka ─▶ decode ─▶ validate ─▶ by tenant ─▶ drift ─▶ dedupe ─▶ tag ─▶ redact ─▶ psi ─▶ score
               │          │                      │         │               │        │       │
               └─ errs ───┴──────── rejects ─────┼─ late ──┘               ▼        ▼       ▼
                              │                  │                     signals deconfliction scores
                              ▼                  ▼
                             DLQ       quarantine (rejects + drifted batches)

``redact`` (:mod:`operators.redact`) sits where the first store could see a signal's fields: after
dedupe (its key must be the raw one: a mask would make two signals one) and tenant-tag (it
stamps the manifest the rules extend), before psi (which lands matched selectors), score and
every sink. Records held before it (rejects, drifted batches) keep their exact bytes in the DLQ
and quarantine, to be released as they came.

Everything after ``validate`` is keyed by tenant, so each tenant's records keep their order
through the stateful steps. From ``by tenant`` to the sinks an item is a *run*, ``(tenant,
[record, ...])``: the records of one tenant from one engine batch, in order
(:mod:`operators.batching`), so Bytewax moves, keys and pickles a run where it did a record;
each step runs its record-level logic on the runs' records. The runs are flattened where
records leave them: the rare paths (late rejects, drifted batches, psi's rows: one by one to
the DLQ and the lake), the serving sinks (:func:`~sinks.serving.serve`), the lake's collect
(it gathers the runs' rows) and a replay's planned batches.

The lake tables batch with a collect step keyed by the tenant of each row's ledger lane (see
:mod:`sinks.iceberg`), so a row is batched on the worker that tagged it: a stateful step, so
rows batched but not yet committed are in the recovery snapshot and survive a crash together
with the source offsets and the stages' state.
A replay batches like the original's commits instead (``Edges.plans``, :mod:`sinks.lake_plan`).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any, TypeVar

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream
from bytewax.inputs import Source
from bytewax.operators import KeyedStream
from bytewax.outputs import Sink

from core import logs, tracing
from core.catalog import CatalogOnce
from core.cluster import Cluster
from core.collector import tune_for_flow
from core.contracts import signal_contracts
from core.errors import ConfigError, missing_dependency
from core.output_settings import OutputSettings, output_settings
from core.records import Decoded, ScoreChange, Tagged
from core.residency import ResidencyHolds, served_residency
from core.schemas import RegistrySchemas
from core.settings import Settings, StoreSettings
from core.sources import SourceRegistry, SourceRules
from core.switches import FirstHolds, Holds, SwitchHolds, SwitchKind
from core.tls import Brokers
from flows.held import held_positions
from operators.batching import RunCut, Runs, run_builder, runs_on, tenant_runs
from operators.canary import drop_canaries
from operators.collect import collect_batches, land_resumed
from operators.decode import SchemaLookup, SignalDecoder, decode
from operators.dedupe import dedupe
from operators.drift import Baseline, drift
from operators.drift_stats import baseline_bytes, parse_baseline
from operators.psi import Matcher, http_matcher_factory, psi_step
from operators.redact import Mac, RedactionPolicy, redact_step, tenant_mac
from operators.score import score
from operators.tenancy import TenancyPolicy, tenant_tag
from operators.validate import TenantDirectory, validate
from sinks.dlq import DeadLetterTarget, dlq_message, reject_lines
from sinks.group_offsets import GroupTarget
from sinks.iceberg import IcebergSink
from sinks.lake_plan import (
    CommitPlan,
    laid_out,
    lane_tenant,
    planned_logic,
    planned_sink,
    spreads,
)
from sinks.lake_tables import DECONFLICTION, QUARANTINE, SCORES, SIGNALS, TableDef
from sinks.serving import serve
from sources.epoch_phase import EpochPhase
from sources.kafka import KafkaTopicSource
from sources.pausable import PausableSource
from tenancy.keys import tenant_keys
from tenancy.registry import PostgresTenants
from tenancy.sealed_state import StateSeal
from tenancy.sealing import Sealer, sealer_of
from tenancy.sources import PostgresSources
from tenancy.switches import PostgresSwitches

# and `flow`, built on access
__all__ = [
    "Edges",
    "build",
    "commit_phase",
    "engine_epoch",
    "kafka_source",
    "lake_runs",
    "land",
    "run_epoch",
]

FLOW_ID = "coherence"
T = TypeVar("T")


def run_epoch(settings: Settings) -> timedelta:
    """The run's epoch interval: ``run.snapshot_seconds`` with a recovery store (an epoch ends
    with a snapshot), else ``run.epoch_seconds``. The source's idle partitions poll on its
    grid; Bytewax is given :func:`engine_epoch`."""
    if settings.run.recovery_dir:
        return timedelta(seconds=settings.run.snapshot_seconds)
    return timedelta(seconds=settings.run.epoch_seconds)


def engine_epoch(settings: Settings) -> timedelta:
    """The epoch interval Bytewax is given: :func:`run_epoch` a little shortened, so that the
    epochs of every worker end on the same grid (:mod:`sources.epoch_phase`)."""
    return EpochPhase(run_epoch(settings)).engine_interval


def kafka_source(settings: Settings) -> KafkaTopicSource:
    """The signal topic, from the beginning (or from the recovery snapshot on resume)."""
    return KafkaTopicSource(
        settings.kafka.connection(),
        settings.kafka.topic,
        bounded=settings.run.bounded,
        batch_size=settings.kafka.batch_size,
        epoch=run_epoch(settings),
    )


@dataclasses.dataclass(frozen=True)
class Edges:
    """What the flow talks to; ``None`` means "the real one from the settings" (tests swap them)."""

    source: Source[Any] | None = None
    lookup: SchemaLookup | None = None
    dlq: Sink[Any] | None = None
    #: False: the rejects get no DLQ message at all (a replay: they land in its quarantine
    #: table; building, sealing and logging a message per reject to drop it was ~4% of its CPU).
    #: A serving store's dead letters are not rejects: they still go to ``dlq`` or the topic.
    reject_messages: bool = True
    tenants: TenantDirectory | None = None
    policy: TenancyPolicy | None = None
    baseline: Baseline | None = None
    #: Builds the PSI matcher once per worker (tests: an in-process partner server).
    matcher: Callable[[], Matcher] | None = None
    #: Per lake table, the original commits to batch like (a replay); absent: ``collect``.
    plans: Mapping[str, CommitPlan] | None = None
    #: Which records the kill switches hold (a replay: the original's holds); absent: the
    #: switches in Postgres, re-read every ``switches.refresh_seconds``, then residency.
    holds: Holds | None = None
    #: The redaction rules (absent: ``redaction.rego`` of the policy folder) and the keyed hash
    #: (absent: the tenant key store's ``redaction`` keys, opened only when a rule hashes).
    redaction: RedactionPolicy | None = None
    mac: Mac | None = None
    #: The source registry (``sources.mode`` not ``off``); absent: Postgres's, re-read every
    #: ``sources.refresh_seconds``.
    sources: SourceRegistry | None = None
    #: Seals the sensitive fields at the sinks; absent: the tenant key store of the settings
    #: when ``seal.enabled``, else nothing is sealed.
    sealer: Sealer | None = None
    #: The lake's catalog, shared by the held positions and every lake table; absent: the
    #: settings' catalog, opened once (a replay passes the one it already has open).
    catalog: CatalogOnce | None = None
    #: How an engine batch of validated records is cut into tenant runs; absent: one run per
    #: tenant and batch (:func:`~operators.batching.tenant_runs`). Tests cut at random points.
    runs: RunCut[Decoded] | None = None


def _tenant(item: Decoded) -> str:
    return item.signal.tenant_id


def _lane_tenant(lane_of: Callable[[T], str]) -> Callable[[T], str]:
    """The key a lake table's rows are batched by: their lane's tenant (``""`` for none).

    The tenant-keyed steps before the lake are keyed by the same string, and Bytewax routes a
    key to the worker its hash names, so a row is batched on the worker that tagged it (the
    lane itself, ``<stage>:<tenant>``, hashed elsewhere: about half the rows crossed workers
    again, pickled between processes). A lane is a function of its tenant's key here (each
    lane has one key), so its rows still reach the sink in order through one worker."""

    def tenant_of(item: T) -> str:
        return lane_tenant(lane_of(item))

    return tenant_of


def land(
    flow_id: str,
    up: Runs[T],
    table: TableDef[T],
    settings: Settings,
    plan: CommitPlan | None = None,
    group: GroupTarget | None = None,
    bootstrap: Brokers | None = None,
    sealer: Sealer | None = None,
    seal: StateSeal | None = None,
    record: OutputSettings | None = None,
    catalog: CatalogOnce | None = None,
    phase: timedelta = timedelta(0),
) -> None:
    """Batch ``up`` per lane's tenant (:func:`_lane_tenant`) and append it to ``table``
    exactly once. ``up`` is runs keyed by the tenant of their rows' lane (:func:`lake_runs`
    makes them from records; the signals' and the scores' runs are keyed by it already); with
    ``group``,
    commit that consumer group's offsets after each append (monitoring only); with
    ``bootstrap``, bind the ledger to the input topics' ids there; with ``sealer``, seal the
    table's sensitive columns (:mod:`core.sealing`); with ``seal``, the records batched but not
    yet appended are sealed per tenant in the recovery snapshot (:mod:`tenancy.sealed_state`);
    with ``record``, each commit names the deciding settings its rows were computed with
    (:mod:`sinks.settings_record`); ``catalog``: the flow's catalog, shared by its tables
    (absent: the table's own); ``phase``: the shift of this process's commit grid
    (:func:`commit_phase`).

    With a ``plan`` (a replay), each append holds the rows of one of the original's commits
    instead, and the table is partitioned like the original's, so that the data files come out
    byte-identical (:mod:`sinks.lake_plan`).
    """
    table = laid_out(table, plan)
    sink = IcebergSink(
        settings.lake.catalog_name,
        settings.catalog_properties,
        settings.lake.namespace,
        table,
        commit_attempts=settings.lake.commit_attempts,
        commit_each=plan is not None,
        group=group,
        bootstrap=bootstrap,
        sealer=sealer,
        settings=record,
        catalog=catalog,
        workers=settings.run.workers,
        in_flight=settings.lake.in_flight,
        batch_rows=settings.lake.batch_max_rows,
        snapshots_kept=settings.lake.snapshots_kept,
        checkpoint_every=settings.lake.checkpoint_every,
        manifests_kept=settings.lake.manifests_kept,
    )
    if plan is None:
        key = _lane_tenant(table.lane)
        # Until session 13 the batches were keyed by the lane itself (`<stage>:<tenant>`),
        # which hashes to another worker than the tenant: that step stays, only to land what
        # an older recovery snapshot holds before this one starts (operators.collect).
        retired = land_resumed(f"{flow_id}_batch", up, sink.land_now, seal, table.lane)
        # Not op.collect: its timeout restarts on every item (an idle time), so a lane fed
        # steadily committed only at batch_max_rows (operators/collect.py).
        batches = collect_batches(
            f"{flow_id}_tenant_batch",
            op.merge(f"{flow_id}_after_retired", up, retired),
            timeout=timedelta(seconds=settings.lake.batch_max_seconds),
            max_size=settings.lake.batch_max_rows,
            seal=seal,
            key_of=key,
            handed=True,  # kept in the snapshot until the lake's writer thread commits it
            grid=True,  # every lane's batch closes at the same instants: one commit a tick
            phase=phase,
        )
    else:
        batches = planned_runs(f"{flow_id}_plan", up, table, plan, settings.lake.batch_max_rows)
        op.output(flow_id, batches, planned_sink(sink, table, plan))
        return
    op.output(flow_id, batches, sink)


def planned_runs(
    step_id: str, up: Runs[T], table: TableDef[T], plan: CommitPlan, max_rows: int
) -> KeyedStream[list[T]]:
    """:func:`~sinks.lake_plan.planned_batches` of ``up``'s runs, a run at a time: the same
    logic and state, fed the runs as they are (:class:`~operators.batching.RunLogic` flattens
    a call's runs in order for it) instead of one engine item per row. The per-row form paid
    ``flatten``, ``key_on``'s Python shim and the engine's keying and grouping once per row
    (~430,000 rows in the replay benchmark); this pays them once per run. On one worker, or
    for a table that does not :func:`~sinks.lake_plan.spreads`, every run is re-keyed to the
    table's one key; when the plan is spread, each run is cut by its rows' lane tenant (a run
    is one tenant's: one cut, unless a row's lane says otherwise). Each key's logic gets the
    rows of the per-row form in the same order, so it emits the same batches
    (``tests/unit/test_replay_plan.py``)."""
    by_tenant = plan.spread and spreads(table)
    if by_tenant:
        lane_of = table.lane

        def tenant(item: T) -> str:
            return lane_tenant(lane_of(item))

        def by_lane_tenant(batch: list[tuple[str, list[T]]]) -> list[tuple[str, list[T]]]:
            return [cut for _key, run in batch for cut in tenant_runs(run, tenant)]

        keyed = op.flat_map_batch(f"{step_id}_tenant_runs", up, by_lane_tenant)
    else:
        name = table.name

        def one(batch: list[tuple[str, list[T]]]) -> list[tuple[str, list[T]]]:
            return [(name, run) for _key, run in batch]

        keyed = op.flat_map_batch(f"{step_id}_one_runs", up, one)
    logic = planned_logic(plan, table, max_rows, by_tenant)
    return op.stateful_batch(step_id, keyed, run_builder(logic, runs_out=False))


def commit_phase(settings: Settings, cluster: Cluster | None) -> timedelta:
    """Where on the lake's commit grid (``lake.batch_max_seconds``) this process's batches
    close: process ``i`` of ``n`` at ``i / n`` of it, so that the processes of a cluster take
    turns to commit instead of racing for each table at the same instant (operators/collect.py).
    """
    if cluster is None or cluster.processes < 2:
        return timedelta(0)
    step = timedelta(seconds=settings.lake.batch_max_seconds)
    return step * (cluster.process_id or 0) / cluster.processes


def lake_runs(flow_id: str, up: Stream[T], table: TableDef[T]) -> Runs[T]:
    """``up``'s records as runs keyed by their lane's tenant, for :func:`land` (the rare
    paths' records: quarantine rows, psi's rows)."""
    return runs_on(f"{flow_id}_runs", up, _lane_tenant(table.lane))


#: The serving stores ``stores.sinks`` may name, in the order their steps are built, hence run
#: in a pass of the worker: the graph last, as the store whose full queue blocks the worker (a
#: put that waits holds up the steps after it in the pass, not those before).
SERVING = ("postgres", "redis", "graph")


def _serve(
    stores: StoreSettings,
    dead_letters: DeadLetterTarget,
    signals: Runs[Tagged],
    scores: Runs[ScoreChange],
    seal: StateSeal | None = None,
) -> None:
    """Write the serving stores named in ``stores.sinks``; what they cannot write goes to
    ``dead_letters``.

    Both streams are runs from steps keyed by tenant, so each tenant's items are on one worker
    and reach its store in order; :func:`~sinks.serving.serve` flattens the runs, each item
    keyed by its run's tenant, and each store's one writer thread writes them in that order:
    writes are serialized per tenant.
    """
    enabled = stores.enabled
    unknown = enabled - set(SERVING)
    if unknown:
        msg = f"stores.sinks: unknown store(s) {sorted(unknown)}; known: {', '.join(SERVING)}"
        raise ConfigError(msg)
    # Each store's module (and its client: redis-py, the Bolt driver, psycopg's pool) is
    # imported only when the store is enabled, at start-up: a lake-only flow pays none of them,
    # and an enabled store whose client is missing stops the flow before it reads a record.
    for name in SERVING:
        if name not in enabled:
            continue
        try:
            module = importlib.import_module(_SINKS[name][0])
        except ModuleNotFoundError as exc:
            raise missing_dependency(exc, f"stores.sinks names {name}") from exc
        items = scores if name == "postgres" else op.merge(f"{name}_items", signals, scores)
        sink = getattr(module, _SINKS[name][1])
        serve(name, items, sink(stores, dead_letters), seal)


#: Each serving store's sink: its module and class (imported when the store is enabled).
_SINKS = {
    "redis": ("sinks.redis", "RedisSink"),
    "graph": ("sinks.graph", "GraphSink"),
    "postgres": ("sinks.postgres", "PostgresSink"),
}


def _rejects_sink(
    settings: Settings, edges: Edges, cluster: Cluster | None, *, open_early: bool
) -> Sink[Any] | None:
    """Where the rejects' DLQ messages go (``None``: nowhere, a replay): ``edges.dlq``, else the
    DLQ topic's sink, its workers' producers opened now in the background with
    ``open_early`` (:meth:`~sinks.dlq.DeadLetterSink.start`)."""
    if not edges.reject_messages:
        return None
    if edges.dlq is not None:
        return edges.dlq
    sink = DeadLetterTarget.of(settings.kafka).sink(
        kept_in=f"{settings.lake.namespace}.{QUARANTINE.name}"
    )
    if open_early:
        sink.start((cluster or Cluster()).worker_indices(settings.run.workers))
    return sink


def build(
    settings: Settings,
    edges: Edges | None = None,
    cluster: Cluster | None = None,
    *,
    open_early: bool = False,
    **swap: Any,
) -> Dataflow:
    """The dataflow for ``settings``; ``edges`` (or keywords of the same names) swap its edges;
    ``cluster``: where this process sits in a cluster (absent: alone). ``open_early``: the
    flow is about to run in this process (``igflow run``), so the DLQ sink opens this
    process's workers' producers now, in the background, while the rest is built
    (:meth:`~sinks.dlq.DeadLetterSink.start`)."""
    edges = dataclasses.replace(edges or Edges(), **swap)
    phase = commit_phase(settings, cluster)
    # First: its producers open in the background while the rest is built.
    rejects_sink = _rejects_sink(settings, edges, cluster, open_early=open_early)
    tracing.configure(settings.tracing, "flow")  # before the steps: they hook in only if on
    reader = signal_contracts()[-1].parsed
    decoder = SignalDecoder(
        edges.lookup
        or RegistrySchemas(
            settings.kafka.schema_registry_url, ca_location=settings.kafka.ssl_ca_location
        ),
        reader,
    )
    tenants = edges.tenants or PostgresTenants(
        settings.stores.postgres_dsn, settings.validate.tenant_refresh_seconds
    )
    policy = edges.policy or TenancyPolicy.load(settings.policies_dir)
    redaction = edges.redaction or RedactionPolicy.load(settings.policies_dir)
    mac = edges.mac or tenant_mac(functools.partial(tenant_keys, settings))
    baseline = edges.baseline
    baseline_sha = ""
    if baseline is None and settings.drift.baseline_file:
        # One read: the bytes parsed are the bytes hashed (and named in every lake commit).
        baseline_file = baseline_bytes(settings.drift.baseline_file)
        baseline = parse_baseline(baseline_file, settings.drift.bins, settings.drift.baseline_file)
        baseline_sha = hashlib.sha256(baseline_file).hexdigest()
    # What every lake commit names: the settings and files its rows are computed with, so a
    # replay computes with them too (core/output_settings.py).
    record = output_settings(settings, policy.version, baseline_sha)
    drift_settings = settings.drift
    if settings.run.bounded:
        # A bounded run decides open batches at the end of its input; an idle flush on the wall
        # clock would make batch boundaries (and so verdicts) depend on timing.
        drift_settings = dataclasses.replace(drift_settings, idle_flush_seconds=0.0)
    psi_settings = settings.psi
    if settings.run.bounded:
        psi_settings = dataclasses.replace(psi_settings, idle_flush_seconds=0.0)

    # The source registry (igflow sources): checks and provenance stamps by each record's Kafka
    # timestamp, so a replay decides and stamps as the run did.
    registry: SourceRegistry | None = None
    if settings.sources.mode != "off":
        registry = edges.sources or PostgresSources(
            settings.stores.postgres_dsn, settings.sources.refresh_seconds
        )
    rules = (
        None
        if registry is None
        else SourceRules(registry, enforce=settings.sources.mode == "enforce")
    )
    # Residency: the one this namespace serves (ConfigError for a key space of another).
    served = served_residency(
        settings.residency.namespaces,
        settings.residency.key_prefixes,
        settings.lake.namespace,
        settings.stores.key_prefix,
    )
    # Kill switches (igflow switch): records of a switched-off source or tenant are held; the
    # real source stops reading while this flow is switched off.
    board = PostgresSwitches(settings.stores.postgres_dsn, settings.switches.refresh_seconds)
    # One catalog for the held positions and every lake table on every worker of the process.
    lake = edges.catalog or CatalogOnce.of(settings)
    holds = edges.holds
    if holds is None:  # a position held once stays held (flows/held.py), then the switches
        gates: list[Holds] = [held_positions(settings, lake), SwitchHolds(board)]
        if served is not None or registry is not None:
            gates.append(ResidencyHolds(served, policy, registry))
        holds = FirstHolds(*gates)
    source = edges.source or PausableSource(
        kafka_source(settings), functools.partial(board.is_off, SwitchKind.FLOW, FLOW_ID)
    )

    # Sensitive fields are sealed at the sinks (the steps, psi first, need them in the clear):
    # the quarantine's payloads, the matched selectors and the DLQ's originals (core.sealing);
    # and in the recovery snapshots, each tenant's records under its keys (tenancy.sealed_state).
    sealer = edges.sealer
    if sealer is None and settings.seal.enabled:
        sealer = sealer_of(settings)
    # Bytewax snapshots every epoch with or without a recovery store; without one the
    # snapshots go nowhere, so they are sealed only when kept (and the key store is not asked).
    seal = StateSeal(sealer) if sealer is not None and settings.run.recovery_dir else None

    flow = Dataflow(FLOW_ID)
    raw = op.input("kafka", flow, source)
    decoded = decode("decode", raw, decoder)
    checked = validate("validate", decoded.oks, tenants, settings.validate, holds, rules)
    by_tenant = runs_on("by_tenant", checked.oks, _tenant, edges.runs)
    drifted = drift(
        "drift",
        by_tenant,
        drift_settings,
        release_key=settings.quarantine.release_key,
        baseline=baseline,
        seal=seal,
    )
    unique = dedupe("dedupe", drifted.passed, settings.dedupe)
    tagged = tenant_tag("tenant_tag", unique.unique, policy, registry)
    tagged = redact_step("redact", tagged, redaction, mac, registry)
    deconflicted = psi_step(
        "psi",
        tagged,
        psi_settings,
        edges.matcher or http_matcher_factory(psi_settings),
        seal=seal,
    )
    # Canaries (igflow probe) land like any signal but never count in a score.
    scores = score("score", drop_canaries("canaries", deconflicted.passed), settings.score)

    rejects = op.merge("rejects", decoded.errs, checked.errs, unique.late)
    dead_letters = DeadLetterTarget.of(settings.kafka, sealer)
    if rejects_sink is not None:
        op.output(
            "dlq",
            op.map(
                "dlq_message",
                rejects,
                functools.partial(
                    dlq_message,
                    sealer=sealer,
                    lines=reject_lines(settings.run.reject_log_per_second),
                ),
            ),
            rejects_sink,
        )
    plans = edges.plans or {}
    # The group's offsets follow what the lake holds of the real input; a replay (its own
    # source) or a test's source commits none.
    # The same holds for binding the ledgers to the input topic's id.
    kafka = settings.kafka
    real = edges.source is None
    group = GroupTarget(kafka.connection(), kafka.group_id, kafka.topic) if real else None
    group = group if kafka.group_id else None
    ids = kafka.connection() if real else None
    # The serving stores before the lake: Bytewax's worker runs the steps of one pass in the
    # order they were built, so their items are handed over before the lake's steps do their
    # work in that pass (the serving stores' latency after the drift decision).
    _serve(settings.stores, dead_letters, tagged, scores, seal)
    land(
        "lake_signals",
        tagged,  # runs keyed by tenant: their lane's (signals:<tenant>)
        SIGNALS,
        settings,
        plans.get(SIGNALS.name),
        group,
        ids,
        seal=seal,
        record=record,
        catalog=lake,
        phase=phase,
    )
    land(
        "lake_scores",
        scores,  # runs keyed by tenant: their lane's (scores:<tenant>)
        SCORES,
        settings,
        plans.get(SCORES.name),
        group,
        ids,
        record=record,
        catalog=lake,
        phase=phase,
    )
    land(
        "lake_deconfliction",
        lake_runs("lake_deconfliction", deconflicted.results, DECONFLICTION),
        DECONFLICTION,
        settings,
        plans.get(DECONFLICTION.name),
        sealer=sealer,
        seal=seal,
        record=record,
        catalog=lake,
        phase=phase,
    )
    quarantine = op.merge("quarantine_rows", rejects, drifted.quarantined)
    land(
        "lake_quarantine",
        lake_runs("lake_quarantine", quarantine, QUARANTINE),
        QUARANTINE,
        settings,
        plans.get(QUARANTINE.name),
        group,
        ids,
        sealer,
        seal,
        record,
        catalog=lake,
        phase=phase,
    )
    return flow


def __getattr__(name: str) -> Dataflow:
    # `python -m bytewax.run flows.coherence:flow`: this is the entry point's edge.
    if name == "flow":
        settings = Settings.load()
        logs.configure(settings.run.log_level)
        flow = build(settings)
        # The collector as `igflow run` tunes it (core/collector.py: 14.3 → 10.4 CPU s on
        # 200,000 signals). Not pandas: Bytewax imported this module's sinks before this call,
        # and they made pyarrow import it (`igflow run` defers it, igflow/runner.py).
        tune_for_flow(settings.run.gc_oldest_threshold)
        return flow
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)
