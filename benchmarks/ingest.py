"""Ingest benchmark: events/s from Kafka into Iceberg, beside a plain consumer, in one run.

    make bench                       # or: .venv/bin/python benchmarks/ingest.py --signals 200000
    IGFLOW_STORES_SINKS= .venv/bin/python benchmarks/ingest.py --only w1  # lake only

1. Produces N signals (10 tenants) to a fresh topic of the local stack.
2. Baseline: a plain confluent-kafka consumer reads every partition to its end and decodes each
   message with the flow's own decoder (wire format + registry + Avro), landing nothing.
3. The flow: ``igflow run`` (bounded) over the same topic into a fresh Iceberg namespace, with 1
   and with 2 workers; wall time includes process start-up and the catalog connection, CPU
   seconds are the flow processes' own (user + system).
Prints a table and the ratio flow/baseline; writes ``benchmarks/results/ingest.json``.

On a shared machine compare code alternately in one run: ``--against DIR`` runs each flow from
the checkout in DIR as well (``git archive <commit> | tar -x -C DIR``), ``--rounds`` times,
alternating with this one, on the same topic; ``--only w1`` keeps one flow variant. With more
than one round it also prints each path's medians and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from core.catalog import catalog  # noqa: E402
from core.contracts import signal_contracts  # noqa: E402
from core.records import RawRecord  # noqa: E402
from core.schemas import RegistrySchemas  # noqa: E402
from core.settings import Settings  # noqa: E402
from igflow.admin import create_topics  # noqa: E402
from igflow.producer import end_offsets, produce  # noqa: E402
from igflow.workload import WorkloadSpec  # noqa: E402
from operators.decode import SignalDecoder  # noqa: E402


def baseline(settings: Settings, total: int) -> float:
    """Seconds for a plain consumer to read and decode every message."""
    decoder = SignalDecoder(
        RegistrySchemas(
            settings.kafka.schema_registry_url, ca_location=settings.kafka.ssl_ca_location
        ),
        signal_contracts()[-1].parsed,
    )
    ends = end_offsets(settings, settings.kafka.topic)
    consumer = Consumer({**settings.kafka.client_config(), "group.id": f"bench-{uuid.uuid4().hex}"})
    start = time.perf_counter()
    consumer.assign([TopicPartition(settings.kafka.topic, p, 0) for p in ends])
    seen = 0
    while seen < total:
        for msg in consumer.consume(1000, 1.0):
            if msg.error() is not None:
                continue
            raw = RawRecord(msg.topic(), msg.partition(), msg.offset(), msg.key(), msg.value())
            decoder.decode(raw)
            seen += 1
    elapsed = time.perf_counter() - start
    consumer.close()
    return elapsed


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def flow(
    settings: Settings, namespace: str, workers: int, processes: int = 1, code: Path = REPO
) -> tuple[float, float]:
    """Wall and CPU seconds of ``igflow run`` (``-w workers``, or ``processes`` with ``-i/-a``),
    run from the checkout ``code``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(code)
    env.update(
        {
            "IGFLOW_KAFKA_TOPIC": settings.kafka.topic,
            "IGFLOW_KAFKA_DLQ_TOPIC": settings.kafka.dlq_topic,
            "IGFLOW_LAKE_NAMESPACE": namespace,
            "IGFLOW_RUN_LOG_LEVEL": "WARNING",
        }
    )
    command = [sys.executable, "-m", "igflow.cli", "run", "-w", str(workers)]
    addresses = ";".join(f"127.0.0.1:{_free_port()}" for _ in range(processes))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    procs = [
        subprocess.Popen(
            command + (["-i", str(i), "-a", addresses] if processes > 1 else []), cwd=code, env=env
        )
        for i in range(processes)
    ]
    if any(p.wait() != 0 for p in procs):
        msg = "igflow run failed"
        raise RuntimeError(msg)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


