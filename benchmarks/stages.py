"""Stage benchmark: cost per stage (µs per event) and end-to-end events/s with every stage on,
beside the walking-skeleton flow (Kafka → decode → Iceberg) in the same run.

    .venv/bin/python benchmarks/stages.py --signals 200000     # the local stack must be up
    .venv/bin/python benchmarks/stages.py --stages-only        # part 1 only, no stack needed
    .venv/bin/python benchmarks/stages.py --signals 100000 --tracing   # tracing's cost

1. Per stage: the engine-independent logic of each step (decode, validate, drift, dedupe,
   tenant-tag, redact, score) timed over the same records in one process, each step fed the
   output of the one before; CPU µs per event it handled (garbage collector off: ``_clock``).
   ``redact`` runs the shipped policy (no tenant has rules: the default); ``redact+rules``
   times the same records again with every tenant hashing ``signal_id`` and ``source`` and
   masking ``type`` (its keyed hash under a fixed in-process key per tenant: the key store's
   cached lookup is not in it), not fed on. The ``[batch]`` rows time the batch entry points
   the flow runs (``SignalDecoder.decode_many``, ``check_batch``, ``TenantDrift.push_batch``,
   ``dedupe_batch``, ``tag_batch``, ``TickScore.add`` per tenant) over the same records in
   chunks of ``--batch`` records (split by tenant for the keyed steps, as the engine hands them
   over), fresh state; decode, tenant-tag and score check that they give what the per-record
   reference gave. ``all stages[batch]`` is the total with them in place of their reference.
2. End to end, on the local stack: N signals (10 tenants, 5% duplicates, 2% invalid; a tenant's
   signals ``--step-ms`` apart in event time, 1,000 by default) produced to a fresh topic, then
   run bounded with one worker in this process, into fresh namespaces:
   (a) the skeleton flow (decode, then the decoded rows to Iceberg) and (b) the full flow
   (``flows.coherence.build``, landing signals, scores and quarantine). Wall time includes the
   catalog connection and every Iceberg commit.
Both parts count the score changes published (part 2: the rows of ``scores``), which
``score.tick_seconds`` (``IGFLOW_SCORE_TICK_SECONDS``; 0: every change) decides.
With ``--tracing``, (b) runs ``--tracing-rounds`` times with tracing off and as many with tracing
on at ``tracing.sample_ratio`` (or ``--sample-ratio``), exporting to a real OTLP/HTTP receiver in
this process (:mod:`tests.otlp_receiver`), alternately; the best of each is compared, in events/s
and in the CPU seconds of this process (steadier than wall time on a shared machine). Part 1
then also times the decode step's function, where the per-record sampling draw is, off and on.
Prints tables and the ratio; writes ``benchmarks/results/stages.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import gc
import hashlib
import json
import logging
import resource
import sys
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.run import cli_main

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bench_topics import demo_workload, fresh_topics  # noqa: E402
from core import tracing  # noqa: E402
from core.catalog import catalog  # noqa: E402
from core.contracts import signal_contracts  # noqa: E402
from core.envelope import FieldCipher  # noqa: E402
from core.records import Decoded, RawRecord, Tagged  # noqa: E402
from core.schemas import RegistrySchemas  # noqa: E402
from core.settings import Settings  # noqa: E402
from flows.coherence import Edges, build, kafka_source  # noqa: E402
from igflow.producer import produce  # noqa: E402
from igflow.workload import SOURCES, WorkloadSpec, generate, recent_start, tenant_ids  # noqa: E402
from operators.decode import SignalDecoder, decode, traced_decode  # noqa: E402
from operators.dedupe import TenantDedupe, Verdict, dedupe_batch  # noqa: E402
from operators.drift import TenantDrift  # noqa: E402
from operators.redact import POLICY_FILE as REDACTION_POLICY  # noqa: E402
from operators.redact import RedactionPolicy, redact  # noqa: E402
from operators.score import TickScore  # noqa: E402
from operators.tenancy import TenancyPolicy, tag, tag_batch  # noqa: E402
from operators.validate import check, check_batch, validate_batch  # noqa: E402
from sinks.iceberg import IcebergSink  # noqa: E402
from sinks.lake_tables import SIGNALS, TableDef  # noqa: E402
from tenancy.registry import StaticTenants  # noqa: E402

T = TypeVar("T")
U = TypeVar("U")


def _timed(items: Iterable[T], step: Callable[[T], Iterable[U]]) -> tuple[list[U], float, int]:
    items = list(items)
    out: list[U] = []
    gc.collect()
    start = _clock()
    for item in items:
        out.extend(step(item))
    return out, _clock() - start, len(items)


#: Part 1's clock: CPU seconds of this process (other engineers' load does not count), taken with
#: the garbage collector off, as ``timeit`` does: a full collection's cost grows with every
#: record the earlier rows keep alive, so it would charge the later rows for the earlier ones
#: (the flow's own collector settings are core/collector.py's, and part 2 measures them).
_clock = time.process_time


def _per_tenant(items: list[Decoded], size: int) -> list[list[Decoded]]:
    """``items`` in chunks of ``size``, each split by tenant (a keyed step's batches)."""
    out: list[list[Decoded]] = []
    for start in range(0, len(items), size):
        groups: dict[str, list[Decoded]] = {}
        for item in items[start : start + size]:
            groups.setdefault(item.signal.tenant_id, []).append(item)
        out.extend(groups.values())
    return out


def stage_costs(
    settings: Settings, n: int, step: timedelta, batch: int = 500
) -> tuple[list[tuple[str, float, int]], int]:
    """µs per event of each stage's logic, fed in pipeline order; and the score changes
    published."""
    contract = signal_contracts()[0]
    spec = WorkloadSpec(
        tenants=10,
        count=n // 10,
        duplicates=0.05,
        invalid=0.02,
        start=recent_start(datetime.now(UTC)),
        step=step,
    )
    raws = []
    clock = 0  # the producer's clock: a second after the newest valid event so far
    for offset, m in enumerate(generate(spec, 1, contract.parsed)):
        if m.kind == "valid" and m.record:
            clock = max(clock, int(m.record["ts"].timestamp() * 1000) + 1000)
        raws.append(RawRecord("bench", 0, offset, m.key, m.value, clock or None))
    decoder = SignalDecoder(lambda _id: contract.text, signal_contracts()[-1].parsed)
    batch_decoder = SignalDecoder(lambda _id: contract.text, signal_contracts()[-1].parsed)
    tenants = StaticTenants.of(*tenant_ids(10), sources=SOURCES)
    policy = TenancyPolicy.load(settings.policies_dir)
    shipped = RedactionPolicy.load(settings.policies_dir)
    every_tenant = {
        t: {"signal_id": "hash", "source": "hash", "type": "mask"} for t in tenant_ids(10)
    }
    ruled = RedactionPolicy(
        (settings.policies_dir / REDACTION_POLICY).read_text(encoding="utf-8"),
        json.dumps({"redaction": {"tenants": every_tenant}}),
        "0" * 64,
    )
    macs = {t: FieldCipher(hashlib.sha256(t.encode()).digest(), 1).mac for t in tenant_ids(10)}

    def mac(tenant_id: str, _ts: datetime, message: bytes) -> bytes:
        return macs[tenant_id](message)

    drifts: dict[str, TenantDrift] = {}
    dedupes: dict[str, TenantDedupe] = {}
    scores: dict[str, TickScore] = {}

    def decode_one(raw: RawRecord) -> list[Decoded]:
        out = decoder.decode(raw)
        return [out] if isinstance(out, Decoded) else []

    def validate_one(item: Decoded) -> list[Decoded]:
        out = check(item, tenants, settings.validate)
        return [out] if isinstance(out, Decoded) else []

    def drift_one(item: Decoded) -> list[Decoded]:
        t = item.signal.tenant_id
        state = drifts.get(t) or drifts.setdefault(
            t, TenantDrift(t, settings.drift, None, settings.quarantine.release_key)
        )
        return [x for x in state.push(item) if isinstance(x, Decoded)]

    def dedupe_one(item: Decoded) -> list[Decoded]:
        t = item.signal.tenant_id
        state = dedupes.get(t)
        if state is None:  # (not `or`: an empty state has len 0)
            state = dedupes[t] = TenantDedupe(settings.dedupe.ttl_seconds)
        return [item] if state.check(item) is Verdict.NEW else []

    def tag_one(item: Decoded) -> list[Tagged]:
        return [tag(item, policy)]

    def redact_one(item: Tagged) -> list[Tagged]:
        return [redact(item, shipped, mac)]

    def redact_ruled(item: Tagged) -> list[Tagged]:
        return [redact(item, ruled, mac)]

    def score_one(item: Tagged) -> list[Any]:
        t = item.signal.tenant_id
        state = scores.get(t)
        if state is None:
            state = scores[t] = TickScore(settings.score)
        return state.add((item,))

    rows = []
    decoded, s, k = _timed(raws, decode_one)
    rows.append(("decode", s, k))
    valid, s, k = _timed(decoded, validate_one)
    rows.append(("validate", s, k))
    passed, s, k = _timed(valid, drift_one)
    start = _clock()
    for state in drifts.values():
        passed.extend(x for x in state.flush() if isinstance(x, Decoded))
    rows.append(("drift", s + _clock() - start, k))
    rows.extend(batch_costs(settings, decoded, valid, passed, tenants, batch))
    unique, s, k = _timed(passed, dedupe_one)
    rows.append(("dedupe", s, k))
    tagged, s, k = _timed(unique, tag_one)
    rows.append(("tenant-tag", s, k))
    redacted, s, k = _timed(tagged, redact_one)
    rows.append(("redact", s, k))
    _ruled, s, k = _timed(tagged, redact_ruled)
    rows.append(("redact+rules", s, k))
    changes, s, k = _timed(redacted, score_one)
    start = _clock()
    for score_state in scores.values():
        changes.extend(score_state.flush())
    rows.append(("score", s + _clock() - start, k))

    # The batch entry points the flow runs, over the same records in engine-sized batches
    # (`batch` records, a keyed step's split by tenant): `[batch]` rows beside their reference.
    decoded_b, s, k = _timed(_chunks(raws, batch), batch_decoder.decode_many)
    rows.append(("decode[batch]", s, len(raws)))
    keyed = [(item.signal.tenant_id, item) for item in unique]
    _tagged_b, s, k = _timed(_chunks(keyed, batch), functools.partial(tag_batch, policy=policy))
    rows.append(("tenant-tag[batch]", s, len(keyed)))
    batch_scores: dict[str, TickScore] = {}

    def score_batch(chunk: list[Tagged]) -> list[Any]:
        by_tenant: dict[str, list[Tagged]] = {}
        for item in chunk:
            by_tenant.setdefault(item.signal.tenant_id, []).append(item)
        out = []
        for t, items in by_tenant.items():
            state = batch_scores.get(t)
            if state is None:
                state = batch_scores[t] = TickScore(settings.score)
            out.extend(state.add(items))
        return out

    changes_b, s, k = _timed(_chunks(redacted, batch), score_batch)
    start = _clock()
    for score_state in batch_scores.values():
        changes_b.extend(score_state.flush())
    rows.append(("score[batch]", s + _clock() - start, len(redacted)))

    def per_tenant(out: list[Any]) -> list[Any]:  # (tenants interleave otherwise)
        return sorted(out, key=lambda change: (change.tenant_id, change.seq))

    if decoded_b != [decoder.decode(raw) for raw in raws] or (
        per_tenant(changes_b) != per_tenant(changes)
    ):
        msg = "a batch path gave other results than its per-record reference"
        raise AssertionError(msg)
    return rows, len(changes)


def _chunks(items: list[T], size: int) -> list[list[T]]:
    """``items`` cut into batches of ``size`` (the last one shorter)."""
    return [items[i : i + size] for i in range(0, len(items), size)]


def batch_costs(
    settings: Settings,
    decoded: list[Decoded],
    valid: list[Decoded],
    passed: list[Decoded],
    tenants: StaticTenants,
    size: int,
) -> list[tuple[str, float, int]]:
    """The batch entry points of validate, drift and dedupe over the records their per-record
    rows timed, in the flow's batches (see the module docstring); fresh state each."""
    rows = []
    chunks = [decoded[i : i + size] for i in range(0, len(decoded), size)]
    start = _clock()
    for chunk in chunks:
        check_batch(chunk, tenants, settings.validate)
    rows.append(("validate[batch]", _clock() - start, len(decoded)))
    # The step's whole batch function (the rules, then the holds: every switch on), in C and
    # in its Python reference (core/_native.c validate_run; DEVELOPERS.md "Native clean paths").
    for name, native in (("validate[step]", True), ("validate[step,py]", False)):
        step = validate_batch(tenants, settings.validate, native=native)
        start = _clock()
        for chunk in chunks:
            step(chunk)
        rows.append((name, _clock() - start, len(decoded)))

    def drift(t: str, items: list[Decoded], drifts: dict[str, TenantDrift]) -> None:
        if t not in drifts:
            drifts[t] = TenantDrift(t, settings.drift, None, settings.quarantine.release_key)
        drifts[t].push_batch(items)

    def dedupe(t: str, items: list[Decoded], dedupes: dict[str, TenantDedupe]) -> None:
        if t not in dedupes:
            dedupes[t] = TenantDedupe(settings.dedupe.ttl_seconds)
        dedupe_batch(dedupes[t], items)

    drifts: dict[str, TenantDrift] = {}
    start = _clock()
    for items in _per_tenant(valid, size):
        drift(items[0].signal.tenant_id, items, drifts)
    for state in drifts.values():
        state.flush()
    rows.append(("drift[batch]", _clock() - start, len(valid)))
    dedupes: dict[str, TenantDedupe] = {}
    start = _clock()
    for items in _per_tenant(passed, size):
        dedupe(items[0].signal.tenant_id, items, dedupes)
    rows.append(("dedupe[batch]", _clock() - start, len(passed)))
    return rows


_RAW = TableDef[Decoded](
    name="signals",
    schema=SIGNALS.schema.select(
        *("tenant_id", "signal_id", "type", "value", "weight", "source", "ts"),
        "kafka_topic",
        "kafka_partition",
        "kafka_offset",
        "schema_version",
        "input_hash",
    ),
    partition_spec=SIGNALS.partition_spec,
    row=lambda d: (
        d.signal.tenant_id,
        d.signal.signal_id,
        d.signal.type,
        d.signal.value,
        d.signal.weight,
        d.signal.source,
        d.signal.ts,
        d.provenance.topic,
        d.provenance.kafka_partition,
        d.provenance.kafka_offset,
        d.provenance.schema_version,
        d.provenance.input_hash,
    ),
    provenance=lambda d: d.provenance,
    tenant=lambda d: d.signal.tenant_id,
)


def skeleton(settings: Settings) -> Dataflow:
    """The walking-skeleton flow: Kafka → decode → Iceberg, no stages."""
    decoder = SignalDecoder(
        RegistrySchemas(
            settings.kafka.schema_registry_url, ca_location=settings.kafka.ssl_ca_location
        ),
        signal_contracts()[-1].parsed,
    )
    flow = Dataflow("skeleton")
    decoded = decode("decode", op.input("kafka", flow, kafka_source(settings)), decoder)
    keyed = op.key_on("by_partition", decoded.oks, lambda d: str(d.provenance.kafka_partition))
    batches = op.collect(
        "batch",
        keyed,
        timeout=timedelta(seconds=settings.lake.batch_max_seconds),
        max_size=settings.lake.batch_max_rows,
    )
    sink = IcebergSink(
        settings.lake.catalog_name, settings.catalog_properties, settings.lake.namespace, _RAW
    )
    op.output("lake", batches, sink)
    return flow


def _cpu() -> float:
    """CPU seconds of this process so far (every thread: the flow's and the span exporter's)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _wall(flow: Dataflow) -> float:
    start = time.perf_counter()
    cli_main(flow, workers_per_process=1, epoch_interval=timedelta(seconds=1))
    return time.perf_counter() - start


def decode_hook_cost(settings: Settings, n: int, ratio: float, endpoint: str) -> None:
    """CPU µs per record of the decode step's function with tracing off and on at ``ratio``
    (records without a ``traceparent``, as another producer sends them: the draw decides),
    interleaved, best of 5 each; the later stages' hook for an unsampled record is one
    ``item.trace is None`` test."""
    contract = signal_contracts()[0]
    spec = WorkloadSpec(tenants=10, count=n // 10, start=recent_start(datetime.now(UTC)))
    raws = [
        RawRecord("bench", 0, offset, m.key, m.value, None)
        for offset, m in enumerate(generate(spec, 1, contract.parsed))
    ]
    decoder = SignalDecoder(lambda _id: contract.text, signal_contracts()[-1].parsed)
    traced_settings = dataclasses.replace(settings.tracing, endpoint=endpoint, sample_ratio=ratio)
    best = {"off": float("inf"), "on": float("inf")}
    for _ in range(5):
        for mode in ("off", "on"):
            tracing.shutdown()
            if mode == "on":
                tracing.configure(traced_settings, "bench")
            step = decoder.decode if mode == "off" else functools.partial(traced_decode, decoder)
            start = time.process_time()
            for raw in raws:
                step(raw)
            best[mode] = min(best[mode], time.process_time() - start)
    tracing.shutdown()
    off, on = (best[m] / len(raws) * 1e6 for m in ("off", "on"))
    print(
        f"decode, CPU µs/record over {len(raws):,} (best of 5): off {off:.2f}, "
        f"tracing at {ratio:g} {on:.2f} ({(on / off - 1) * 100:+.1f}%)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--signals", type=int, default=200_000)
    parser.add_argument("--stage-signals", type=int, default=100_000)
    parser.add_argument(
        "--stages-only", action="store_true", help="part 1 only (no stack needed); best of --repeat"
    )
    parser.add_argument("--repeat", type=int, default=1, help="part 1 runs; each stage's best")
    parser.add_argument(
        "--batch", type=int, default=500, help="part 1: records per batch of the [batch] rows"
    )
    parser.add_argument(
        "--step-ms", type=float, default=1000.0, help="event time between a tenant's signals"
    )
    parser.add_argument(
        "--tracing",
        action="store_true",
        help="part 2: the full flow with tracing off and on (to an OTLP receiver), alternately",
    )
    parser.add_argument("--tracing-rounds", type=int, default=2, help="off/on pairs (--tracing)")
    parser.add_argument(
        "--sample-ratio", type=float, default=None, help="with --tracing; default: the setting's"
    )
    args = parser.parse_args()
    step = timedelta(milliseconds=args.step_ms)
    settings = Settings.load()
    logging.basicConfig(level=logging.ERROR)  # one warning per rejected record otherwise

    print(
        f"per-stage cost over {args.stage_signals:,} signals, {args.step_ms:g} ms apart per"
        f" tenant, score tick {settings.score.tick_seconds:g} s (one process, no engine):"
    )
    gc.disable()  # (see _clock; each timed row starts after a full collection)
    try:
        runs = [
            stage_costs(settings, args.stage_signals, step, args.batch)
            for _ in range(max(1, args.repeat))
        ]
    finally:
        gc.enable()
    changes = runs[0][1]
    costs = [
        min(column, key=lambda row: row[1] / row[2])
        for column in zip(*(r[0] for r in runs), strict=True)
    ]
    print(f"{'stage':<18} {'events':>9} {'µs/event':>9}")
    for name, seconds, count in costs:
        print(f"{name:<18} {count:>9,} {seconds / count * 1e6:>9.2f}")
    # (redact+rules re-times the records of `redact`: not a stage of its own; a [batch] row
    # re-times its stage's records through the batch entry point)
    per_us = {n: s / c * 1e6 for n, s, c in costs}
    total_us = sum(us for n, us in per_us.items() if n != "redact+rules" and "[" not in n)
    batched_us = sum(
        per_us.get(f"{n}[batch]", us)
        for n, us in per_us.items()
        if n != "redact+rules" and "[" not in n
    )
    print(f"{'all stages':<18} {'':>9} {total_us:>9.2f}")
    print(f"{'all stages[batch]':<18} {'':>9} {batched_us:>9.2f}")
    print(f"score changes published: {changes:,}")
    if args.tracing:
        from tests.otlp_receiver import OtlpReceiver

        ratio = (
            args.sample_ratio if args.sample_ratio is not None else settings.tracing.sample_ratio
        )
        with OtlpReceiver() as hook_receiver:
            decode_hook_cost(settings, args.stage_signals, ratio, hook_receiver.endpoint)
    if args.stages_only:
        return

    tag_, settings = fresh_topics(settings)
    spec = demo_workload(args.signals, step=step)
    print(f"\nproducing {spec.tenants * spec.count:,} signals (+5% duplicates, 2% invalid) …")
    report = produce(settings, spec)
    total = report.total
    print(f"produced {total:,} in {report.seconds:.1f} s")

    runs: list[tuple[str, Callable[[Settings], Dataflow], str]] = [
        ("skeleton: decode → Iceberg", skeleton, ""),
        ("all stages → signals, scores, quarantine", lambda s: build(s, Edges()), ""),
    ]
    receiver = None
    if args.tracing:
        # Tracing off and on alternately (the machine is shared: one slow moment should not
        # decide the ratio); spans go over OTLP/HTTP to a real receiver in this process.
        from tests.otlp_receiver import OtlpReceiver

        receiver = OtlpReceiver().__enter__()
        ratio = (
            args.sample_ratio if args.sample_ratio is not None else settings.tracing.sample_ratio
        )
        runs = runs[:1]
        for _round in range(args.tracing_rounds):
            runs.append(("all stages, tracing off", lambda s: build(s, Edges()), ""))
            runs.append(
                (f"all stages, tracing at {ratio:g}", lambda s: build(s, Edges()), str(ratio))
            )

    results = []
    for label, make, traced_at in runs:
        namespace = f"bench_{tag_}_{len(results)}"
        scoped = settings.with_changes("lake", namespace=namespace)
        if traced_at and receiver is not None:
            scoped = scoped.with_changes(
                "tracing", endpoint=receiver.endpoint, sample_ratio=float(traced_at)
            )
        cpu = _cpu()
        seconds = _wall(make(scoped))
        tracing.shutdown()  # flushes what the run recorded; the next run starts untraced
        cpu = _cpu() - cpu  # the last export included
        lake = catalog(scoped)
        landed = lake.load_table(f"{namespace}.signals").scan().count()
        scores = (
            lake.load_table(f"{namespace}.scores").scan().count()
            if lake.table_exists(f"{namespace}.scores")
            else 0
        )
        results.append(
            {
                "path": label,
                "seconds": seconds,
                "events_per_s": total / seconds,
                "cpu_seconds": cpu,
                "landed": landed,
                "score_rows": scores,
            }
        )
    if receiver is not None:
        traces = {span.trace_id for span in receiver.spans}
        print(f"\nthe receiver got {len(receiver.spans):,} spans of {len(traces):,} traces")
        receiver.__exit__(None, None, None)
        off = max(r["events_per_s"] for r in results if r["path"].endswith("tracing off"))
        on = max(r["events_per_s"] for r in results if "tracing at" in r["path"])
        print(f"events/s, tracing on / off (best of each): {on / off:.3f}")
        cpu_off = min(r["cpu_seconds"] for r in results if r["path"].endswith("tracing off"))
        cpu_on = min(r["cpu_seconds"] for r in results if "tracing at" in r["path"])
        print(
            "CPU seconds of the flow's process, tracing on / off (best of each): "
            f"{cpu_on / cpu_off:.3f} ({(cpu_on / cpu_off - 1) * 100:+.1f}%)"
        )
    base = results[0]["events_per_s"]
    print(
        f"\n{'path':<42} {'seconds':>8} {'CPU s':>7} {'events/s':>9} {'landed':>8}"
        f" {'scores':>8} {'ratio':>6}"
    )
    for r in results:
        print(
            f"{r['path']:<42} {r['seconds']:>8.2f} {r['cpu_seconds']:>7.2f}"
            f" {r['events_per_s']:>9,.0f} {r['landed']:>8,} {r['score_rows']:>8,}"
            f" {r['events_per_s'] / base:>5.2f}x"
        )
    out = REPO / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    stages = [{"stage": n, "events": c, "us_per_event": s / c * 1e6} for n, s, c in costs]
    (out / "stages.json").write_text(
        json.dumps(
            {
                "signals": total,
                "step_ms": args.step_ms,
                "tick_seconds": settings.score.tick_seconds,
                "score_changes": changes,
                "stages": stages,
                "flows": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
