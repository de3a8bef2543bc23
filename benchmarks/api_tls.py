"""TLS's effect on the API's latency: one ``igflow serve`` over HTTPS and one over plain HTTP
(``tls.plaintext_servers``), side by side on the same stack, asked the same requests in
alternating rounds (so the shared machine's load falls on both alike).

Two cases: a GraphQL read (``tenantCoherence``) on a kept-alive connection, the steady state of
a client (TLS adds record encryption only), and ``GET /health`` on a new connection per
request (TCP and TLS handshake every time: the worst case, a client without keep-alive).
The servers' store hops are the same in both (TLS when the stack runs TLS), so the difference
is the API hop's TLS alone.

Needs the local stack with TLS (the default; not with the opt-out ``IGFLOW_TLS_ENABLED=false``)
and ``igflow setup`` run:

    python -m dev start && igflow setup
    python benchmarks/api_tls.py
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
# Before this folder (sys.path[0]), whose api.py would shadow the api package.
sys.path.insert(0, str(REPO))

from api.jwt_keys import mint_token  # noqa: E402
from core.settings import Settings  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
QUERY = (
    "query TenantCoherence($tenantId: ID!) { tenantCoherence(tenantId: $tenantId) "
    "{ tenantId score status updatedAt } }"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def _serve(plaintext: bool) -> Iterator[str]:
    """``igflow serve`` on a free port; yields its base URL once ``/health`` answers."""
    port = _free_port()
    env = {
        **os.environ,
        "IGFLOW_API_PORT": str(port),
        "IGFLOW_API_METRICS_PORT": str(_free_port()),
        "IGFLOW_API_RATE_LIMIT_RPS": "100000",
        "IGFLOW_API_RATE_LIMIT_BURST": "100000",
        "IGFLOW_TLS_PLAINTEXT_SERVERS": "true" if plaintext else "false",
    }
    log = tempfile.NamedTemporaryFile(prefix="igflow-serve-tls-bench-", suffix=".log")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "igflow.cli", "serve"],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"{'http' if plaintext else 'https'}://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                msg = f"igflow serve exited {proc.returncode}: {Path(log.name).read_text()[-2000:]}"
                raise SystemExit(msg)
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(url + "/health", verify=_verify(), timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise SystemExit("igflow serve did not answer /health within 60 s")
            time.sleep(0.2)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def _verify() -> Any:
    return Settings.load().client_verify()


def _summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "n": len(ordered),
        "mean_ms": round(statistics.fmean(ordered) * 1000, 3),
        "p50_ms": round(ordered[len(ordered) // 2] * 1000, 3),
        "p95_ms": round(ordered[int(len(ordered) * 0.95)] * 1000, 3),
        "p99_ms": round(ordered[int(len(ordered) * 0.99)] * 1000, 3),
    }


def _reads(client: httpx.Client, body: dict[str, Any], token: str, n: int) -> list[float]:
    out = []
    headers = {"authorization": f"Bearer {token}"}
    for _ in range(n):
        began = time.perf_counter()
        response = client.post("/graphql", json=body, headers=headers)
        out.append(time.perf_counter() - began)
        # A tenant without a score yet answers NOT_FOUND after the same Redis and Postgres
        # look-ups; anything else is a failure.
        errors = response.json().get("errors") if response.status_code == 200 else None
        codes = {(e.get("extensions") or {}).get("code") for e in errors or []}
        if response.status_code != 200 or codes - {"NOT_FOUND"}:
            msg = f"read failed: {response.status_code} {response.text[:300]}"
            raise SystemExit(msg)
    return out


def _handshakes(url: str, verify: Any, n: int) -> list[float]:
    out = []
    for _ in range(n):
        began = time.perf_counter()
        with httpx.Client(verify=verify, timeout=10) as client:
            response = client.get(url + "/health")
        out.append(time.perf_counter() - began)
        response.raise_for_status()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="alternating rounds per case")
    parser.add_argument("--reads", type=int, default=200, help="kept-alive reads per round")
    parser.add_argument("--handshakes", type=int, default=50, help="new connections per round")
    parser.add_argument("--tenant", default="tenant-00")
    parser.add_argument("--json", default=str(RESULTS / "api_tls.json"), help="'' to skip")
    args = parser.parse_args()
    settings = Settings.load()
    if not settings.tls.enabled:
        raise SystemExit("needs TLS on (the default): unset IGFLOW_TLS_ENABLED=false")
    token = mint_token(settings, args.tenant, ["coherence:read"], 3600)
    body = {"query": QUERY, "variables": {"tenantId": args.tenant}}
    verify = settings.client_verify()
    samples: dict[str, dict[str, list[float]]] = {
        "https": {"reads": [], "handshakes": []},
        "http": {"reads": [], "handshakes": []},
    }
    with _serve(plaintext=False) as https_url, _serve(plaintext=True) as http_url:
        urls = {"https": https_url, "http": http_url}
        clients = {
            name: httpx.Client(base_url=url, verify=verify, timeout=10)
            for name, url in urls.items()
        }
        for client in clients.values():  # warm up: connection, caches, JIT-free but GC-warm
            _reads(client, body, token, 50)
        for r in range(args.rounds):
            order = ("https", "http") if r % 2 == 0 else ("http", "https")
            for name in order:
                samples[name]["reads"] += _reads(clients[name], body, token, args.reads)
                samples[name]["handshakes"] += _handshakes(urls[name], verify, args.handshakes)
        for client in clients.values():
            client.close()
    result: dict[str, Any] = {
        name: {case: _summary(values) for case, values in cases.items()}
        for name, cases in samples.items()
    }
    for case in ("reads", "handshakes"):
        https, http = result["https"][case], result["http"][case]
        result[f"{case}_ratio"] = {
            key: round(https[key] / http[key], 3) for key in ("mean_ms", "p50_ms", "p95_ms")
        }
        result[f"{case}_added_ms"] = {
            key: round(https[key] - http[key], 3) for key in ("mean_ms", "p50_ms", "p95_ms")
        }
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
