"""What TLS adds to a new connection to each store: this stack (TLS, the default) against a
plaintext stack (``IGFLOW_TLS_ENABLED=false``) on other ports, in alternating rounds, so the
shared machine's load falls on both alike.

A new connection is the only place TLS costs more than record encryption (the handshake, and
whatever the client does to build its context), so this bounds what TLS adds to anything that
keeps its connections: the count of new connections times the difference printed here.

    python -m dev start && igflow setup                    # the TLS stack (default ports)
    # a plaintext stack on other ports, e.g. a file of `export IGFLOW_...=...` lines with
    # IGFLOW_STACK_DIR, the ports of every store and IGFLOW_TLS_ENABLED=false:
    (source plain.env && python -m dev start)
    python benchmarks/tls_connect.py --plain-env plain.env [--count 25] [--rounds 4]

Each case is one new client, one round trip, closed: Postgres (``SELECT 1``), Redis (``PING``),
Kafka (an admin client's metadata request) and Bolt (``RETURN 1``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

CASES = ("postgres", "redis", "kafka", "bolt")

# Run in a child process per mode, so each sees its own stack's settings as the CLI would.
_CHILD = r"""
import json, sys, time
import psycopg
from confluent_kafka.admin import AdminClient
from neo4j import GraphDatabase, TrustCustomCAs
from core.redis_tls import redis_client
from core.settings import Settings

s = Settings.load()
n = int(sys.argv[1])
out = {case: [] for case in sys.argv[2].split(",")}

def timed(case, fn):
    if case in out:
        t = time.perf_counter()
        fn()
        out[case].append(time.perf_counter() - t)

def pg():
    with psycopg.connect(s.stores.postgres_dsn) as conn:
        conn.execute("SELECT 1").fetchone()

def rd():
    client = redis_client(s.stores.redis_url)  # the product's client (core.redis_tls)
    client.ping()
    client.close()

def kafka():
    AdminClient(s.kafka.client_config()).list_topics(timeout=10)

def bolt():
    st = s.stores
    tls = {}
    if st.neo4j_ca_file:
        tls = {"encrypted": True, "trusted_certificates": TrustCustomCAs(st.neo4j_ca_file)}
    with GraphDatabase.driver(st.neo4j_uri, auth=(st.neo4j_user, st.neo4j_password), **tls) as d:
        d.execute_query("RETURN 1")

for _ in range(n):
    timed("postgres", pg)
    timed("redis", rd)
    timed("kafka", kafka)
    timed("bolt", bolt)
print(json.dumps({"tls": s.tls.enabled, **out}))
"""


def _env_file(path: Path) -> dict[str, str]:
    env = dict(os.environ)
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        env[key.strip()] = value.strip().strip('"')
    return env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--plain-env", required=True, type=Path, help="the plaintext stack's env")
    parser.add_argument("--count", type=int, default=25, help="connections per case per round")
    parser.add_argument("--rounds", type=int, default=4, help="rounds per mode, alternating")
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--json", default="", help="write the medians here too")
    args = parser.parse_args()
    envs = {"tls": dict(os.environ), "plain": _env_file(args.plain_env)}
    samples: dict[str, dict[str, list[float]]] = {m: {} for m in envs}
    for rnd in range(args.rounds):
        for mode in ("tls", "plain") if rnd % 2 == 0 else ("plain", "tls"):
            done = subprocess.run(
                [sys.executable, "-c", _CHILD, str(args.count), args.cases],
                env=envs[mode],
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode != 0:
                raise SystemExit(f"{mode} round failed:\n{done.stderr[-3000:]}")
            result = json.loads(done.stdout.strip().splitlines()[-1])
            if result.pop("tls") != (mode == "tls"):
                raise SystemExit(
                    f"the {mode} environment does not give tls.enabled={mode == 'tls'}"
                )
            for case, values in result.items():
                samples[mode].setdefault(case, []).extend(values)
    cases: dict[str, dict[str, float]] = {}
    print(
        f"new connection + one round trip: median of {args.count * args.rounds} per store and mode"
    )
    print(f"{'store':<10} {'TLS ms':>8} {'plain ms':>9} {'TLS adds':>9} {'ratio':>6}")
    for case in args.cases.split(","):
        tls_ms = statistics.median(samples["tls"][case]) * 1000
        plain_ms = statistics.median(samples["plain"][case]) * 1000
        print(
            f"{case:<10} {tls_ms:>8.1f} {plain_ms:>9.1f} {tls_ms - plain_ms:>+9.1f} "
            f"{tls_ms / plain_ms:>6.2f}"
        )
        cases[case] = {"tls_ms": tls_ms, "plain_ms": plain_ms}
    print("load average", " ".join(f"{x:.1f}" for x in os.getloadavg()))
    if args.json:
        report = {"load_average": os.getloadavg(), "cases": cases}
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
