"""Replay-and-verify benchmark: events/s of ``igflow replay`` and ``igflow verify``, in one run.

    .venv/bin/python benchmarks/replay.py --signals 200000

1. Produces N signals (10 tenants, 5% duplicates, 2% invalid) to a fresh topic of the local stack.
2. ``igflow run`` (bounded, the lake only) lands them in a fresh Iceberg namespace; its
   ``source.end`` log lines give the offset range (each partition's high watermark when the
   run started).
3. ``igflow replay`` of the full range into a scratch namespace (``--lake-only``, committing like
   the original), then the same by 2 processes (``-i/-a``, the slower one's wall time), and by
   one command forking 2 processes after its imports (``--processes 2``; this checkout only).
4. ``igflow verify --against`` the scratch namespace: by scan (both sides), and ``--from-history``
   (the original's digests from its snapshot summaries, the scratch side scanned); and by scan
   against the 2-process replay. Each verify reports the byte-identical data files per table.
Each step is a subprocess; wall time includes process start-up and the catalog connection.
Events/s is records produced (signals, duplicates and invalid records) over seconds; CPU
seconds are the step's processes' own (user + system), the steadier figure on a shared machine.
Prints two tables; writes ``benchmarks/results/replay.json``.

    .venv/bin/python benchmarks/replay.py --signals 200000 --against /tmp/base --rounds 3

replays the run's range (step 3) with ``--against``'s code (``git archive main | tar -x -C
/tmp/base``) and this checkout's alternately, ``--rounds`` times each, 1 process then 2: each
round's wall and CPU seconds, then the medians per side in the table; step 4 verifies this
checkout's last replays.

    .venv/bin/python benchmarks/replay.py --compare-verify TAG --base /tmp/base --rounds 3

runs only the verifies of a previous run (its namespaces ``bench_TAG_*``) with the code of
``--base`` (``git archive ac564ba | tar -x -C /tmp/base``) and this checkout's, alternately:
median wall and CPU seconds (user + system of the process) per side.

    .venv/bin/python benchmarks/replay.py --compare-replay TAG --base /tmp/base --rounds 3

replays a previous run's whole topic (lake only, committing like ``bench_TAG_run``) with either
code alternately, each into a fresh namespace: median wall and CPU seconds; then verifies this
checkout's last replay against the run (every data file byte-identical).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bench_topics import demo_workload, fresh_topics, with_topics  # noqa: E402
from benchmarks.checkouts import stack_env  # noqa: E402
from core.settings import Settings  # noqa: E402
from igflow.local_cluster import free_loopback_addresses  # noqa: E402
from igflow.producer import produce  # noqa: E402


def _env(settings: Settings, namespace: str) -> dict[str, str]:
    env = stack_env()
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
    return igflow_all(settings, namespace, [list(args)])[0]


#: CPU seconds (user + system) of the last igflow_all's processes, summed.
LAST_CPU = [0.0]


def igflow_all(
    settings: Settings, namespace: str, commands: list[list[str]], cwd: Path = REPO
) -> list[tuple[float, str, str]]:
    """Run several ``igflow`` commands at once (a cluster's processes), each to its end:
    (seconds since the start of all, stdout, stderr) each; raises if any fails. ``cwd``: the
    checkout whose code runs (another commit's copy, for a comparison)."""
    with contextlib.ExitStack() as stack:
        files = [
            (
                stack.enter_context(tempfile.TemporaryFile()),
                stack.enter_context(tempfile.TemporaryFile()),
            )
            for _ in commands
        ]
        start = time.perf_counter()
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "igflow.cli", *args],
                cwd=cwd,
                env=_env(settings, namespace),
                stdout=out,
                stderr=err,
            )
            for args, (out, err) in zip(commands, files, strict=True)
        ]
        results = []
        LAST_CPU[0] = 0.0
        for args, proc, (out, err) in zip(commands, procs, files, strict=True):
            _pid, status, usage = os.wait4(proc.pid, 0)
            code = proc.returncode = os.waitstatus_to_exitcode(status)
            seconds = time.perf_counter() - start
            LAST_CPU[0] += usage.ru_utime + usage.ru_stime
            out.seek(0)
            err.seek(0)
            stdout, stderr = out.read().decode(), err.read().decode()
            if code != 0:
                msg = f"igflow {' '.join(args)} exited {code}:\n{stderr[-3000:]}"
                raise RuntimeError(msg)
            results.append((seconds, stdout, stderr))
    return results


