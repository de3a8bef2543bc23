"""Ingest benchmark: events/s from Kafka into Iceberg, beside a plain consumer, in one run.

    make bench                       # or: .venv/bin/python benchmarks/ingest.py --signals 200000
    IGFLOW_STORES_SINKS= .venv/bin/python benchmarks/ingest.py --only w1  # lake only

1. Produces N signals (10 tenants) to a fresh topic of the local stack.
2. Baseline: a plain confluent-kafka consumer reads every partition to its end and decodes each
   message with the flow's own decoder (wire format + registry + Avro), landing nothing.
3. The flow: ``igflow run`` (bounded) over the same topic into a fresh Iceberg namespace, with 1
   and with 2 workers, as 2 processes started as 2 commands (``-i/-a``) and as 2 processes
   forked by one after its imports (``--processes 2``); wall time includes process start-up and
   the catalog connection, CPU seconds are the flow processes' own (user + system).
Prints a table and the ratio flow/baseline; writes ``benchmarks/results/ingest.json``. Each flow
run also prints, as it ends, its CPU seconds per process and its appends per lake table (the
snapshots of its fresh namespace) with the load average.

Start-up: each flow also runs over a second topic of 10 signals (one per tenant), in the same
round, and the table adds what the flow does past its start-up: ``(N - 10) / (wall - wall of
the 10)`` events/s and its ratio to the plain consumer (which pays no start-up: it is timed
from its first fetch). The first ratio is the issue's measure; the second says how much of the
gap is the per-record path and how much the fixed cost of starting (imports, the catalog, the
registry, Bytewax), which a longer run amortises. ``--no-startup`` skips those runs.

On a shared machine compare code alternately in one run: ``--against DIR`` runs each flow from
the checkout in DIR as well (``git archive <commit> | tar -x -C DIR``), ``--rounds`` times,
alternating with this one, on the same topic; ``--only w1`` keeps one flow variant. With more
than one round it also prints each path's medians and the load average.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bench_topics import fresh_topics  # noqa: E402
from benchmarks.checkouts import stack_env  # noqa: E402
from core.catalog import catalog  # noqa: E402
from core.contracts import signal_contracts  # noqa: E402
from core.records import RawRecord  # noqa: E402
from core.schemas import RegistrySchemas  # noqa: E402
from core.settings import Settings  # noqa: E402
from igflow.admin import create_topics  # noqa: E402
from igflow.local_cluster import free_loopback_addresses  # noqa: E402
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


def flow(
    settings: Settings,
    namespace: str,
    workers: int,
    processes: int = 1,
    code: Path = REPO,
    forked: bool = False,
) -> tuple[float, float]:
    """Wall and CPU seconds of ``igflow run`` (``-w workers``, or ``processes`` with ``-i/-a``,
    or with ``--processes`` if ``forked``), run from the checkout ``code``."""
    env = stack_env(PYTHONPATH=str(code))
    env.update(
        {
            "IGFLOW_KAFKA_TOPIC": settings.kafka.topic,
            "IGFLOW_KAFKA_DLQ_TOPIC": settings.kafka.dlq_topic,
            "IGFLOW_LAKE_NAMESPACE": namespace,
            "IGFLOW_RUN_LOG_LEVEL": "WARNING",
        }
    )
    command = [sys.executable, "-m", "igflow.cli", "run", "-w", str(workers)]
    addresses = ";".join(free_loopback_addresses(processes))
    if forked:  # one command: its children's CPU is in its rusage (they are waited for)
        command += ["--processes", str(processes)]
        processes = 1
    start = time.perf_counter()
    procs = [
        subprocess.Popen(
            command + (["-i", str(i), "-a", addresses] if processes > 1 else []), cwd=code, env=env
        )
        for i in range(processes)
    ]
    cpus = []
    failed = False
    for p in procs:  # each process's own CPU (os.wait4: its rusage, not all children's)
        _pid, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        failed = failed or p.returncode != 0
        cpus.append(usage.ru_utime + usage.ru_stime)
    if failed:
        msg = "igflow run failed"
        raise RuntimeError(msg)
    wall = time.perf_counter() - start
    PER_PROCESS.append(cpus)
    return wall, sum(cpus)


#: Each flow run's CPU seconds per process, in run order (printed beside the table).
PER_PROCESS: list[list[float]] = []


def appends(settings: Settings, namespace: str) -> dict[str, int]:
    """Per lake table of ``namespace``, its snapshots: the run's appends (a run's tables are
    new, and the flow commits nothing but appends)."""
    lake = catalog(settings)
    return {
        name: len(lake.load_table((namespace, name)).snapshots())
        for _ns, name in lake.list_tables(namespace)
    }


#: The flow variants: label, workers, processes, forked (``--processes``: one command forks the
#: processes after its imports; a checkout without the option skips it).
FLOWS = {
    "w1": ("igflow run → Iceberg", 1, 1, False),
    "w2": ("igflow run -w 2 → Iceberg", 2, 1, False),
    "p2": ("igflow run, 2 processes (-i/-a)", 1, 2, False),
    "f2": ("igflow run --processes 2", 1, 2, True),
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
    parser.add_argument(
        "--no-startup", action="store_true", help="skip the start-up runs (10 signals)"
    )
    args = parser.parse_args()
    tag, settings = fresh_topics()
    tenants = 10
    spec = WorkloadSpec(tenants=tenants, count=args.signals // tenants, seed=1)
    print(f"producing {spec.tenants * spec.count:,} signals to {settings.kafka.topic} …")
    report = produce(settings, spec)
    total = report.total
    print(f"produced {total:,} in {report.seconds:.1f} s ({total / report.seconds:,.0f}/s)")
    small: Settings | None = None
    small_total = 0
    if not args.no_startup:
        small = Settings.load().with_changes(
            "kafka", topic=f"bench.{tag}.startup", dlq_topic=f"bench.{tag}.startup.dlq"
        )
        create_topics(small)
        small_total = produce(small, WorkloadSpec(tenants=tenants, count=1, seed=1)).total

    codes = [("", REPO)] + ([(f" [{args.against}]", args.against)] if args.against else [])
    rows: list[Row] = []
    for r in range(args.rounds):
        plain = baseline(settings, total)
        rows.append(Row("plain consumer + decode (no sink)", plain, None, plain))
        for key in sorted(args.only, key=list(FLOWS).index):
            label, workers, processes, forked = FLOWS[key]
            for suffix, code in codes if r % 2 == 0 else codes[::-1]:  # ABBA: drift cancels
                if forked and not (Path(code) / "igflow" / "local_cluster.py").exists():
                    continue
                namespace = f"bench_{tag}_{key}_{len(rows)}_{r}"
                seconds, cpu = flow(settings, namespace, workers, processes, code, forked)
                _check_landed(settings, namespace, total)
                counts = appends(settings, namespace)
                per = "/".join(f"{c:.1f}" for c in PER_PROCESS[-1])
                print(
                    f"{label + suffix}: {seconds:.2f} s, CPU s per process {per},"
                    f" appends {sum(counts.values())} {counts},"
                    f" load average {os.getloadavg()[0]:.1f}",
                    flush=True,
                )
                startup = None
                if small is not None:
                    startup, _cpu = flow(small, f"{namespace}_s", workers, processes, code, forked)
                    _check_landed(small, f"{namespace}_s", small_total)
                rows.append(Row(label + suffix, seconds, cpu, plain, startup))

    # Each flow against the plain consumer of its own round.
    print(f"\n{_HEADER}")
    results = []
    for row in rows:
        print(row.line(total, small_total))
        results.append(
            {
                "path": row.name,
                "seconds": row.seconds,
                "cpu_seconds": row.cpu,
                "events_per_s": total / row.seconds,
                "startup_seconds": row.startup,
                "past_startup_events_per_s": row.past_startup(total, small_total),
            }
        )
    if args.rounds > 1:
        # Medians per path over the rounds (each flow against its own round's plain consumer).
        print(f"\nmedians of {args.rounds} rounds, load average {os.getloadavg()[0]:.1f} now")
        print(_HEADER)
        for name in dict.fromkeys(row.name for row in rows):
            print(Row.median([row for row in rows if row.name == name]).line(total, small_total))
    out = REPO / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "ingest.json").write_text(json.dumps({"signals": total, "results": results}, indent=2))


_HEADER = (
    f"{'path':<52} {'seconds':>8} {'CPU s':>6} {'events/s':>9} {'vs plain':>8}"
    f" {'start s':>7} {'past start-up':>13} {'vs plain':>8}"
)


@dataclasses.dataclass(frozen=True)
class Row:
    """One path's run: wall and CPU seconds, its round's plain consumer, and the wall seconds of
    the same flow over the 10-signal topic (its start-up), if measured."""

    name: str
    seconds: float
    cpu: float | None
    plain: float
    startup: float | None = None

    def past_startup(self, total: int, small: int) -> float | None:
        """Events/s past start-up: the records beyond the small run's over the extra time."""
        if self.startup is None or self.seconds <= self.startup:
            return None
        return (total - small) / (self.seconds - self.startup)

    def line(self, total: int, small: int) -> str:
        rate, base = total / self.seconds, total / self.plain
        cpu = f"{self.cpu:>6.1f}" if self.cpu is not None else f"{'':>6}"
        text = f"{self.name[:52]:<52} {self.seconds:>8.2f} {cpu} {rate:>9,.0f} {rate / base:>7.2f}x"
        past = self.past_startup(total, small)
        if self.startup is not None:
            text += f" {self.startup:>7.2f}"
        if past is not None:
            text += f" {past:>13,.0f} {past / base:>7.2f}x"
        return text

    @staticmethod
    def median(rows: list[Row]) -> Row:
        """The medians of each figure over ``rows`` (one path's rounds)."""
        cpus = [r.cpu for r in rows if r.cpu is not None]
        starts = [r.startup for r in rows if r.startup is not None]
        return Row(
            rows[0].name,
            statistics.median(r.seconds for r in rows),
            statistics.median(cpus) if cpus else None,
            statistics.median(r.plain for r in rows),
            statistics.median(starts) if starts else None,
        )


if __name__ == "__main__":
    main()
