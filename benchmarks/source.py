"""Kafka source benchmark: CPU per record of the flow's source partitions, against another
checkout in the same run.

    .venv/bin/python benchmarks/source.py --signals 200000 --against /tmp/base --rounds 3

Produces N signals (10 tenants) to a fresh topic of the local stack, then reads every partition
to its end with ``flows.coherence.kafka_source`` (``KafkaTopicSource``, bounded), building each
partition and calling ``next_batch`` until it is done, in a child process per reading: this
checkout's code, then (``--against DIR``) the checkout in DIR, alternately, ``--rounds`` times.
It reports the CPU time of the thread that calls ``next_batch`` (librdkafka's own threads not
counted) and the child's CPU from the first partition built to the last closed (imports and
settings not counted), in µs per record, with medians and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bench_topics import fresh_topics  # noqa: E402
from benchmarks.checkouts import stack_env  # noqa: E402
from core.settings import Settings  # noqa: E402
from igflow.producer import produce  # noqa: E402
from igflow.workload import WorkloadSpec  # noqa: E402

#: Run in the child, with the checkout first on its path: reads the topic, prints JSON.
_READ = """
import json, resource, sys, time
from core.settings import Settings
from flows.coherence import kafka_source

def cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime

source = kafka_source(Settings.load().with_changes("kafka", topic=sys.argv[1]))
records, thread, begin = 0, 0.0, cpu()
for name in source.list_parts():
    part = source.build_part("bench", name, None)
    while True:
        start = time.thread_time()
        try:
            batch = part.next_batch()
        except StopIteration:
            break
        finally:
            thread += time.thread_time() - start
        records += len(batch)
    part.close()
print(json.dumps({"records": records, "thread": thread, "cpu": cpu() - begin}))
"""


def read(code: Path, topic: str) -> dict[str, float]:
    """One reading of ``topic`` by the source of the checkout ``code``."""
    env = stack_env(PYTHONPATH=str(code))
    out = subprocess.run(
        [sys.executable, "-c", _READ, topic], cwd=code, env=env, check=True, capture_output=True
    )
    result: dict[str, float] = json.loads(out.stdout.decode().strip().splitlines()[-1])
    return result


def fresh_topic(signals: int) -> tuple[Settings, int]:
    """The stack's settings naming a fresh topic (and DLQ) holding ``signals`` signals of 10
    tenants, produced now; and how many records were produced."""
    _tag, settings = fresh_topics()
    report = produce(settings, WorkloadSpec(tenants=10, count=signals // 10, seed=1))
    print(f"produced {report.total:,} signals to {settings.kafka.topic}")
    return settings, report.total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--signals", type=int, default=200_000)
    parser.add_argument("--against", type=Path, help="another checkout to run alternately")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    settings, total = fresh_topic(args.signals)
    codes = [("this checkout", REPO)]
    if args.against:
        codes.append((str(args.against), args.against))
    runs: dict[str, list[dict[str, float]]] = {label: [] for label, _ in codes}
    for r in range(args.rounds):
        for label, code in codes if r % 2 == 0 else codes[::-1]:  # ABBA: drift cancels
            result = read(code, settings.kafka.topic)
            assert result["records"] == total, result
            runs[label].append(result)
    print(f"\nload average {os.getloadavg()[0]:.1f}; µs per record, each round and the median")
    print(f"{'source of':<40} {'next_batch thread CPU':>39} {'process CPU':>30}")
    for label, results in runs.items():
        thread = [1e6 * x["thread"] / x["records"] for x in results]
        cpu = [1e6 * x["cpu"] / x["records"] for x in results]
        each = " ".join(f"{x:.2f}" for x in thread)
        each_cpu = " ".join(f"{x:.2f}" for x in cpu)
        print(
            f"{label:<40} {each:>30} | {statistics.median(thread):>6.2f}"
            f" {each_cpu:>22} | {statistics.median(cpu):>5.2f}"
        )


if __name__ == "__main__":
    main()
