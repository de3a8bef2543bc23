"""PSI benchmark: igflow's OPRF PSI beside openmined-psi, in one run, same machine, same inputs.

    .venv/bin/python benchmarks/psi.py                 # 1k client items vs 1k, 10k, 100k
    .venv/bin/python benchmarks/psi.py --servers 1000 --reps 9 --threads 1,2

For each server set size and mode (full intersection, cardinality) it measures one *roundtrip*:
the client's request, the server's evaluation and the client's matching, over wire bytes (ours:
``psi.messages``, with both policy checks; openmined-psi: its protobuf messages, serialised and
parsed). The server's table (ours) / setup message (openmined-psi, ``DataStructure.RAW``, so both
sides match exactly) is built once beforehand and cached, as in service: its build time and size
are reported separately. Repetitions are interleaved across implementations (at least 7); the
table shows min and median milliseconds, the bytes a roundtrip exchanges, and the ratio
``openmined median / ours median`` at equal thread counts (openmined-psi is single-threaded: its
CPU time equals its wall time, measured below). Writes ``benchmarks/results/psi.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from psi import (  # noqa: E402
    Agreement,
    Caller,
    Cardinality,
    ClientConfig,
    GroupBatch,
    Intersection,
    PolicyConfig,
    PsiClient,
    PsiMode,
    PsiPolicy,
    PsiServer,
    SelectorSet,
    ServerConfig,
)

try:
    import private_set_intersection.python as om

    OPENMINED: str | None = None
except ImportError as exc:  # reported in the output, never faked
    om = None
    OPENMINED = f"openmined-psi not installed ({exc}); no baseline in this run"

MODES = (PsiMode.FULL_INTERSECTION, PsiMode.INTERSECTION_CARDINALITY)
SHORT = {PsiMode.FULL_INTERSECTION: "full", PsiMode.INTERSECTION_CARDINALITY: "cardinality"}


class Ours:
    """Our server and client in one process, counting wire bytes."""

    def __init__(self, server_items: list[str], threads: int, policy: PsiPolicy) -> None:
        self.batch = GroupBatch(threads)
        self.threads = threads
        started = time.perf_counter()
        self.server = PsiServer(
            SelectorSet.of(server_items), policy, ServerConfig(), batch=self.batch
        )
        self.setup_bytes = {mode: len(self.server.table(mode)[1]) for mode in MODES}
        self.setup_seconds = time.perf_counter() - started
        self.bytes = 0
        caller = Caller("bench-client", "US")

        def transport(body: bytes) -> bytes:
            reply = self.server.handle(body, caller)
            self.bytes += len(body) + len(reply)
            return reply

        config = ClientConfig("bench-server", "US")
        self.client = PsiClient(transport, policy, config, batch=self.batch)
        for mode in MODES:  # fetch and cache the tables: roundtrips below run against the cache
            self.client.table(mode)

    def roundtrip(self, items: list[str], mode: PsiMode) -> tuple[int, int]:
        """(matches, bytes exchanged) for one roundtrip."""
        self.bytes = 0
        outcome = self.client.intersect(items, mode)
        if isinstance(outcome, Intersection):
            return len(outcome.items), self.bytes
        if isinstance(outcome, Cardinality):
            return outcome.count, self.bytes
        raise RuntimeError(outcome)


class OpenMined:
    """openmined-psi's client and server (ECDH on P-256), one pair per mode."""

    threads = 1

    def __init__(self, server_items: list[str], client_size: int) -> None:
        assert om is not None
        self.pairs: dict[PsiMode, tuple[Any, Any, Any]] = {}
        self.setup_bytes: dict[PsiMode, int] = {}
        started = time.perf_counter()
        for mode in MODES:
            reveal = mode is PsiMode.FULL_INTERSECTION
            client = om.client.CreateWithNewKey(reveal)
            server = om.server.CreateWithNewKey(reveal)
            setup = server.CreateSetupMessage(1e-9, client_size, server_items, om.DataStructure.RAW)
            self.pairs[mode] = (client, server, setup)
            self.setup_bytes[mode] = len(setup.SerializeToString())
        self.setup_seconds = time.perf_counter() - started

    def roundtrip(self, items: list[str], mode: PsiMode) -> tuple[int, int]:
        assert om is not None
        client, server, setup = self.pairs[mode]
        request = client.CreateRequest(items).SerializeToString()
        response = server.ProcessRequest(om.Request.FromString(request)).SerializeToString()
        parsed = om.Response.FromString(response)
        if mode is PsiMode.FULL_INTERSECTION:
            found = len(client.GetIntersection(setup, parsed))
        else:
            found = client.GetIntersectionSize(setup, parsed)
        return found, len(request) + len(response)


Impl = Ours | OpenMined


