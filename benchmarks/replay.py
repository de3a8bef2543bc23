"""Replay-and-verify benchmark: events/s of ``igflow replay`` and ``igflow verify``, in one run.

    .venv/bin/python benchmarks/replay.py --signals 200000

1. Produces N signals (10 tenants, 5% duplicates, 2% invalid) to a fresh topic of the local stack.
2. ``igflow run`` (bounded) lands them in a fresh Iceberg namespace; its ``source.end`` log lines
   give the offset range (not the high watermarks: Tansu reports them wrongly, see DEVELOPERS.md).
3. ``igflow replay`` of the full range into a scratch namespace (``--lake-only``).
4. ``igflow verify --against`` the scratch namespace: by scan (both sides), and ``--from-history``
   (the original's digests from its snapshot summaries, the scratch side scanned).
Each step is a subprocess; wall time includes process start-up and the catalog connection.
Events/s is records produced (signals, duplicates and invalid records) over seconds.
Prints a table; writes ``benchmarks/results/replay.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from igflow.admin import create_topics  # noqa: E402
from igflow.producer import produce  # noqa: E402
from igflow.settings import Settings  # noqa: E402
from igflow.workload import WorkloadSpec  # noqa: E402


def _env(settings: Settings, namespace: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "IGFLOW_KAFKA_TOPIC": settings.kafka.topic,
            "IGFLOW_KAFKA_DLQ_TOPIC": settings.kafka.dlq_topic,
            "IGFLOW_LAKE_NAMESPACE": namespace,
            "IGFLOW_STORES_SINKS": "",
        }
    )
    return env


def igflow(settings: Settings, namespace: str, *args: str) -> tuple[float, str, str]:
    """Run ``igflow ARGS`` to its end: (seconds, stdout, stderr); raises if it fails."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        code = subprocess.run(
            [sys.executable, "-m", "igflow.cli", *args],
            cwd=REPO,
            env=_env(settings, namespace),
            stdout=out,
            stderr=err,
            check=False,
        ).returncode
        seconds = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if code != 0:
        msg = f"igflow {' '.join(args)} exited {code}:\n{stderr[-3000:]}"
        raise RuntimeError(msg)
    return seconds, stdout, stderr


def _ends(stderr: str) -> dict[int, int]:
    """Partition -> end offset, from the run's ``source.end`` log lines."""
    ends: dict[int, int] = {}
    for line in stderr.splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if entry.get("op") == "source.end":
                ends[int(entry["kafka_partition"])] = int(entry["kafka_offset"])
    return ends


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--signals", type=int, default=200_000)
    args = parser.parse_args()
    tag = uuid.uuid4().hex[:8]
    settings = Settings.load().with_changes(
        "kafka", topic=f"bench.{tag}.signals", dlq_topic=f"bench.{tag}.dlq"
    )
    create_topics(settings)
    tenants = 10
    spec = WorkloadSpec(
        tenants=tenants, count=args.signals // tenants, duplicates=0.05, invalid=0.02, seed=1
    )
    print(f"producing {spec.tenants * spec.count:,} signals to {settings.kafka.topic} …")
    report = produce(settings, spec)
    total = report.total
    print(f"produced {total:,} records in {report.seconds:.1f} s")

    original, scratch = f"bench_{tag}_run", f"bench_{tag}_replay"
    rows: list[tuple[str, float]] = []
    seconds, _out, err = igflow(settings, original, "run")
    rows.append(("igflow run → Iceberg", seconds))
    ends = _ends(err)
    assert sum(ends.values()) == total, f"the run read {sum(ends.values())} of {total} records"

    frm = ",".join(f"{p}:0" for p in sorted(ends))
    to = ",".join(f"{p}:{o}" for p, o in sorted(ends.items()))
    seconds, out, _err = igflow(
        settings, original, "replay", "--from", frm, "--to", to, "--into", scratch, "--lake-only"
    )
    replayed = json.loads(out.strip().splitlines()[-1])["rows"]
    assert replayed == total, f"the replay read {replayed} of {total} records"
    rows.append(("igflow replay (full range)", seconds))

    for label, extra in (
        ("igflow verify --against (scan)", []),
        ("igflow verify --from-history", ["--from-history"]),
    ):
        seconds, out, _err = igflow(settings, original, "verify", "--against", scratch, *extra)
        assert "IDENTICAL" in out, out
        rows.append((label, seconds))

    print(f"\n{'step':<34} {'seconds':>8} {'events/s':>10}")
    results = []
    for name, seconds in rows:
        rate = total / seconds
        print(f"{name:<34} {seconds:>8.2f} {rate:>10,.0f}")
        results.append({"step": name, "seconds": seconds, "events_per_s": rate})
    out_dir = REPO / "benchmarks" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "replay.json").write_text(
        json.dumps(
            {"signals": spec.tenants * spec.count, "records": total, "results": results}, indent=2
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
