"""Replay: re-run the coherence flow over an exact offset range into a scratch Iceberg namespace.

Determinism: the flow computes from event time and input bytes only, so the same offsets in give
the same rows out. A replay is a bounded, in-process run of :func:`flows.coherence.build` with

- the namespace changed to the scratch one (which must not exist yet, or hold no tables: the
  lake's ledger would otherwise skip offsets already committed there);
- the Kafka source bounded per partition by ``start`` (inclusive) and ``end`` (exclusive);
  partitions named in neither read nothing;
- the serving stores that ``stores.sinks`` enables written under scratch names derived from the
  namespace (:mod:`replay.scratch`: Redis keys ``replay:NS:tenant:<t>:…``, graph labels
  ``replay_NS_Tenant`` …, Postgres ``replay_NS.coherence_scores``), each of which must hold
  nothing yet; or none of them (``lake_only``);
- no DLQ message made for a reject (the quarantine table in the scratch namespace holds every
  reject with its reason; the DLQ topic is not written); a serving store's dead letters
  (``SINK_UNAVAILABLE``) go to a scratch topic ``<dlq_topic>.replay.NS``, never to the real DLQ;
- each lake table committed like the original's commits (:mod:`sinks.lake_plan`), read from the
  flow's own namespace, so that the data files come out byte-identical (``commits="own"``:
  batch afresh, as a run would);
- the deciding settings the original's commits of the range were computed with, not its own
  environment's (:mod:`replay.settings`: refused across a change of them;
  ``settings_from="current"`` is the operator's override, reported);
- no recovery store and no metrics server; one process, or a Bytewax cluster (``cluster``: each
  process runs this with its ``-i``; the scratch checks run in every process before it joins,
  and nothing is created until all have joined).

With no range, a replay covers everything the topic retains: from each partition's log start to
its high watermark when the replay begins (:func:`retained_offsets`, Kafka's ListOffsets).
Event-time ranges are resolved with ``offsets_for_times`` and each answer is checked against the
records themselves; a broker that answers wrongly is refused instead of guessed around.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import IO, Any

from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import Consumer, KafkaError, TopicPartition
from pyiceberg.catalog import Catalog

from core.catalog import CatalogOnce, catalog
from core.cluster import Cluster
from core.collector import tune_for_flow
from core.errors import ConfigError, IgflowError
from core.kafka_start import eof_config
from core.records import RawRecord
from core.sealing import is_sealed, is_sealed_text
from core.settings import KafkaSettings, Settings
from core.shutdown import StopGuard
from flows.coherence import build
from flows.execute import execute
from flows.held import held_positions
from replay.scratch import check_scratch, check_scratch_name, scratch_names, scratch_stores
from replay.settings import SettingsUsed, original_settings
from sinks.lake_plan import load_plans
from sinks.lake_tables import DECONFLICTION, QUARANTINE
from sources.kafka import KafkaTopicSource

__all__ = [
    "Progress",
    "ReplayReport",
    "json_progress",
    "parse_offsets",
    "replay",
    "resolve_times",
    "run_with_progress",
    "tty_progress",
]

log = logging.getLogger(__name__)


def parse_offsets(text: str) -> dict[int, int]:
    """``"0:100,1:0"`` -> ``{0: 100, 1: 0}``; :class:`ConfigError` on anything else.

    Each item is ``PARTITION:OFFSET`` with non-negative integers; a partition may appear once.
    Spaces around items are ignored; an empty text is an error.
    """
    out: dict[int, int] = {}
    items = [item.strip() for item in text.split(",")]
    if not text.strip():
        msg = "no offsets given: expected PARTITION:OFFSET[,PARTITION:OFFSET...]"
        raise ConfigError(msg)
    for item in items:
        part, sep, offset = item.partition(":")
        if not sep:
            msg = f"{item!r} is not PARTITION:OFFSET"
            raise ConfigError(msg)
        try:
            p, o = int(part), int(offset)
        except ValueError:
            msg = f"{item!r}: partition and offset must be integers"
            raise ConfigError(msg) from None
        if p < 0 or o < 0:
            msg = f"{item!r}: partition and offset must not be negative"
            raise ConfigError(msg)
        if p in out:
            msg = f"partition {p} is given twice"
            raise ConfigError(msg)
        out[p] = o
    return out


def _record_time(consumer: Consumer, topic: str, partition: int, offset: int) -> int | None:
    """The timestamp (ms) of the record at ``offset``, ``None`` when there is none."""
    consumer.assign([TopicPartition(topic, partition, offset)])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        error = msg.error()
        if error is not None and error.code() == KafkaError._PARTITION_EOF:
            return None
        if error is None and msg.offset() == offset:
            _kind, stamp = msg.timestamp()
            return int(stamp)
        if error is None and (msg.offset() or 0) > offset:
            return None  # the offset is gone (compacted or a control record)
    return None


def resolve_times(
    kafka: KafkaSettings, since: datetime, until: datetime | None, timeout_s: float = 10.0
) -> tuple[dict[int, int], dict[int, int]]:
    """Start and end offsets of every partition for the Kafka record times ``[since, until)``.

    Record times are the Kafka timestamps (the producer's CreateTime), not the signals' ``ts``.
    Each bound is Kafka's: the first offset whose timestamp is at or after the time. With
    ``until`` ``None`` no end is given (a bounded run reads to the end present at start).
    Every answer of ``offsets_for_times`` is checked against the records around it (the record
    at the answer is at or after the time, the one before is earlier); a broker that fails the
    check is refused with :class:`IgflowError`. A time after the last record gives no offset;
    such a partition has no end (for ``until``) or reads nothing (for ``since``).
    """
    topic = kafka.topic
    consumer = Consumer(
        eof_config(
            {**kafka.client_config(), "group.id": "igflow-replay", "enable.auto.commit": False}
        )
    )
    try:
        meta = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
        if meta is None or meta.error is not None:
            msg = f"topic {topic} is not available"
            raise IgflowError(msg)
        partitions = sorted(meta.partitions)

        def lookup(when: datetime) -> dict[int, int]:
            ms = _ms(when)
            answers = consumer.offsets_for_times(
                [TopicPartition(topic, p, ms) for p in partitions], timeout=timeout_s
            )
            out: dict[int, int] = {}
            for tp in answers:
                if tp.error is not None:
                    msg = f"offsets_for_times failed on partition {tp.partition}: {tp.error}"
                    raise IgflowError(msg)
                if tp.offset >= 0:
                    _check(consumer, topic, tp.partition, tp.offset, ms)
                    out[tp.partition] = tp.offset
            return out

        start = lookup(since)
        end = lookup(until) if until is not None else {}
        for p in partitions:
            if p not in start:
                # No record at or after `since`: nothing to read in this partition.
                start[p] = 0
                end[p] = 0
        return start, end
    finally:
        consumer.close()


def _ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


def _check(consumer: Consumer, topic: str, partition: int, offset: int, ms: int) -> None:
    at = _record_time(consumer, topic, partition, offset)
    before = _record_time(consumer, topic, partition, offset - 1) if offset > 0 else None
    if (at is not None and at < ms) or (before is not None and before >= ms):
        msg = (
            f"the broker answers offsets_for_times wrongly (partition {partition}: offset "
            f"{offset} for time {ms} ms, but that record is at {at} ms and the one before at "
            f"{before} ms)"
        )
        raise IgflowError(msg)


def retained_offsets(
    kafka: KafkaSettings, timeout_s: float = 10.0
) -> tuple[dict[int, int], dict[int, int]]:
    """Start and end offsets of everything the topic retains now: each partition's log start
    offset and high watermark (the broker's ListOffsets answers)."""
    topic = kafka.topic
    consumer = Consumer({**kafka.client_config(), "group.id": "igflow-replay"})
    try:
        meta = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
        if meta is None or meta.error is not None:
            msg = f"topic {topic} is not available"
            raise IgflowError(msg)
        start: dict[int, int] = {}
        end: dict[int, int] = {}
        for p in sorted(meta.partitions):
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, p), timeout=timeout_s, cached=False
            )
            start[p], end[p] = low, high
        return start, end
    finally:
        consumer.close()