def measure(
    impls: dict[str, Impl], items: list[str], expect: int, reps: int
) -> dict[tuple[str, PsiMode], dict[str, Any]]:
    """Interleaved repetitions: every implementation and mode once per round."""
    runs: dict[tuple[str, PsiMode], list[float]] = {}
    sizes: dict[tuple[str, PsiMode], int] = {}
    cpu: dict[tuple[str, PsiMode], float] = {}
    for name, impl in impls.items():  # warm-up, and a correctness check
        for mode in MODES:
            found, _ = impl.roundtrip(items, mode)
            if found != expect:
                raise RuntimeError(f"{name} {mode}: {found} != {expect}")
    for _ in range(reps):
        for name, impl in impls.items():
            for mode in MODES:
                c0, t0 = time.process_time(), time.perf_counter()
                _, size = impl.roundtrip(items, mode)
                wall = time.perf_counter() - t0
                key = (name, mode)
                runs.setdefault(key, []).append(wall)
                cpu[key] = cpu.get(key, 0.0) + time.process_time() - c0
                sizes[key] = size
    return {
        key: {
            "min_ms": min(times) * 1000,
            "median_ms": statistics.median(times) * 1000,
            "cpu_per_wall": cpu[key] / sum(times),
            "bytes": sizes[key],
        }
        for key, times in runs.items()
    }


def machine_busy() -> float:
    """Seconds of CPU the whole machine has spent busy (all processes), from /proc/stat."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    except (OSError, ValueError):
        return 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def policy() -> PsiPolicy:
    agreement = {"min_batch": 1, "max_requests": 1_000_000}
    return PsiPolicy.load(
        PolicyConfig(
            agreements=(
                Agreement("bench-client", **agreement),  # type: ignore[arg-type]
                Agreement("bench-server", **agreement),  # type: ignore[arg-type]
            )
        )
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--client", type=int, default=1000, help="client items (default 1000)")
    parser.add_argument("--servers", default="1000,10000,100000", help="server set sizes")
    parser.add_argument("--reps", type=int, default=7, help="interleaved repetitions (>= 7)")
    parser.add_argument("--threads", default="1,2", help="thread counts for ours")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "psi.json")
    args = parser.parse_args(argv)
    reps = max(7, args.reps)
    threads = [int(t) for t in args.threads.split(",")]
    pol = policy()
    if OPENMINED:
        print(f"NOTE: {OPENMINED}")
    # Half the client's items are in every server set (which holds selector-0 .. selector-n-1).
    expect = args.client // 2
    items = [f"selector-{i}" for i in range(expect)] + [
        f"elsewhere-{i}" for i in range(args.client - expect)
    ]
    random.Random(7).shuffle(items)
    rows: list[dict[str, Any]] = []
    busy0, own0, wall0 = machine_busy(), time.process_time(), time.perf_counter()
    header = (
        f"{'server':>7} {'mode':<11} {'impl':<16} {'thr':>3} {'min ms':>8} {'median ms':>9} "
        f"{'cpu/wall':>8} {'rt bytes':>9} {'table B':>10} {'setup s':>7} {'om/ours':>7}"
    )
    print(header)
    print("-" * len(header))
    for n_server in [int(n) for n in args.servers.split(",")]:
        server_items = [f"selector-{i}" for i in range(n_server)]
        impls: dict[str, Impl] = {f"igflow psi {t}t": Ours(server_items, t, pol) for t in threads}
        if om is not None:
            impls["openmined-psi"] = OpenMined(server_items, args.client)
        results = measure(impls, items, min(expect, n_server), reps)
        for mode in MODES:
            baseline = results.get(("openmined-psi", mode))
            for name, impl in impls.items():
                r = results[(name, mode)]
                ratio = ""
                if baseline is not None and name != "openmined-psi":
                    ratio = f"{baseline['median_ms'] / r['median_ms']:.2f}x"
                row = {
                    "server_items": n_server,
                    "client_items": args.client,
                    "mode": mode.value,
                    "impl": name,
                    "threads": impl.threads,
                    **r,
                    "table_bytes": impl.setup_bytes[mode],
                    "setup_seconds": impl.setup_seconds,
                    "openmined_over_ours": ratio,
                }
                rows.append(row)
                print(
                    f"{n_server:>7} {SHORT[mode]:<11} {name:<16} {impl.threads:>3} "
                    f"{r['min_ms']:>8.1f} {r['median_ms']:>9.1f} {r['cpu_per_wall']:>8.2f} "
                    f"{r['bytes']:>9} {impl.setup_bytes[mode]:>10} {impl.setup_seconds:>7.1f} "
                    f"{ratio:>7}"
                )
        for impl in impls.values():
            if isinstance(impl, Ours):
                impl.batch.close()
    print(
        f"\n{reps} interleaved repetitions; {args.client} client items, {expect} of them in "
        "each server set. rt bytes = request + response of one roundtrip; table B = the server's "
        "published table (ours: 21-byte tags; openmined-psi: RAW setup), fetched once per key; "
        "setup s = building both modes' tables. om/ours = openmined median / ours median "
        "(openmined-psi runs one thread: compare the 1t rows for equal thread counts)."
    )
    # Other processes (on a shared machine) competing for the same cores make medians noisy.
    others = (machine_busy() - busy0 - (time.process_time() - own0)) / (time.perf_counter() - wall0)
    print(f"Other processes kept {max(0.0, others):.2f} cores busy on average during the run.")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {"reps": reps, "openmined": OPENMINED, "other_cores_busy": others, "rows": rows},
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