def _addresses(n: int) -> str:
    return ";".join(free_loopback_addresses(n))


def _files(report: str) -> dict[str, list[int]]:
    """``igflow verify``'s data files per table: [byte-identical, of]."""
    found: dict[str, list[int]] = {}
    for line in report.split("per table", 1)[1].splitlines()[1:]:
        words = line.split()
        if len(words) >= 7 and words[5] == "of" and int(words[6]):
            found[words[0]] = [int(words[4]), int(words[6])]
    return found


def _ends(stderr: str) -> dict[int, int]:
    """Partition -> end offset, from the run's ``source.end`` log lines."""
    ends: dict[int, int] = {}
    for line in stderr.splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if entry.get("op") == "source.end":
                ends[int(entry["kafka_partition"])] = int(entry["kafka_offset"])
    return ends


def compare_verify(settings: Settings, tag: str, base: Path, rounds: int) -> None:
    """``igflow verify`` of a previous run's namespaces (``bench_<tag>_*``), by the code of
    ``base`` and of this checkout alternately: median wall and CPU seconds, and rows/s."""
    records = json.loads((REPO / "benchmarks" / "results" / "replay.json").read_text())["records"]
    original, scratch = f"bench_{tag}_run", f"bench_{tag}_replay"
    steps = (("verify --against (scan)", []), ("verify --from-history", ["--from-history"]))
    seen: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for _ in range(rounds):
        for label, extra in steps:
            for side, cwd in (("base", base), ("new", REPO)):
                argv = ["verify", "--against", scratch, *extra]
                seconds, out, _err = igflow_all(settings, original, [argv], cwd=cwd)[0]
                assert "IDENTICAL" in out, out
                seen.setdefault((label, side), []).append((seconds, LAST_CPU[0]))
    print(f"\n{records:,} records, {rounds} rounds alternately, medians")
    print(f"{'step':<26} {'side':<5} {'wall s':>7} {'cpu s':>7} {'rows/s':>8}")
    results = []
    for (label, side), runs in seen.items():
        wall = statistics.median(r[0] for r in runs)
        cpu = statistics.median(r[1] for r in runs)
        print(f"{label:<26} {side:<5} {wall:>7.2f} {cpu:>7.2f} {records / wall:>8,.0f}")
        results.append({"step": label, "side": side, "wall_s": wall, "cpu_s": cpu})
    out_dir = REPO / "benchmarks" / "results"
    (out_dir / "replay_verify_compare.json").write_text(json.dumps(results, indent=2) + "\n")


def compare_replay(settings: Settings, tag: str, base: Path, rounds: int) -> None:
    """``igflow replay --lake-only`` of a previous run's whole topic (``bench.<tag>.signals``,
    committing like ``bench_<tag>_run``), by the code of ``base`` and of this checkout
    alternately, each into a fresh namespace: median wall and CPU seconds, and events/s. Then
    ``igflow verify`` of this checkout's last replay against the run: its data files must all be
    byte-identical."""
    records = json.loads((REPO / "benchmarks" / "results" / "replay.json").read_text())["records"]
    settings = with_topics(settings, tag)
    original = f"bench_{tag}_run"
    seen: dict[str, list[tuple[float, float]]] = {}
    last = ""
    for _ in range(rounds):
        for side, cwd in (("base", base), ("new", REPO)):
            into = f"bench_{tag}_{side}_{uuid.uuid4().hex[:6]}"
            argv = ["replay", "--into", into, "--lake-only"]
            seconds, out, _err = igflow_all(settings, original, [argv], cwd=cwd)[0]
            rows = json.loads(out.strip().splitlines()[-1])["rows"]
            assert rows == records, f"the replay read {rows} of {records} records"
            seen.setdefault(side, []).append((seconds, LAST_CPU[0]))
            last = into if side == "new" else last
    print(f"\n{records:,} records, {rounds} rounds alternately, medians (load {_load()})")
    print(f"{'side':<5} {'wall s':>7} {'cpu s':>7} {'events/s':>9}   rounds (wall/cpu)")
    results = []
    for side, runs in seen.items():
        wall = statistics.median(r[0] for r in runs)
        cpu = statistics.median(r[1] for r in runs)
        each = " ".join(f"{w:.2f}/{c:.2f}" for w, c in runs)
        print(f"{side:<5} {wall:>7.2f} {cpu:>7.2f} {records / wall:>9,.0f}   {each}")
        results.append({"side": side, "wall_s": wall, "cpu_s": cpu, "rounds": runs})
    _s, out, _e = igflow(settings, original, "verify", "--against", last)
    assert "IDENTICAL" in out, out
    files = _files(out)
    print("data files byte-identical (this checkout's last replay):", files)
    assert all(same == total for same, total in files.values()), files
    out_dir = REPO / "benchmarks" / "results"
    (out_dir / "replay_compare.json").write_text(json.dumps(results, indent=2) + "\n")


