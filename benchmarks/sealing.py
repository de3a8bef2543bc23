"""Sealing benchmark: what sealing the sensitive fields costs, per row and end to end.

    .venv/bin/python benchmarks/sealing.py --signals 50000       # the local stack must be up

1. Per row (one process, the real key store in Postgres, its keys cached as in the flow): a
   quarantine row (``QUARANTINE.to_arrow``, the payload sealed), a DLQ message
   (``dlq_message``) and a deconfliction row with 4 matched selectors, each sealed and unsealed
   over the same items, best of 5; µs per row, and the bare cipher (``FieldCipher.encrypt``) for
   scale.
2. End to end, on the local stack: N v2 signals with selectors (10 tenants, 5% duplicates,
   ``--invalid`` invalid, so that share goes to the DLQ and the quarantine sealed) produced once,
   then the full flow (``flows.coherence.build``, the lake only) run bounded in this process,
   unsealed and sealed alternately (``--rounds`` pairs, fresh namespaces); events/s of the best
   of each and their ratio, and this process's CPU seconds.
3. Recovery snapshots, per item (``--snapshots``; the real key store): a lake lane's open batch
   of N tagged signals of 10 tenants (``collect``'s state) and one tenant's drift-like state of
   its records, pickled as Bytewax does (unsealed) against sealed per tenant
   (``tenancy.sealed_state.StateSeal.seal``, then pickled) and opened again; best of 7, µs per
   item.
4. The flow with ``--recovery-dir`` (``--recovery-base DIR``: a base copy of the code before
   sealed snapshots, e.g. ``git archive main | tar -x -C /tmp/base-sealsnap``): ``igflow run -r``
   as a subprocess on the same produced topic, the base copy and this tree alternately
   (``--rounds`` pairs, fresh namespaces and recovery folders, sealing on in both: the base
   seals the stores only); wall and CPU seconds (the child's), their medians and ratios, and the
   load average before each run.
5. The tenant key store's refresh (``--key-tenants N``, ``--only keys``; the real key store): N
   scratch tenants x 3 scopes sealed once (their first keys made), then rounds past each
   ``keys.refresh_seconds`` (a clock moved, nothing waited for): with nothing changed (one read
   of ``key_epoch`` for every key), with one tenant rotated by another process before the round
   (its keys read again), and with every key read again (``refresh()`` first: what each refresh
   did before migration ``0010``); ms a round, the median of ``--rounds`` (at least 3) each,
   alternately. The scratch tenants' key rows are deleted after.
Writes ``benchmarks/results/sealing.json`` (``sealed_snapshots.json`` / ``key_refresh.json`` with
``--only``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import pickle
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from bytewax.run import cli_main

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bench_topics import fresh_topics  # noqa: E402
from benchmarks.checkouts import stack_env  # noqa: E402
from core.catalog import catalog  # noqa: E402
from core.contracts import signal_contracts  # noqa: E402
from core.envelope import FieldCipher, field_aad  # noqa: E402
from core.reasons import ReasonCode  # noqa: E402
from core.records import (  # noqa: E402
    Decoded,
    DeconflictionResult,
    PolicyTags,
    Provenance,
    RawRecord,
    Rejected,
    Signal,
    Tagged,
    input_hash,
)
from core.settings import Settings  # noqa: E402
from flows.coherence import Edges, build  # noqa: E402
from igflow.producer import produce  # noqa: E402
from igflow.workload import WorkloadSpec, generate, recent_start, tenant_ids  # noqa: E402
from operators.collect import CollectState  # noqa: E402
from sinks.dlq import dlq_message  # noqa: E402
from sinks.lake_tables import DECONFLICTION, QUARANTINE  # noqa: E402
from tenancy.keys import tenant_keys  # noqa: E402
from tenancy.sealed_state import StateSeal  # noqa: E402
from tenancy.sealing import Sealer, sealer_of  # noqa: E402


def _best(fn: Callable[[], Any], rounds: int = 5) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def per_row(settings: Settings, n: int, sealer: Sealer) -> dict[str, dict[str, float]]:
    """µs per row, unsealed and sealed, of the three sealed places (see the module docstring)."""
    spec = dataclasses.replace(
        WorkloadSpec(tenants=10, count=n // 10, start=recent_start(datetime.now(UTC))),
        selectors=True,
    )
    messages = list(generate(spec, 2, signal_contracts()[1].parsed))
    t0 = int(spec.start.timestamp() * 1000)
    rejects = [
        Rejected(
            ReasonCode.FIELD_INVALID,
            "value out of range",
            RawRecord("bench", i % 4, i, m.key, m.value, t0 + i),
            "validate",
            m.record["tenant_id"] if m.record else None,
            2,
        )
        for i, m in enumerate(messages)
    ]
    windows = [
        DeconflictionResult(
            tenant_id=tenant_ids(10)[i % 10],
            window_start=spec.start + timedelta(minutes=5 * i),
            window_end=spec.start + timedelta(minutes=5 * i + 5),
            mode="full_intersection",
            partner="partner",
            selectors_sent=8,
            matched=tuple(f"sel-{i * 4 + j:05d}" for j in range(4)),
            count=4,
            reason=None,
            signals=4,
            late=0,
            selectors_rejected=0,
            first_offset=i,
            last_offset=i,
            provenance_digest="d" * 64,
            provenance_id="p" * 32,
            provenance=Provenance("bench", 0, i, 2, "h" * 64),
            policy_version="v" * 64,
        )
        for i in range(len(messages) // 4)
    ]
    # Warm the key cache (first use makes the tenants' keys), as a running flow has it.
    QUARANTINE.to_arrow(rejects[:100], sealer)
    DECONFLICTION.to_arrow(windows[:100], sealer)
    for r in rejects[:100]:
        dlq_message(r, sealer)
    cipher = FieldCipher(bytes(32), 1)
    aad = field_aad("tenant-00", "lake.quarantine", "payload", "bench/0/1")
    payloads = [m.value for m in messages]
    out: dict[str, dict[str, float]] = {}
    cases: list[tuple[str, int, Callable[[], Any], Callable[[], Any]]] = [
        (
            "quarantine row",
            len(rejects),
            lambda: QUARANTINE.to_arrow(rejects),
            lambda: QUARANTINE.to_arrow(rejects, sealer),
        ),
        (
            "DLQ message",
            len(rejects),
            lambda: [dlq_message(r) for r in rejects],
            lambda: [dlq_message(r, sealer) for r in rejects],
        ),
        (
            "deconfliction row (4 matched)",
            len(windows),
            lambda: DECONFLICTION.to_arrow(windows),
            lambda: DECONFLICTION.to_arrow(windows, sealer),
        ),
        (
            "bare FieldCipher.encrypt",
            len(payloads),
            lambda: None,
            lambda: [cipher.encrypt(p, aad) for p in payloads],
        ),
    ]
    for name, count, plain, sealed in cases:
        a, b = _best(plain) / count * 1e6, _best(sealed) / count * 1e6
        out[name] = {"rows": count, "plain_us": a, "sealed_us": b, "cost_us": b - a}
        print(f"{name:<32} {count:>8,} {a:>9.2f} {b:>9.2f} {b - a:>9.2f}")
    return out


def snapshots(n: int, sealer: Sealer) -> dict[str, dict[str, float]]:
    """µs per item of a recovery snapshot: pickled plain (as Bytewax does) against sealed per
    tenant and pickled, and opened again (see the module docstring)."""
    spec = dataclasses.replace(
        WorkloadSpec(tenants=10, count=n // 10, start=recent_start(datetime.now(UTC))),
        selectors=True,
    )
    contract = signal_contracts()[1].parsed
    items: list[Any] = []
    for i, m in enumerate(generate(spec, 2, contract)):
        assert m.record is not None
        items.append(_tagged(m.record, m.value, i))
    seal = StateSeal(sealer)
    lane = CollectState(items, datetime.now(UTC))
    one = [x for x in items if x.decoded.signal.tenant_id == items[0].decoded.signal.tenant_id]
    tenant = items[0].decoded.signal.tenant_id
    seal.seal("bench.lane", "lane", CollectState(items[:100]))  # warm the tenants' keys
    out: dict[str, dict[str, float]] = {}
    lane_sealed = pickle.dumps(seal.seal("bench.lane", "lane", lane))
    lane_plain = pickle.dumps(lane)
    whole_sealed = pickle.dumps(seal.seal("bench.whole", tenant, one, tenant))
    whole_plain = pickle.dumps(one)
    # (name, items, Bytewax's pickle of the plain state, sealed then pickled, plain unpickle,
    # unpickle then open); the four timed in turn, round after round (the machine is shared).
    cases: list[tuple[str, int, list[Callable[[], Any]]]] = [
        (
            "lake lane (10 tenants)",
            len(items),
            [
                lambda: pickle.dumps(lane),
                lambda: pickle.dumps(seal.seal("bench.lane", "lane", lane)),
                lambda: pickle.loads(lane_plain),
                lambda: seal.open("bench.lane", pickle.loads(lane_sealed)),
            ],
        ),
        (
            "one tenant's whole state",
            len(one),
            [
                lambda: pickle.dumps(one),
                lambda: pickle.dumps(seal.seal("bench.whole", tenant, one, tenant)),
                lambda: pickle.loads(whole_plain),
                lambda: seal.open("bench.whole", pickle.loads(whole_sealed)),
            ],
        ),
    ]
    for name, count, fns in cases:
        best = [float("inf")] * len(fns)
        for _round in range(7):
            for i, fn in enumerate(fns):
                start = time.perf_counter()
                fn()
                best[i] = min(best[i], time.perf_counter() - start)
        a, b, c, d = (x / count * 1e6 for x in best)
        out[name] = {
            "items": count,
            "plain_us": a,
            "sealed_us": b,
            "plain_open_us": c,
            "open_us": d,
        }
        print(f"{name:<28} {count:>8,} {a:>9.2f} {b:>9.2f} {c:>9.2f} {d:>9.2f}")
    out["lake lane (10 tenants)"]["plain_bytes"] = len(lane_plain)
    out["lake lane (10 tenants)"]["sealed_bytes"] = len(lane_sealed)
    return out


def _tagged(record: dict[str, Any], value: bytes | None, i: int) -> Any:
    raw = RawRecord("bench", i % 4, i, None, value, int(record["ts"].timestamp() * 1000))
    signal = Signal(
        record["tenant_id"],
        record["signal_id"],
        record["type"],
        record["value"],
        record["weight"],
        record["source"],
        record["ts"],
        tuple(record.get("selectors") or ()),
    )
    decoded = Decoded(signal, Provenance("bench", i % 4, i, 2, input_hash(value)), None, raw)
    tags = PolicyTags("benchmarking", "standard-365d", "Restricted-TOS", "US")
    return Tagged(decoded, tags, "p" * 64, f"prov-{i}")


def recovery_runs(
    settings: Settings, base: Path, signals: int, rounds: int
) -> list[dict[str, Any]]:
    """``igflow run -r`` of the base copy and of this tree, alternately (module docstring)."""
    tag, settings = fresh_topics(settings)
    spec = dataclasses.replace(
        WorkloadSpec(
            tenants=10, count=signals // 10, seed=3, start=recent_start(datetime.now(UTC))
        ),
        selectors=True,
    )
    total = produce(settings, spec, schema_version=2).total
    print(f"\nproduced {total:,} v2 signals; igflow run -r, base copy and this tree alternately")
    runs: list[dict[str, Any]] = []
    scratch = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-recovery-{tag}"
    for i in range(rounds):
        for label, tree in (("base", base), ("sealed", REPO)):
            namespace = f"bench_{tag}_{label}_{i}"
            env = stack_env()
            env.update(
                {
                    "IGFLOW_KAFKA_TOPIC": settings.kafka.topic,
                    "IGFLOW_KAFKA_DLQ_TOPIC": settings.kafka.dlq_topic,
                    "IGFLOW_LAKE_NAMESPACE": namespace,
                    "IGFLOW_STORES_SINKS": "",
                    "PYTHONPATH": str(tree),
                }
            )
            load = os.getloadavg()[0]
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "igflow.cli", "run", "-r", str(scratch / namespace)],
                cwd=tree,
                env=env,
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            seconds = time.perf_counter() - start
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            landed = catalog(settings).load_table(f"{namespace}.signals").scan().count()
            runs.append(
                {"tree": label, "seconds": seconds, "cpu_seconds": cpu, "load": load,
                 "landed": landed, "signals": total}
            )  # fmt: skip
            print(
                f"{label:<7} {seconds:>7.2f} s {cpu:>7.2f} CPU s, {landed:,} landed,"
                f" load {load:.2f}"
            )
    for what in ("seconds", "cpu_seconds"):
        b = statistics.median(r[what] for r in runs if r["tree"] == "base")
        s = statistics.median(r[what] for r in runs if r["tree"] == "sealed")
        print(f"median {what}: base {b:.2f}, sealed {s:.2f}, ratio {s / b:.3f}")
    return runs


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


_KEY_SCOPES = ("dlq", "lake.quarantine", "redis")


def key_refresh(settings: Settings, tenants: int, rounds: int) -> dict[str, Any]:
    """Part 5: ms a refresh round over ``tenants`` x 3 scopes with nothing changed, with one
    tenant rotated by another process, and with every key read again, alternately; the median
    of ``rounds`` each."""
    keys = tenant_keys(settings)
    rotator = tenant_keys(settings)  # another process's
    now = [0.0]
    keys._clock = lambda: now[0]  # a refresh passes without waiting for it
    prefix = f"bench-keys-{os.getpid()}-"
    ids = [f"{prefix}{i:05d}" for i in range(tenants)]
    at = datetime(2026, 12, 1, tzinfo=UTC)

    def seal_all() -> tuple[float, float]:
        cpu, start = _cpu(), time.perf_counter()
        for tenant in ids:
            for scope in _KEY_SCOPES:
                keys.encrypt_field(tenant, scope, "value", "bench/0/1", at, b"x")
        return (time.perf_counter() - start) * 1e3, (_cpu() - cpu) * 1e3

    try:
        made = seal_all()  # every first key made (each records a change of its tenant) ...
        now[0] += keys._refresh + 1
        seal_all()  # ... so the keys read before a tenant's later first keys are read again
        out: dict[str, list[tuple[float, float]]] = {
            "unchanged": [],
            "one rotated": [],
            "read again": [],
        }
        for i in range(rounds):
            for kind in out:
                now[0] += keys._refresh + 1
                if kind == "one rotated":
                    rotator.rotate(ids[i])
                elif kind == "read again":
                    keys.refresh()
                out[kind].append(seal_all())
    finally:
        keys.close()
        rotator.close()
        with psycopg.connect(settings.stores.postgres_dsn, autocommit=True) as conn:
            for table in ("tenant_data_keys", "tenant_keks", "key_audit", "tenant_key_epochs"):
                conn.execute(f"DELETE FROM {table} WHERE starts_with(tenant_id, %s)", (prefix,))
    result: dict[str, Any] = {"tenants": tenants, "scopes": len(_KEY_SCOPES)}
    print(
        f"{tenants:,} tenants x {len(_KEY_SCOPES)} scopes; first keys made in {made[0]:,.0f} ms"
        f" (a round past each refresh, median of {rounds}):"
    )
    for kind, runs in out.items():
        wall = statistics.median(w for w, _c in runs)
        cpu = statistics.median(c for _w, c in runs)
        result[kind] = {"wall_ms": wall, "cpu_ms": cpu, "runs": runs}
        print(f"  {kind:<12} {wall:>9,.1f} ms wall {cpu:>9,.1f} ms CPU")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--signals", type=int, default=50_000)
    parser.add_argument("--row-signals", type=int, default=20_000)
    parser.add_argument("--invalid", type=float, default=0.05)
    parser.add_argument("--rounds", type=int, default=2, help="unsealed/sealed pairs")
    parser.add_argument("--rows-only", action="store_true", help="part 1 only")
    parser.add_argument("--snapshots", type=int, default=0, help="part 3 over N items")
    parser.add_argument("--recovery-base", type=Path, help="part 4 against this base copy")
    parser.add_argument("--recovery-signals", type=int, default=30_000)
    parser.add_argument("--key-tenants", type=int, default=0, help="part 5 over N tenants")
    parser.add_argument(
        "--only", choices=("snapshots", "recovery", "keys"), help="run that part only"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # one warning per rejected record otherwise
    settings = Settings.load().with_changes("stores", sinks="")
    sealer = sealer_of(settings)
    extra: dict[str, Any] = {}
    if args.snapshots:
        print(f"recovery snapshot per item over {args.snapshots:,} items, best of 7 (µs):")
        print(f"{'what':<28} {'items':>8} {'pickle':>9} {'sealed':>9} {'unpickle':>9} {'open':>9}")
        extra["snapshots"] = snapshots(args.snapshots, sealer)
    if args.recovery_base is not None:
        extra["recovery"] = recovery_runs(
            settings, args.recovery_base, args.recovery_signals, args.rounds
        )
    if args.key_tenants:
        extra["key_refresh"] = key_refresh(settings, args.key_tenants, max(args.rounds, 3))
    if args.only:
        out = REPO / "benchmarks" / "results"
        out.mkdir(parents=True, exist_ok=True)
        name = "key_refresh.json" if args.only == "keys" else "sealed_snapshots.json"
        (out / name).write_text(json.dumps(extra, indent=2))
        return

    print(f"per row over {args.row_signals:,} records, best of 5 (µs):")
    print(f"{'what':<32} {'rows':>8} {'unsealed':>9} {'sealed':>9} {'cost':>9}")
    rows = per_row(settings, args.row_signals, sealer)
    results: list[dict[str, Any]] = []
    total = 0
    if not args.rows_only:
        tag, settings = fresh_topics(settings)
        spec = dataclasses.replace(
            WorkloadSpec(
                tenants=10,
                count=args.signals // 10,
                duplicates=0.05,
                invalid=args.invalid,
                seed=1,
                start=recent_start(datetime.now(UTC)),
            ),
            selectors=True,
        )
        report = produce(settings, spec, schema_version=2)
        total = report.total
        print(
            f"\nproduced {total:,} v2 signals ({args.invalid:.0%} invalid)"
            f" in {report.seconds:.1f} s"
        )
        for _round in range(args.rounds):
            for sealed in (False, True):
                namespace = f"bench_{tag}_{len(results)}"
                # Sealing is on by default: the unsealed run opts out explicitly.
                scoped = settings.with_changes("lake", namespace=namespace).with_changes(
                    "seal", enabled=sealed
                )
                edges = Edges(sealer=sealer) if sealed else Edges()
                cpu = _cpu()
                start = time.perf_counter()
                cli_main(
                    build(scoped, edges), workers_per_process=1, epoch_interval=timedelta(seconds=1)
                )
                seconds = time.perf_counter() - start
                cpu = _cpu() - cpu
                lake = catalog(scoped)
                quarantined = lake.load_table(f"{namespace}.quarantine").scan().count()
                results.append(
                    {
                        "sealed": sealed,
                        "seconds": seconds,
                        "events_per_s": total / seconds,
                        "cpu_seconds": cpu,
                        "quarantined": quarantined,
                    }
                )
                print(
                    f"{'sealed' if sealed else 'unsealed':<9} {seconds:>7.2f} s {cpu:>7.2f} CPU s"
                    f" {total / seconds:>8,.0f} events/s, {quarantined:,} quarantined"
                )
        off = max(r["events_per_s"] for r in results if not r["sealed"])
        on = max(r["events_per_s"] for r in results if r["sealed"])
        print(f"events/s sealed / unsealed (best of each): {on / off:.3f}")
    out = REPO / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "sealing.json").write_text(
        json.dumps({"per_row": rows, "signals": total, "flows": results, **extra}, indent=2)
    )


if __name__ == "__main__":
    main()