@dataclasses.dataclass(frozen=True, slots=True)
class Progress:
    """A replay's progress: records read, offsets covered, of ``total`` (``None``: unknown)."""

    rows: int
    offsets: int
    total: int | None
    seconds: float

    @property
    def rate(self) -> float:
        """Records read per second so far."""
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    @property
    def eta_seconds(self) -> float | None:
        """Seconds left at the offset rate so far; ``None`` when it cannot be told yet."""
        if self.total is None or self.offsets <= 0 or self.seconds <= 0:
            return None
        return max(0.0, (self.total - self.offsets) * self.seconds / self.offsets)


@dataclasses.dataclass(frozen=True, slots=True)
class ReplayReport:
    """What a replay read (in this process) and where it landed."""

    namespace: str
    start: dict[int, int]
    end: dict[int, int]
    rows: int
    seconds: float
    #: The serving stores written and their scratch names (``{}``: the lake only).
    stores: dict[str, str] = dataclasses.field(default_factory=dict)
    #: Per lake table, the original commits it was batched like (absent: batched afresh).
    planned: dict[str, int] = dataclasses.field(default_factory=dict)
    #: Which deciding settings it computed with (:mod:`replay.settings`).
    settings: SettingsUsed = dataclasses.field(default_factory=lambda: SettingsUsed("unrecorded"))


