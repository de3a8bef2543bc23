"""The dashboards and the synthetic probe on the real stack (issue 17, points 5 and 6).

One flow (``igflow run --tail``, every serving store), one API (``igflow serve``) and one probe
(``igflow probe``, a round every 2 s) run for the module, on the metrics ports the stack's
Prometheus scrapes (9464, 9465, 9466), for a tenant of this module's own:

* a probe round publishes a canary through the API, reads it back through the API's
  subscription, lands it in the lake's signals table and the Redis stream, and leaves the
  tenant's score exactly as it was;
* its freshness reaches Prometheus as ``igflow_probe_freshness_seconds`` and the recording rule
  of the ``probe_freshness`` SLO;
* the tenant's page and the platform rollup render in headless Chromium (Debian's ``chromium``)
  from the stack's Prometheus with those real metrics: the panel loaded, the SVG plots have
  non-empty paths, the screenshot PNG is produced and not blank; another tenant's token and a
  token without ``platform:read`` are refused on the page.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import redis
from matplotlib import image

from api.jwt_keys import mint_token
from core import prometheus_query
from core.canary import CANARY_SOURCE
from core.settings import Settings
from core.store_keys import signals_key
from igflow.admin import create_topics
from tests.integration.api_server import ApiServer, serve
from tests.integration.conftest import (
    QUICK_IDLE_FLUSH,
    REPO,
    env_for,
    igflow,
    json_lines,
    lake_rows,
    tagged_settings,
)
from tests.integration.scratch import Scratch

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
FLOW_PORT, API_METRICS_PORT, PROBE_PORT = 9464, 9465, 9466
#: Each a value the canary (1.0) would move the score away from, were it counted.
VALUES = (0.2, 0.3, 0.4, 0.25, 0.35)


def _free(port: int) -> None:
    with socket.socket() as s:
        # As the metrics servers do: a scrape's connection in TIME_WAIT does not hold the port.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            pytest.fail(
                f"port {port} (scraped by the stack's Prometheus) is taken by another process"
            )


def _wait(what: str, check: Any, timeout: float, every: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def _prom(expr: str) -> list[dict[str, Any]]:
    # The stack's Prometheus: https:// and verified against the stack's CA with TLS on.
    settings = Settings.load()
    url = prometheus_query.default_url(os.environ, tls=settings.tls.enabled)
    body = httpx.get(
        f"{url}/api/v1/query",
        params={"query": expr},
        timeout=10,
        verify=settings.client_verify(),
    ).json()
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


@contextlib.contextmanager
def _module_process(settings: Settings, *args: str, **extra: str) -> Iterator[None]:
    """``igflow ARGS`` for the whole module (``conftest.igflow`` processes end with their test),
    its output in a file (nobody reads a pipe meanwhile); ended with its process group."""
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "igflow.cli", *args],
            cwd=REPO,
            env=env_for(settings, **extra),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield
            assert proc.poll() is None, f"igflow {args[0]} exited {proc.returncode}"
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()


class Running:
    def __init__(self, settings: Settings, server: ApiServer, tenant: str) -> None:
        self.settings = settings
        self.server = server
        self.tenant = tenant

    def token(self, tenant: str, *scopes: str) -> str:
        return mint_token(self.settings, tenant, scopes)

    def score(self) -> dict[str, Any] | None:
        token = self.token(self.tenant, "coherence:read")
        query = "query($t: ID!) { tenantCoherence(tenantId: $t) { score status updatedAt } }"
        body = self.server.graphql({"query": query, "variables": {"t": self.tenant}}, token).json()
        data = (body.get("data") or {}).get("tenantCoherence")
        return data if isinstance(data, dict) else None

    def settled(self) -> bool:
        """The score is the mean of every published value (equal weights)."""
        score = self.score()
        return score is not None and abs(score["score"] - sum(VALUES) / len(VALUES)) < 1e-9

    def publish(self, value: float) -> None:
        token = self.token(self.tenant, "coherence:write")
        body = {
            "tenantId": self.tenant,
            "type": "latency",
            "value": value,
            "source": "sensor-a",
            "ts": datetime.now(UTC).isoformat(),
        }
        resp = self.server.client.post(
            "/v1/coherence/signals", json=body, headers={"authorization": f"Bearer {token}"}
        )
        assert resp.status_code == 202, resp.text


@pytest.fixture(scope="module")
def running(stack: Settings, module_scratch: Scratch) -> Iterator[Running]:
    for port in (FLOW_PORT, API_METRICS_PORT, PROBE_PORT):
        _free(port)
    settings = tagged_settings(stack, module_scratch).with_changes(
        "stores", sinks="redis,graph,postgres"
    )
    settings = settings.with_changes("lake", batch_max_seconds=0.5)
    create_topics(settings)
    tenant = module_scratch.tenant("dash")
    with contextlib.ExitStack() as stack_:
        # Every score change (no tick coalescing): in --tail mode a tenant's last tick waits for
        # its next signal, and these tests wait for the score of every published signal.
        stack_.enter_context(
            _module_process(
                settings,
                "run",
                "--tail",
                "--metrics-port",
                str(FLOW_PORT),
                IGFLOW_SCORE_TICK_SECONDS="0",
                **QUICK_IDLE_FLUSH,
            )
        )
        server = stack_.enter_context(
            serve(settings, IGFLOW_API_METRICS_PORT=str(API_METRICS_PORT))
        )
        running = Running(settings, server, tenant)
        for value in VALUES:
            running.publish(value)
        _wait("the tenant's score of every published signal", running.settled, 120)
        stack_.enter_context(
            _module_process(
                settings,
                "probe",
                "--tenant",
                tenant,
                "--api",
                server.url,
                IGFLOW_PROBE_INTERVAL_SECONDS="2",
                IGFLOW_PROBE_TIMEOUT_SECONDS="60",
                IGFLOW_PROBE_METRICS_PORT=str(PROBE_PORT),
            )
        )
        yield running


def test_a_probe_round_is_read_back_lands_and_leaves_the_score_unchanged(
    running: Running,
) -> None:
    before = running.score()
    assert before is not None
    proc = igflow(
        running.settings,
        "probe",
        "--once",
        "--tenant",
        running.tenant,
        "--api",
        running.server.url,
        IGFLOW_PROBE_TIMEOUT_SECONDS="60",
    )
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()[-2000:]
    (result,) = list(json_lines(out.decode()))
    assert result["tenant_id"] == running.tenant
    assert result["outcome"] == "ok", result
    assert 0 < result["seconds"] < 60
    canary = result["signal_id"]

    def landed() -> list[dict[str, Any]]:
        return [r for r in lake_rows(running.settings) if r["signal_id"] == canary]

    (row,) = _wait("the canary in the lake's signals table", landed, 60)
    assert row["source"] == CANARY_SOURCE and row["tenant_id"] == running.tenant
    client = redis.Redis.from_url(running.settings.stores.redis_url)
    try:
        stream = client.xrange(signals_key(running.tenant))
    finally:
        client.close()
    assert any(
        canary.encode() in b"".join(v for f in fields.items() for v in f) for _i, fields in stream
    )
    # The canary (value 1.0) would have moved a score made of values 0.2-0.4: it did not.
    assert running.score() == before


def test_probe_freshness_reaches_prometheus_and_its_slo_rule(running: Running) -> None:
    selector = f'tenant_id="{running.tenant}"'
    _wait(
        "igflow_probe_freshness_seconds in Prometheus",
        lambda: _prom(f"igflow_probe_freshness_seconds_count{{{selector}}}"),
        90,
        3,
    )
    ratio = _wait(
        "the probe_freshness recording rule",
        lambda: _prom(f'slo:sli_error:ratio_rate5m{{slo="probe_freshness",{selector}}}'),
        90,
        3,
    )
    assert float(ratio[0]["value"][1]) == 0.0  # every canary back well within 10 s


def _chromium(server: ApiServer, url: str, out: Path) -> str:
    """The DOM after the page's script ran, and a screenshot into ``out``; over HTTPS (TLS is on
    by default) Chromium accepts the server's pinned key (``ApiServer.browser_args``)."""
    assert CHROMIUM.is_file(), "chromium is missing: make system (or python -m dev install-system)"
    common = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",  # root in CI
        "--disable-gpu",
        "--hide-scrollbars",
        "--virtual-time-budget=15000",
        "--window-size=1200,1100",
        *server.browser_args,
    ]
    with tempfile.TemporaryDirectory() as profile:
        profile_arg = f"--user-data-dir={profile}"
        dom = subprocess.run(
            [*common, profile_arg, "--dump-dom", url], capture_output=True, timeout=120, check=True
        ).stdout.decode()
        subprocess.run(
            [*common, profile_arg, f"--screenshot={out}", url],
            capture_output=True,
            timeout=120,
            check=True,
        )
    return dom