#: The flow variants: label, workers, processes.
FLOWS = {
    "w1": ("igflow run → Iceberg", 1, 1),
    "w2": ("igflow run -w 2 → Iceberg", 2, 1),
    "p2": ("igflow run, 2 processes (-i/-a)", 1, 2),
}


def _check_landed(settings: Settings, namespace: str, total: int) -> None:
    lake = catalog(settings)
    landed = lake.load_table(f"{namespace}.signals").scan().count()
    # The drift step may hold a batch of the synthetic workload in quarantine: every record
    # lands in one of the two tables, none in both.
    held = (
        lake.load_table(f"{namespace}.quarantine").scan().count()
        if lake.table_exists(f"{namespace}.quarantine")
        else 0
    )
    assert landed + held == total, f"{landed} + {held} quarantined, expected {total}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--signals", type=int, default=200_000)
    parser.add_argument("--only", nargs="*", choices=sorted(FLOWS), default=sorted(FLOWS))
    parser.add_argument("--against", type=Path, help="another checkout to run alternately")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    tag = uuid.uuid4().hex[:8]
    settings = Settings.load().with_changes(
        "kafka", topic=f"bench.{tag}.signals", dlq_topic=f"bench.{tag}.dlq"
    )
    create_topics(settings)
    tenants = 10
    spec = WorkloadSpec(tenants=tenants, count=args.signals // tenants, seed=1)
    print(f"producing {spec.tenants * spec.count:,} signals to {settings.kafka.topic} …")
    report = produce(settings, spec)
    total = report.total
    print(f"produced {total:,} in {report.seconds:.1f} s ({total / report.seconds:,.0f}/s)")

    codes = [("", REPO)] + ([(f" [{args.against}]", args.against)] if args.against else [])
    rows: list[tuple[str, float, float | None, float]] = []
    for r in range(args.rounds):
        plain = baseline(settings, total)
        rows.append(("plain consumer + decode (no sink)", plain, None, plain))
        for key in sorted(args.only, key=list(FLOWS).index):
            label, workers, processes = FLOWS[key]
            for suffix, code in codes if r % 2 == 0 else codes[::-1]:  # ABBA: drift cancels
                namespace = f"bench_{tag}_{key}_{len(rows)}_{r}"
                seconds, cpu = flow(settings, namespace, workers, processes, code)
                _check_landed(settings, namespace, total)
                rows.append((label + suffix, seconds, cpu, plain))

    # Each flow against the plain consumer of its own round.
    print(f"\n{'path':<60} {'seconds':>8} {'CPU s':>7} {'events/s':>10} {'vs plain':>9}")
    results = []
    for name, seconds, cpu, plain in rows:
        rate, base = total / seconds, total / plain
        cpu_text = f"{cpu:>7.1f}" if cpu is not None else f"{'':>7}"
        print(f"{name:<60} {seconds:>8.2f} {cpu_text} {rate:>10,.0f} {rate / base:>8.2f}x")
        results.append({"path": name, "seconds": seconds, "cpu_seconds": cpu, "events_per_s": rate})
    if args.rounds > 1:
        # Medians per path over the rounds (each flow against its own round's plain consumer).
        print(f"\nmedians of {args.rounds} rounds, load average {os.getloadavg()[0]:.1f} now")
        print(f"{'path':<60} {'seconds':>8} {'CPU s':>7} {'events/s':>10} {'vs plain':>9}")
        for name in dict.fromkeys(name for name, *_ in rows):
            mine = [(s, c, p) for n, s, c, p in rows if n == name]
            seconds = statistics.median(s for s, _, _ in mine)
            cpus = [c for _, c, _ in mine if c is not None]
            cpu_text = f"{statistics.median(cpus):>7.1f}" if cpus else f"{'':>7}"
            ratio = statistics.median(p / s for s, _, p in mine)
            print(f"{name:<60} {seconds:>8.2f} {cpu_text} {total / seconds:>10,.0f} {ratio:>8.2f}x")
    out = REPO / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "ingest.json").write_text(json.dumps({"signals": total, "results": results}, indent=2))


if __name__ == "__main__":
    main()