class _Tally:
    """Records and offsets read so far, shared by the source's partitions (thread-safe)."""

    def __init__(
        self, start: Mapping[int, int], end: Mapping[int, int], *, local_only: bool = False
    ) -> None:
        """``local_only``: count only the partitions this process reads (:meth:`local`), as
        one process of a cluster does; otherwise every partition named."""
        self._lock = threading.Lock()
        self._start = dict(start)
        self._end = dict(end)
        self._next: dict[int, int] = dict(start)
        self._local: set[int] | None = set() if local_only else None
        self.rows = 0

    @property
    def total(self) -> int | None:
        """Offsets to cover; ``None`` when a partition has no end (or none is known yet)."""
        with self._lock:
            parts = set(self._start) | set(self._end)
            if self._local is not None:
                parts &= self._local
                if not parts:
                    return None
            if not parts <= set(self._end):
                return None
            return sum(max(0, self._end[p] - self._start.get(p, 0)) for p in parts)

    def local(self, partition: int) -> None:
        """This process reads ``partition``."""
        with self._lock:
            if self._local is not None:
                self._local.add(partition)

    def read(self, partition: int, batch: list[RawRecord]) -> None:
        with self._lock:
            self.rows += len(batch)
            if batch:
                self._next[partition] = batch[-1].offset + 1

    def done(self, partition: int) -> None:
        with self._lock:
            if partition in self._end:
                self._next[partition] = max(self._next.get(partition, 0), self._end[partition])

    def offsets(self) -> int:
        with self._lock:
            covered = 0
            for p, nxt in self._next.items():
                stop = self._end.get(p, nxt)
                covered += max(0, min(nxt, stop) - self._start.get(p, 0))
            return covered


class _CountingPartition(StatefulSourcePartition[RawRecord, Any]):
    def __init__(
        self, inner: StatefulSourcePartition[RawRecord, Any], partition: int, tally: _Tally
    ) -> None:
        self._inner = inner
        self._partition = partition
        self._tally = tally

    def next_batch(self) -> list[RawRecord]:
        try:
            batch = list(self._inner.next_batch())
        except StopIteration:
            self._tally.done(self._partition)
            raise
        self._tally.read(self._partition, batch)
        return batch

    def next_awake(self) -> datetime | None:
        return self._inner.next_awake()

    def snapshot(self) -> Any:
        return self._inner.snapshot()

    def close(self) -> None:
        self._inner.close()


class _Counting(FixedPartitionedSource[RawRecord, Any]):
    """The Kafka source, counting what each partition emits into a :class:`_Tally`."""

    def __init__(self, inner: KafkaTopicSource, tally: _Tally) -> None:
        self._inner = inner
        self._tally = tally

    def list_parts(self) -> list[str]:
        return self._inner.list_parts()

    def build_part(
        self, step_id: str, for_part: str, resume_state: Any | None
    ) -> _CountingPartition:
        inner = self._inner.build_part(step_id, for_part, resume_state)
        self._tally.local(int(for_part))
        return _CountingPartition(inner, int(for_part), self._tally)


def original_sealing(settings: Settings, cat: Catalog | None = None) -> bool | None:
    """Whether the flow's namespace landed its sensitive fields sealed (:mod:`core.sealing`):
    its first quarantine payload of a tenant, else its first matched selector, tells;
    ``None`` when it holds neither (sealing then changes no byte of the replay)."""
    from pyiceberg.exceptions import NoSuchTableError

    cat = cat or catalog(settings)
    ns = settings.lake.namespace
    try:
        rows = (
            cat.load_table((ns, QUARANTINE.name))
            .scan(
                row_filter="tenant_id IS NOT NULL AND payload IS NOT NULL",
                selected_fields=("payload",),
                limit=1,
            )
            .to_arrow()
        )
        if rows.num_rows:
            return is_sealed(rows["payload"][0].as_py())
    except NoSuchTableError:
        pass
    try:
        windows = cat.load_table((ns, DECONFLICTION.name)).scan(selected_fields=("matched",))
    except NoSuchTableError:
        return None
    for batch in windows.to_arrow_batch_reader():
        for matched in batch.column("matched").to_pylist():
            if matched:
                return is_sealed_text(matched[0])
    return None


