"""The server under test for ``benchmarks/api.py``: ``igflow serve`` in its own process, the CPU
it and the rest of the machine use, and what it reports (``/metrics`` text, its log).

Also ``say``, the benchmark's timestamped progress line.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from core.settings import Settings

REPO = Path(__file__).resolve().parents[1]
_STARTED = time.perf_counter()


def say(message: str) -> None:
    print(f"[{time.perf_counter() - _STARTED:6.1f} s] {message}", flush=True)


# --- the server ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclasses.dataclass
class Server:
    """A running ``igflow serve``: its process, base URLs and log file."""

    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    metrics_port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def metrics_url(self) -> str:
        """Prometheus, on its own loopback port."""
        return f"http://127.0.0.1:{self.metrics_port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/graphql"

    def cpu_seconds(self) -> float:
        """User + system CPU seconds the server process has used so far (every thread)."""
        stat = Path(f"/proc/{self.proc.pid}/stat").read_text()
        fields = stat.rsplit(")", 1)[1].split()  # fields from the 3rd (state) on
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def serve(settings: Settings, mode: str, env: dict[str, str]) -> Iterator[Server]:
    """``igflow serve --mode MODE`` in its own process group, its output in a temporary file;
    returns once ``/health`` answers, and stops it (SIGTERM, then SIGKILL) after."""
    port, metrics_port = free_port(), free_port()
    environ = dict(os.environ)
    environ.update(
        {
            "IGFLOW_KAFKA_TOPIC": settings.kafka.topic,
            "IGFLOW_KAFKA_DLQ_TOPIC": settings.kafka.dlq_topic,
            "IGFLOW_API_PORT": str(port),
            "IGFLOW_API_METRICS_PORT": str(metrics_port),
            "IGFLOW_API_MODE": mode,
            "IGFLOW_RUN_LOG_LEVEL": "WARNING",
            # The API itself in plain HTTP (its stores' hops follow the stack: TLS by default), so
            # these figures stay comparable with earlier runs; benchmarks/api_tls.py measures
            # what HTTPS adds.
            "IGFLOW_TLS_PLAINTEXT_SERVERS": "true",
            **env,
        }
    )
    with tempfile.NamedTemporaryFile(prefix="igflow-serve-", suffix=".log", delete=False) as f:
        log = Path(f.name)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "igflow.cli", "serve"],
            cwd=REPO,
            env=environ,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(proc, port, log, metrics_port)
    try:
        deadline = time.monotonic() + 30
        with httpx.Client(base_url=server.url, timeout=5.0) as client:
            while True:
                if proc.poll() is not None:
                    msg = f"igflow serve exited {proc.returncode}:\n{_tail(log)}"
                    raise RuntimeError(msg)
                with contextlib.suppress(httpx.TransportError):
                    if client.get("/health").status_code == 200:
                        break
                if time.monotonic() > deadline:
                    msg = f"igflow serve did not answer /health within 30 s:\n{_tail(log)}"
                    raise RuntimeError(msg)
                time.sleep(0.1)
        yield server
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.unlink(missing_ok=True)


def _machine_seconds() -> tuple[float, float]:
    """CPU seconds every process of the machine has used, and the seconds the hypervisor took
    from this machine's CPUs (steal), all CPUs (``/proc/stat``)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    tick = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq) / tick, steal / tick


class CpuMeter:
    """CPU seconds used by the server, by this process, and by everything else on the machine
    (other processes would make the figures noisy: this says how much there was)."""

    def __init__(self, server: Server) -> None:
        self._server = server
        self._start = (server.cpu_seconds(), time.process_time(), *_machine_seconds())
        self._wall = time.perf_counter()

    def read(self) -> dict[str, float]:
        server = self._server.cpu_seconds() - self._start[0]
        client = time.process_time() - self._start[1]
        busy, steal = _machine_seconds()
        return {
            "wall_s": time.perf_counter() - self._wall,
            "server_s": server,
            "generator_s": client,
            "other_s": max(0.0, busy - self._start[2] - server - client),
            "steal_s": steal - self._start[3],
        }


def _tail(log: Path, chars: int = 3000) -> str:
    return log.read_text(errors="replace")[-chars:]


async def settle(server: Server, timeout: float = 60.0) -> None:
    """Wait until the server is idle (under 10% of a core for 0.3 s): it has worked off any
    backlog a saturating phase left, so the next phase starts clean."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = server.cpu_seconds()
        await asyncio.sleep(0.3)
        if server.cpu_seconds() - before < 0.03:
            return


# --- what it reports -------------------------------------------------------------------------


def histogram_quantiles(before: str, after: str, name: str) -> dict[str, float]:
    """p50/p95/p99 of a Prometheus histogram over the interval between two scrapes (linear
    interpolation inside the buckets, as PromQL's ``histogram_quantile``)."""

    def buckets(text: str) -> dict[float, float]:
        out: dict[float, float] = {}
        prefix = f'{name}_bucket{{le="'
        for line in text.splitlines():
            if line.startswith(prefix):
                le, _, value = line[len(prefix) :].partition('"} ')
                out[float(le)] = float(value)
        return out

    first, last = buckets(before), buckets(after)
    cumulative = sorted((le, last[le] - first.get(le, 0.0)) for le in last)
    total = cumulative[-1][1] if cumulative else 0.0
    out: dict[str, float] = {"count": total}
    for q in (0.5, 0.95, 0.99):
        rank, low, below = q * total, 0.0, 0.0
        value = float("nan")
        for le, count in cumulative:
            if count >= rank and total > 0:
                value = (
                    low
                    if le == float("inf")
                    else low
                    + (le - low) * ((rank - below) / (count - below) if count > below else 1.0)
                )
                break
            low, below = le, count
        out[f"p{round(q * 100)}"] = value
    return out


def gauge(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def server_log_summary(log: Path) -> dict[str, int]:
    """Warnings and errors the server logged, by level and message (its first line)."""
    counts: collections.Counter[str] = collections.Counter()
    for line in log.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            if "Traceback" in line or "ERROR" in line:
                counts[f"(plain) {line[:100]}"] += 1
            continue
        if isinstance(entry, dict) and entry.get("level") in {"WARNING", "ERROR", "CRITICAL"}:
            first = str(entry.get("msg", "")).splitlines()[0][:100] if entry.get("msg") else ""
            counts[f"{entry['level']} {entry.get('logger', '')}: {first}"] += 1
    return dict(counts.most_common())