def _not_blank(png: Path) -> float:
    """The share of the screenshot's pixels that are not the background."""
    pixels = np.asarray(image.imread(png))[..., :3]
    return float((np.abs(pixels - pixels[0, 0]).sum(axis=-1) > 0.05).mean())


def test_the_pages_render_in_chromium_from_prometheus(running: Running, tmp_path: Path) -> None:
    selector = f'table="signals",tenant_id="{running.tenant}"'
    _wait(
        "two scrapes of the tenant's throughput",
        lambda: _prom(f"rate(ingest_events_processed_total{{{selector}}}[2m])"),
        120,
        3,
    )
    base = running.server.url
    token = running.token(running.tenant, "coherence:read")
    shot = tmp_path / "tenant.png"
    dom = _chromium(
        running.server, f"{base}/dashboard/tenants/{running.tenant}#token={token}", shot
    )
    assert 'data-loaded="1"' in dom, dom[-2000:]
    assert running.tenant in dom
    paths = re.findall(r'<path class="series" d="(M[^"]+)"', dom)
    assert paths and all(" L" in d for d in paths[:1]), dom[-3000:]
    assert len(re.findall(r"<svg class=\"chart\"", dom)) == 4
    assert shot.stat().st_size > 10_000 and _not_blank(shot) > 0.02
    # The token never reaches a server log or stays in the address bar; refusals are shown.
    other = running.token("someone-else", "coherence:read")
    refused = _chromium(
        running.server,
        f"{base}/dashboard/tenants/{running.tenant}#token={other}",
        tmp_path / "x.png",
    )
    assert "Refused: TENANT_FORBIDDEN" in refused and 'data-loaded="error"' in refused
    assert "<path" not in refused
    # The rollup needs platform:read, which a tenant's token does not carry.
    denied = _chromium(running.server, f"{base}/dashboard#token={token}", tmp_path / "y.png")
    assert "Refused: SCOPE_MISSING" in denied
    admin = running.token("ops", "platform:read")
    rollup = _chromium(running.server, f"{base}/dashboard#token={admin}", tmp_path / "rollup.png")
    assert 'data-loaded="1"' in rollup and f">{running.tenant}</a>" in rollup
    assert re.search(r'<path class="series" d="M[^"]+ L', rollup)
    assert _not_blank(tmp_path / "rollup.png") > 0.02
    # Keep the screenshots for a human to look at (README's docs/dashboard.png comes from here).
    keep = os.environ.get("IGFLOW_DASHBOARD_SCREENSHOTS")
    if keep:
        shutil.copy(shot, Path(keep) / "dashboard-tenant.png")
        shutil.copy(tmp_path / "rollup.png", Path(keep) / "dashboard-platform.png")