def replay(
    settings: Settings,
    into: str,
    start: dict[int, int],
    end: dict[int, int],
    progress: Callable[[Progress], None] | None = None,
    *,
    lake_only: bool = False,
    commits: str = "original",
    cluster: Cluster | None = None,
    interval: float = 0.25,
    settings_from: str = "original",
) -> ReplayReport:
    """Run the flow over ``[start, end)`` per partition into namespace ``into``; blocks until done.

    Partitions named in neither mapping read nothing; one named only in ``start`` reads to the
    end present at start; one named only in ``end`` starts at offset 0. The serving stores that
    ``stores.sinks`` enables are written under scratch names (:func:`scratch_stores`) unless
    ``lake_only``. ``commits``: ``original`` batches each lake table like the commits of the
    flow's namespace (``lake.namespace``), ``own`` as a run would. ``settings_from``:
    ``original`` computes with the deciding settings recorded by the original's commits of the
    range, ``current`` with ``settings`` (:mod:`replay.settings`). ``progress`` is called every
    ``interval`` seconds from a helper thread while the flow runs, and once at the end.
    Raises :class:`ConfigError` for the flow's own namespace, a namespace that has tables, or
    scratch stores that hold data; :class:`~core.output_settings.ReplaySettingsError` (one) when
    the range cannot be replayed with the original's settings.
    """
    cluster = cluster or Cluster()
    if commits not in ("original", "own"):
        msg = f"commits must be 'original' or 'own', not {commits!r}"
        raise ConfigError(msg)
    if settings_from not in ("original", "current"):
        msg = f"settings_from must be 'original' or 'current', not {settings_from!r}"
        raise ConfigError(msg)
    if not lake_only and settings.stores.enabled:
        check_scratch_name(into)  # before the catalog is opened: nothing read for a bad name
    cat = catalog(settings)  # one catalog for the settings, the checks, the plans and the sealing
    settings, used = original_settings(settings, cat, start, end, use=settings_from)
    if lake_only or not settings.stores.enabled:
        scratch = settings.with_changes("stores", sinks="")
    else:
        scratch = scratch_stores(settings, into)
    check_scratch(settings, into, scratch.stores, cat)
    plans = (
        load_plans(cat, settings.lake.namespace, settings.kafka.topic)
        if commits == "original"
        else {}
    )
    if cluster.processes * settings.run.workers > 1:
        # Several workers: the tables that allow it are batched where their rows are.
        plans = {name: plan.spread_over_workers() for name, plan in plans.items()}
    scratch = scratch.with_changes("lake", namespace=into).with_changes(
        "run", bounded=True, recovery_dir="", metrics_port=0
    )
    named = set(start) | set(end)
    ends = dict(end)
    starts = {p: start.get(p, 0) for p in named}
    # One source lists the partitions, here and for Bytewax (a second source listed them
    # here with a client and metadata request of its own); listing them also asks for their
    # watermarks in the background while the flow is built.
    source = KafkaTopicSource(
        scratch.kafka.connection(),
        scratch.kafka.topic,
        bounded=True,
        batch_size=scratch.kafka.batch_size,
        start_offsets=dict(starts),
        end_offsets=dict(ends),
        named_only=True,
    )
    for p in (int(part) for part in source.list_parts()):
        if p not in named:
            starts[p] = 0
            ends[p] = 0
    tally = _Tally(
        {p: starts[p] for p in named},
        {p: e for p, e in ends.items() if p in named},
        local_only=cluster.processes > 1,
    )
    # The original's holds, by position, whatever the switches say now; and its sealing,
    # whatever seal.enabled says now (a lake landed before sealing was on replays unsealed).
    lake = CatalogOnce.of(settings, opened=cat)  # the flow's tables too: one catalog in all
    holds = held_positions(settings, lake)
    # (With a settings record, seal.enabled is the record's already.)
    recorded = used.source == "original"
    sealed = original_sealing(settings, cat) if commits == "original" and not recorded else None
    if sealed is not None and sealed != scratch.seal.enabled:
        log.info("replaying with seal.enabled=%s, as the original landed", sealed)
        scratch = scratch.with_changes("seal", enabled=sealed)
    # No DLQ messages: the rejects land in the scratch quarantine table with their reasons.
    flow = build(
        scratch,
        source=_Counting(source, tally),
        reject_messages=False,
        plans=plans,
        holds=holds,
        catalog=lake,
    )

    last = run_with_progress(
        flow,
        scratch,
        lambda seconds: Progress(tally.rows, tally.offsets(), tally.total, seconds),
        progress,
        interval,
        cluster,
    )
    return ReplayReport(
        into,
        starts,
        ends,
        last.rows,
        last.seconds,
        scratch_names(scratch.stores),
        {name: len(plan) for name, plan in plans.items()},
        used,
    )