def _against(
    base: Path,
    rounds: int,
    tag: str,
    replay_one: Callable[[str, Path], tuple[float, float]],
    replay_two: Callable[[str, Path], tuple[float, float]],
) -> list[tuple[str, float, float]]:
    """The replays of the run's range by ``base``'s code and this checkout's, alternately,
    ``rounds`` times each (1 process, then 2): median rows ``(step, seconds, cpu s)`` per side.
    This checkout's last replays are ``bench_<tag>_replay`` and ``bench_<tag>_replay_p2``, which
    the verifies then check."""
    seen: dict[str, list[tuple[float, float]]] = {}
    for n in range(rounds):
        last = n == rounds - 1
        for side, cwd in (("base", base), ("new", REPO)):
            mine = f"bench_{tag}_replay" if side == "new" and last else f"bench_{tag}_{side}{n}"
            for step, into, replay in (
                (f"igflow replay ({side})", mine, replay_one),
                (f"igflow replay, 2 processes ({side})", f"{mine}_p2", replay_two),
            ):
                wall, cpu = replay(into, cwd)
                seen.setdefault(step, []).append((wall, cpu))
                print(f"round {n + 1}: {step} {wall:.2f} s, {cpu:.2f} CPU s (load {_load()})")
    print(f"\nreplays, {rounds} rounds alternately against {base}, each (wall s, cpu s):")
    out = []
    for step, runs in seen.items():
        print(f"  {step:<40} " + " ".join(f"{w:.2f}/{c:.2f}" for w, c in runs))
        median = (
            f"{step} median",
            statistics.median(w for w, _c in runs),
            statistics.median(c for _w, c in runs),
        )
        out.append(median)
    return out


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--signals", type=int, default=200_000)
    parser.add_argument(
        "--compare-verify",
        metavar="TAG",
        help="only verify a previous run's namespaces (bench_TAG_*), --base against this code",
    )
    parser.add_argument(
        "--compare-replay",
        metavar="TAG",
        help="only replay a previous run's topic (bench.TAG.signals), --base against this code",
    )
    parser.add_argument("--base", type=Path, help="another commit's copy (git archive)")
    parser.add_argument(
        "--against",
        type=Path,
        metavar="BASE",
        help="replay the run's range with BASE's code (a git archive) and this checkout's "
        "alternately, --rounds times each (1 and 2 processes): medians",
    )
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.compare_replay:
        if args.base is None:
            parser.error("--compare-replay needs --base")
        compare_replay(Settings.load(), args.compare_replay, args.base.resolve(), args.rounds)
        return
    if args.compare_verify:
        if args.base is None:
            parser.error("--compare-verify needs --base")
        compare_verify(Settings.load(), args.compare_verify, args.base.resolve(), args.rounds)
        return
    tag, settings = fresh_topics()
    tenants = 10
    # Event times end near now, as the other benchmarks' do: the workload's "future_ts" records
    # are 10 days ahead of their neighbours, which from a start in the past is not in the future.
    # Validate then passed them, and dedupe's horizon jumped 10 days: 208,770 of 214,109 records
    # went to the quarantine as TOO_LATE, and the benchmark timed that instead of landing signals.
    spec = demo_workload(args.signals, tenants=tenants)
    print(f"producing {spec.tenants * spec.count:,} signals to {settings.kafka.topic} …")
    report = produce(settings, spec)
    total = report.total
    print(f"produced {total:,} records in {report.seconds:.1f} s")

    original, scratch = f"bench_{tag}_run", f"bench_{tag}_replay"
    print(f"namespaces bench_{tag}_* (--compare-verify {tag})")
    rows: list[tuple[str, float, float]] = []
    seconds, _out, err = igflow(settings, original, "run")
    rows.append(("igflow run (lake only)", seconds, LAST_CPU[0]))
    ends = _ends(err)
    assert sum(ends.values()) == total, f"the run read {sum(ends.values())} of {total} records"

    frm = ",".join(f"{p}:0" for p in sorted(ends))
    to = ",".join(f"{p}:{o}" for p, o in sorted(ends.items()))
    span = ("--from", frm, "--to", to, "--lake-only")

    def replay_one(into: str, cwd: Path = REPO) -> tuple[float, float]:
        seconds, out, _err = igflow_all(
            settings, original, [["replay", *span, "--into", into]], cwd=cwd
        )[0]
        replayed = json.loads(out.strip().splitlines()[-1])["rows"]
        assert replayed == total, f"the replay read {replayed} of {total} records"
        return seconds, LAST_CPU[0]

    def replay_two(into: str, cwd: Path = REPO) -> tuple[float, float]:
        addresses = _addresses(2)
        ran = igflow_all(
            settings,
            original,
            [["replay", *span, "--into", into, "-i", str(i), "-a", addresses] for i in range(2)],
            cwd=cwd,
        )
        replayed = sum(json.loads(out.strip().splitlines()[-1])["rows"] for _s, out, _e in ran)
        assert replayed == total, f"the 2-process replay read {replayed} of {total} records"
        return max(s for s, _o, _e in ran), LAST_CPU[0]

    def replay_forked(into: str) -> tuple[float, float]:
        seconds, out, _err = igflow_all(
            settings, original, [["replay", *span, "--into", into, "--processes", "2"]]
        )[0]
        reports = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        replayed = sum(r["rows"] for r in reports)
        assert replayed == total, f"the forked replay read {replayed} of {total} records"
        return seconds, LAST_CPU[0]

    scratch_p2 = f"bench_{tag}_replay_p2"
    scratch_f2 = f"bench_{tag}_replay_f2"
    if args.against is None:
        rows.append(("igflow replay (full range)", *replay_one(scratch)))
        rows.append(("igflow replay, 2 processes", *replay_two(scratch_p2)))
    else:
        rows.extend(_against(args.against.resolve(), args.rounds, tag, replay_one, replay_two))
    # One command forking 2 processes after its imports (this checkout only).
    rows.append(("igflow replay --processes 2", *replay_forked(scratch_f2)))

    files: dict[str, dict[str, list[int]]] = {}
    for label, against, extra in (
        ("igflow verify --against (scan)", scratch, []),
        ("igflow verify --from-history", scratch, ["--from-history"]),
        ("igflow verify, the 2-process replay", scratch_p2, []),
        ("igflow verify, the forked replay", scratch_f2, []),
    ):
        seconds, out, _err = igflow(settings, original, "verify", "--against", against, *extra)
        assert "IDENTICAL" in out, out
        rows.append((label, seconds, LAST_CPU[0]))
        files[against] = _files(out)

    print(f"\n{'step':<42} {'seconds':>8} {'events/s':>10} {'cpu s':>7}   (load {_load()})")
    results = []
    for name, seconds, cpu in rows:
        rate = total / seconds
        print(f"{name:<42} {seconds:>8.2f} {rate:>10,.0f} {cpu:>7.2f}")
        results.append({"step": name, "seconds": seconds, "events_per_s": rate, "cpu_s": cpu})
    print(
        f"\n{'data files byte-identical':<26} {'1-process replay':>18} {'2-process replay':>18}"
        f" {'forked replay':>18}"
    )
    for table in files[scratch]:
        one, two = files[scratch][table], files[scratch_p2].get(table, [0, 0])
        forked = files[scratch_f2].get(table, [0, 0])
        print(
            f"{table:<26} {f'{one[0]} of {one[1]}':>18} {f'{two[0]} of {two[1]}':>18}"
            f" {f'{forked[0]} of {forked[1]}':>18}"
        )
    out_dir = REPO / "benchmarks" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "replay.json").write_text(
        json.dumps(
            {
                "signals": spec.tenants * spec.count,
                "records": total,
                "results": results,
                "files_byte_identical": {
                    "replay": files[scratch],
                    "replay_2_processes": files[scratch_p2],
                    "replay_forked_2_processes": files[scratch_f2],
                },
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
