"""TLS's cost on the metrics hop: one ``/metrics`` port over HTTPS (``core.metrics.start_server``
with a certificate from ``dev/tls.py``) and one over plain HTTP, in this process, scraped the
way Prometheus scrapes them: a new connection per scrape (the server speaks HTTP/1.0), so every
HTTPS scrape pays a full handshake. Rounds alternate between the two, so the shared machine's
load falls on both alike; the report gives each side's median and p95 per scrape, their ratio,
and the load average before and after. Needs no stack (a throwaway CA in a temp folder).

    python benchmarks/metrics_tls.py [--rounds 20] [--scrapes 50]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import core.metrics  # noqa: E402, F401  (registers the flow's metrics: a realistic page)
from core.metrics import start_server  # noqa: E402
from dev import tls as stack_tls  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _scrape(url: str, verify: ssl.SSLContext | bool, count: int) -> list[float]:
    times = []
    for _ in range(count):
        began = time.perf_counter()
        # A new client per scrape: a new TCP connection (and TLS handshake), as Prometheus gets.
        with httpx.Client(verify=verify, timeout=10.0) as client:
            response = client.get(url)
        times.append(time.perf_counter() - began)
        response.raise_for_status()
    return times


def _summary(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p95_ms": round(ordered[int(len(ordered) * 0.95) - 1] * 1000, 2),
        "mean_ms": round(statistics.fmean(ordered) * 1000, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--scrapes", type=int, default=50, help="scrapes per side per round")
    parser.add_argument("--json", default=str(RESULTS / "metrics_tls.json"), help="'' to skip")
    args = parser.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="metrics-tls-") as folder:
        tls_dir = stack_tls.ensure(Path(folder))
        certificate = {
            "ssl_certfile": str(tls_dir / stack_tls.CERT_FILE),
            "ssl_keyfile": str(tls_dir / stack_tls.KEY_FILE),
        }
        verify = ssl.create_default_context(cafile=str(tls_dir / stack_tls.CA_FILE))
        http_port, https_port = _free_port(), _free_port()
        servers = [
            start_server("127.0.0.1", http_port, {}),
            start_server("127.0.0.1", https_port, certificate),
        ]
        # The same ready context on both sides: with verify=True httpx would load the system's
        # CA bundle for every client (~70 ms here), which would be all the HTTP side measured.
        sides: dict[str, tuple[str, ssl.SSLContext | bool]] = {
            "http": (f"http://127.0.0.1:{http_port}/metrics", verify),
            "https": (f"https://127.0.0.1:{https_port}/metrics", verify),
        }
        size = len(httpx.get(sides["http"][0]).content)
        times: dict[str, list[float]] = {"http": [], "https": []}
        try:
            for _ in (0, 1):  # warm-up, not counted
                for url, check in sides.values():
                    _scrape(url, check, 5)
            for i in range(args.rounds):
                order = ("http", "https") if i % 2 == 0 else ("https", "http")
                for side in order:
                    url, check = sides[side]
                    times[side] += _scrape(url, check, args.scrapes)
        finally:
            for server, thread in servers:
                server.shutdown()
                server.server_close()
                thread.join(timeout=5)
    http, https = _summary(times["http"]), _summary(times["https"])
    result: dict[str, Any] = {
        "benchmark": "metrics_tls",
        "scrapes_per_side": len(times["http"]),
        "page_bytes": size,
        "http": http,
        "https": https,
        "https_over_http_p50": round(https["p50_ms"] / http["p50_ms"], 2),
        "https_minus_http_p50_ms": round(https["p50_ms"] - http["p50_ms"], 2),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "cpus": os.cpu_count(),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        RESULTS.mkdir(exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