#: The epoch of a flow run without a recovery store: longer than any replay.
NO_RECOVERY_EPOCH = timedelta(days=1)


def _epoch(settings: Settings) -> timedelta:
    """The flow's epoch: ``run.epoch_seconds`` with a recovery store; without one (a replay, a
    derivation) :data:`NO_RECOVERY_EPOCH`. An epoch only makes Bytewax call every stateful step's
    ``snapshot()`` for each key and drop the result when nothing is recovered (dedupe copies its
    keys, the plan its pending rows: 1.9% of a replay's main thread in py-spy, none after);
    items are processed as they come either way. End to end the gain is within the shared
    machine's noise (docs/performance.md)."""
    if settings.run.recovery_dir:
        return timedelta(seconds=settings.run.epoch_seconds)
    return NO_RECOVERY_EPOCH


def run_with_progress(
    flow: Dataflow,
    settings: Settings,
    measure: Callable[[float], Progress],
    progress: Callable[[Progress], None] | None,
    interval: float,
    cluster: Cluster | None = None,
) -> Progress:
    """Run ``flow`` to its end in this process (one of ``cluster``'s), reporting
    ``measure(seconds so far)`` to ``progress`` every ``interval`` seconds and once at the end;
    returns the last measure."""
    cluster = cluster or Cluster()
    began = time.monotonic()
    stop = threading.Event()

    def tick() -> None:
        while not stop.wait(interval):
            if progress is not None:
                progress(measure(time.monotonic() - began))

    ticker = threading.Thread(target=tick, name="replay-progress", daemon=True)
    tune_for_flow(settings.run.gc_oldest_threshold)
    ticker.start()
    try:
        # A signal or a lost peer ends the process within run.stop_seconds (core.shutdown).
        with StopGuard(settings.run.stop_seconds, cluster.process_id, cluster.addresses):
            cluster.await_listeners()  # timely's connect retry waits a second (core.cluster)
            execute(  # no recovery store: the steps' snapshots are dropped
                flow,
                workers_per_process=settings.run.workers,
                process_id=cluster.process_id,
                addresses=list(cluster.addresses) or None,
                epoch_interval=_epoch(settings),
            )
    finally:
        stop.set()
        ticker.join()
    last = measure(time.monotonic() - began)
    if progress is not None:
        progress(last)
    return last


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    whole = int(seconds)
    return f"{whole // 60:02d}:{whole % 60:02d}"


def tty_progress(stream: IO[str] | None = None, width: int = 30) -> Callable[[Progress], None]:
    """A progress callback that rewrites one bar line (rows, rate, ETA) on ``stream``."""
    out = stream or sys.stderr

    def show(p: Progress) -> None:
        if p.total:
            filled = min(width, width * p.offsets // p.total)
            bar = "#" * filled + "." * (width - filled)
            pct = f"{100 * p.offsets / p.total:3.0f}%"
        else:
            bar, pct = "?" * width, "  ?%"
        out.write(
            f"\rreplay [{bar}] {pct} {p.rows:,} rows  {p.rate:,.0f}/s  ETA {_clock(p.eta_seconds)}"
        )
        out.flush()

    return show


def json_progress(stream: IO[str] | None = None) -> Callable[[Progress], None]:
    """A progress callback that writes one JSON object a line on ``stream``."""
    out = stream or sys.stderr

    def show(p: Progress) -> None:
        eta = p.eta_seconds
        line: dict[str, Any] = {
            "op": "replay.progress",
            "at": datetime.now(UTC).isoformat(),
            "rows": p.rows,
            "offsets": p.offsets,
            "total": p.total,
            "per_second": round(p.rate),
            "eta_seconds": None if eta is None else round(eta, 1),
        }
        out.write(json.dumps(line) + "\n")
        out.flush()

    return show
