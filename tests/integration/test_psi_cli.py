"""``igflow psi serve`` and ``igflow psi match`` as an operator runs them: two processes over
loopback, a CSV or an Iceberg table (SQLite catalog) on the server's side. No service stack."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from pyiceberg.catalog import Catalog

from core.settings import Settings
from tests.ports import free_port
from tests.unit.test_psi_commands import selector_table, write_csv

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SERVER = [f"user{i}@example.org" for i in range(150)]
#: The client's set, in its own order (descending), overlapping the server's in 50 selectors.
CLIENT = [f"user{i}@example.org" for i in range(219, 99, -1)]
EXPECTED = [s for s in CLIENT if s in set(SERVER)]


def _healthy(
    proc: subprocess.Popen[bytes], url: str, env: dict[str, str], timeout_s: float = 20.0
) -> bool:
    """Poll ``url``'s ``/healthz`` (HTTPS verified against the CA when ``env`` turns TLS on)
    until it answers, the process dies or the time is up."""
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=1.0, verify=Settings.load(env).client_verify()) as http:
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if http.get(f"{url}/healthz").status_code == 200:
                    return True
            except httpx.TransportError:
                pass
            time.sleep(0.1)
    return False


@contextmanager
def serving(
    logs: Path, env: dict[str, str], *args: str, stop: int = signal.SIGTERM
) -> Iterator[dict[str, Any]]:
    """Run ``igflow psi serve ARGS`` on a free port; yield its start line; stop it with ``stop``
    and check it exits 0. Its standard error goes to ``logs``."""
    port = free_port()
    command = [sys.executable, "-m", "igflow.cli", "psi", "serve", *args, "--port", str(port)]
    with logs.open("wb") as err:
        proc = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=err, start_new_session=True
        )
        try:
            # The start line (its URL: https:// with TLS on) comes before the server listens.
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line, f"psi serve did not start:\n{logs.read_text()[-3000:]}"
            started: dict[str, Any] = json.loads(line)
            assert _healthy(proc, started["url"], env), (
                f"psi serve did not answer:\n{logs.read_text()[-3000:]}"
            )
            yield started
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, stop)
            try:
                proc.communicate(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()
    assert proc.returncode == 0, logs.read_text()[-3000:]


def match(env: dict[str, str], url: str, csv: Path, *args: str) -> tuple[int, Any]:
    """Run ``igflow psi match``; its exit code and the one JSON line it printed."""
    command = [sys.executable, "-m", "igflow.cli", "psi", "match", "--server", url]
    done = subprocess.run(
        [*command, "--csv", str(csv), *args], cwd=REPO, env=env, capture_output=True, timeout=60
    )
    lines = done.stdout.decode().splitlines()
    assert len(lines) == 1, done.stderr.decode()[-3000:]
    return done.returncode, json.loads(lines[0])


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The server's CSV (two columns), the client's (one column) and a tiny client set."""
    folder = tmp_path_factory.mktemp("psi")
    write_csv(folder / "server.csv", ("kind", "selector"), [("email", s) for s in SERVER])
    write_csv(folder / "client.csv", ("selector",), [(s,) for s in CLIENT])
    write_csv(folder / "tiny.csv", ("selector",), [(s,) for s in SERVER[:5]])
    # The client agrees to small batches with the server; the server keeps its minimum of 100.
    modes = ["full_intersection", "intersection_cardinality"]
    server = {"modes": modes, "regions": ["US"], "min_batch": 1, "max_requests": 60}
    lenient = {"agreements": {"server": server}, "min_batch": 1, "residency_allows": {"US": ["US"]}}
    (folder / "lenient.json").write_text(json.dumps(lenient), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def csv_server(files: Path) -> Iterator[dict[str, Any]]:
    args = ("--csv", str(files / "server.csv"), "--column", "selector")
    with serving(files / "serve.log", dict(os.environ), *args) as started:
        yield started


def test_the_start_line(csv_server: dict[str, Any]) -> None:
    scheme = "https" if Settings.load().server_tls() else "http"
    assert csv_server["url"].startswith(f"{scheme}://127.0.0.1:")
    assert csv_server["set_size"] == len(SERVER)
    assert abs(csv_server["epoch"] - time.time() // 3600) <= 1  # the default hour-long epochs


def test_both_modes_equal_the_plaintext_intersection(
    csv_server: dict[str, Any], files: Path
) -> None:
    env = dict(os.environ)
    full = match(env, csv_server["url"], files / "client.csv")
    assert full == (0, {"mode": "full_intersection", "matches": EXPECTED})
    card = match(env, csv_server["url"], files / "client.csv", "--mode", "intersection_cardinality")
    assert card == (0, {"mode": "intersection_cardinality", "count": len(EXPECTED)})


@pytest.mark.parametrize(
    ("csv", "args", "reason"),
    [
        ("client.csv", ["--region", "GB"], "POLICY_GEO_BLOCK"),
        ("tiny.csv", ["--policy-data", "lenient.json"], "THRESHOLD_NOT_MET"),
        ("tiny.csv", [], "THRESHOLD_NOT_MET"),
    ],
)
def test_a_denial_prints_only_its_reason(
    csv_server: dict[str, Any], files: Path, csv: str, args: list[str], reason: str
) -> None:
    # GB and the lenient batch are refused by the server; the last by the client's own policy.
    args = [str(files / a) if a.endswith(".json") else a for a in args]
    assert match(dict(os.environ), csv_server["url"], files / csv, *args) == (1, {"reason": reason})


def test_serving_an_iceberg_table(
    lake_settings: Settings, catalog: Catalog, files: Path, tmp_path: Path
) -> None:
    columns = {"selector": SERVER, "kind": ["email"] * len(SERVER)}
    selector_table(catalog, "partners.selectors", columns)
    env = dict(os.environ)
    env |= {
        "IGFLOW_CATALOG_URI": lake_settings.lake.catalog_uri,
        "IGFLOW_WAREHOUSE": lake_settings.warehouse,
    }
    args = ("--table", "partners.selectors", "--column", "selector")
    with serving(tmp_path / "serve.log", env, *args, stop=signal.SIGINT) as started:
        assert started["set_size"] == len(SERVER)
        card = match(
            env, started["url"], files / "client.csv", "--mode", "intersection_cardinality"
        )
        assert card == (0, {"mode": "intersection_cardinality", "count": len(EXPECTED)})
