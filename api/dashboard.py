"""The dashboards of ``igflow serve``: a per-tenant view and the platform rollup, as HTML pages
with server-rendered SVG plots (no CDN, no chart library: the machine may have no internet).

======================================  ==================================================
``GET /dashboard``                      the rollup's page (a shell, no data: no credential)
``GET /dashboard/tenants/{id}``         the tenant's page (a shell, no data)
``GET /dashboard/panels/platform``      the rollup's content (every tenant, plots):
                                        needs ``platform:read``
``GET /dashboard/panels/tenants/{id}``  the tenant's content (freshness, throughput, lag,
                                        budget left and burn, plots): the tenant's own
                                        ``coherence:read``
======================================  ==================================================

Why a shell and a panel: a browser's navigation cannot carry an ``Authorization`` header, and a
token in a query string ends up in access logs and browser history. So the page is static, and
its small inline script takes the credential from the URL's *fragment* (``#token=...``, which
browsers never send to a server), keeps it in ``sessionStorage``, drops it from the address bar,
and fetches the panel with ``Authorization: Bearer``. The panel is authenticated, rate limited
per tenant and authorized by ``policies/graphql.rego`` exactly like the API's other reads
(``read`` on the tenant; the rollup, which names every tenant, ``platform``). Every page carries
a Content-Security-Policy allowing only its own inline script and style (by hash) and requests
to its own origin.

The numbers come from Prometheus (``api.prometheus_url``) through :mod:`api.dashboard_data`,
which reuses the queries of ``igflow slo``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import html
import logging
import math
import ssl
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from api import dashboard_data
from api.auth import AuthFailure, Principal
from api.problems import problem
from api.services import Services
from api.svg_plot import line_chart
from core import prometheus_query, slo
from core.errors import IgflowError
from core.reasons import ReasonCode

__all__ = ["Dashboard", "render_platform", "render_tenant"]

log = logging.getLogger(__name__)

_STYLE = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;background:#fff}
h1{font-size:20px;margin:0 0 4px}
.sub{color:#666;margin:0 0 16px;font-size:13px}
.tiles{display:flex;gap:12px;flex-wrap:wrap;margin-bottom:16px}
.tile{border:1px solid #ddd;border-radius:6px;padding:8px 12px;min-width:140px}
.tile b{display:block;font-size:20px}
.tile span{color:#666;font-size:12px}
.charts{display:flex;flex-wrap:wrap;gap:12px}
.chart{border:1px solid #eee;border-radius:6px}
table{border-collapse:collapse;margin:8px 0 16px;font-size:13px}
th,td{border-bottom:1px solid #eee;padding:4px 10px;text-align:right}
th:first-child,td:first-child{text-align:left}
.spent{color:#b00020;font-weight:bold}.ok{color:#00703c}
#status{color:#b00020}
"""

_SCRIPT = """
(function () {
  var m = /[#&]token=([^&]+)/.exec(location.hash);
  if (m) {
    sessionStorage.setItem("igflow-token", decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
  var token = sessionStorage.getItem("igflow-token");
  var main = document.getElementById("main");
  var status = document.getElementById("status");
  var panel = document.body.getAttribute("data-panel");
  function load() {
    if (!token) {
      status.textContent = "No credential: open this page with #token=<a JWT> at the end.";
      return;
    }
    fetch(panel, {headers: {"Authorization": "Bearer " + token}}).then(function (r) {
      return r.text().then(function (body) {
        if (r.ok) {
          main.innerHTML = body;
          status.textContent = "";
          document.body.setAttribute("data-loaded", "1");
        } else {
          var code = r.status;
          try { code = JSON.parse(body).code || code; } catch (e) {}
          status.textContent = "Refused: " + code;
          document.body.setAttribute("data-loaded", "error");
        }
      });
    }).catch(function (e) { status.textContent = "Unreachable: " + e; });
  }
  load();
  setInterval(load, 30000);
})();
"""


def _sha256(text: str) -> str:
    return base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


_CSP = (
    "default-src 'none'; "
    f"script-src 'sha256-{_sha256(_SCRIPT)}'; style-src 'sha256-{_sha256(_STYLE)}'; "
    "connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)


def _shell(title: str, panel: str) -> HTMLResponse:
    page = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
        f'<body data-panel="{html.escape(panel)}"><h1>{html.escape(title)}</h1>'
        '<p id="status">Loading...</p><div id="main"></div>'
        f"<script>{_SCRIPT}</script></body></html>"
    )
    return HTMLResponse(
        page,
        headers={
            "Content-Security-Policy": _CSP,
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
        },
    )


def _num(value: float | None, fmt: str = "{:.3g}", unit: str = "") -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return fmt.format(value) + unit


def _pct(value: float) -> str:
    return f"{value * 100:.3f}%"


def _tile(label: str, value: str) -> str:
    return f'<div class="tile"><b>{html.escape(value)}</b><span>{html.escape(label)}</span></div>'


def _charts(plots: tuple[dashboard_data.Plot, ...], start: float, end: float) -> str:
    body = "".join(
        line_chart(p.title, [(n, list(pts)) for n, pts in p.series], p.unit, start, end)
        for p in plots
    )
    return f'<div class="charts">{body}</div>'


def _budget_cell(row: slo.BudgetRow) -> str:
    cls = "spent" if row.spent else "ok"
    return f'<td class="{cls}">{_pct(row.budget_left)}{" SPENT" if row.spent else ""}</td>'


def render_tenant(view: dashboard_data.TenantView) -> str:
    """The tenant panel's HTML (escaped throughout)."""
    t = html.escape(view.tenant_id)
    worst = min((r.budget_left for r in view.budgets), default=None)
    tiles = "".join(
        (
            _tile("signals/s landed (2 min)", _num(view.throughput)),
            _tile("freshness p95, Kafka to lake", _num(view.freshness_p95, unit=" s")),
            _tile("freshness p95, probe (API to API)", _num(view.probe_p95, unit=" s")),
            _tile(f"consumer lag, partition {view.partition}", _num(view.lag, "{:.0f}")),
            _tile("lowest budget left", "-" if worst is None else _pct(worst)),
        )
    )
    rows = "".join(
        f"<tr><td>{html.escape(r.slo)}</td><td>{_pct(r.objective)}</td><td>{_pct(r.sli)}</td>"
        f"{_budget_cell(r)}<td>{_num(r.burn_rate_1h, '{:.2f}', 'x')}</td></tr>"
        for r in view.budgets
    )
    table = (
        "<table><tr><th>SLO</th><th>objective</th><th>SLI (budget window)</th>"
        f"<th>budget left</th><th>burn rate, 1 h</th></tr>{rows}</table>"
        if rows
        else "<p>No SLO events for this tenant in the budget window yet.</p>"
    )
    return (
        f'<p class="sub">tenant <b>{t}</b> · tier {html.escape(view.tier)} · '
        f"{_range_text(view.start, view.end)}</p>"
        f'<div class="tiles">{tiles}</div>{table}{_charts(view.plots, view.start, view.end)}'
    )


def _range_text(start: float, end: float) -> str:
    return f"last {round((end - start) / 60)} min, from Prometheus"


def render_platform(view: dashboard_data.PlatformView) -> str:
    """The rollup panel's HTML (escaped throughout; each tenant links to its page)."""
    rows = []
    for line in view.tenants:
        t = html.escape(line.tenant_id)
        worst = line.worst
        budget = (
            "<td>-</td>"
            if worst is None
            else _budget_cell(worst)[:-5] + f" ({html.escape(worst.slo)})</td>"
        )
        rows.append(
            f'<tr><td><a href="/dashboard/tenants/{t}">{t}</a></td>'
            f"<td>{html.escape(line.tier)}</td><td>{_num(line.throughput)}</td>"
            f"<td>{_num(line.freshness_p95, unit=' s')}</td>{budget}"
            f"<td>{_num(line.max_burn, '{:.2f}', 'x')}</td></tr>"
        )
    spent = sum(1 for line in view.tenants if line.worst is not None and line.worst.spent)
    tiles = "".join(
        (
            _tile("tenants with metrics", str(len(view.tenants))),
            _tile("budgets spent", str(spent)),
            _tile("consumer lag, all partitions", _num(view.lag, "{:.0f}")),
        )
    )
    table = (
        "<table><tr><th>tenant</th><th>tier</th><th>signals/s</th><th>freshness p95</th>"
        f"<th>lowest budget left</th><th>worst burn, 1 h</th></tr>{''.join(rows)}</table>"
    )
    return (
        f'<p class="sub">platform rollup · {_range_text(view.start, view.end)}</p>'
        f'<div class="tiles">{tiles}</div>{table}{_charts(view.plots, view.start, view.end)}'
    )


class Dashboard:
    """The dashboard routes, bound to the process's services and a Prometheus URL."""

    def __init__(
        self,
        services: Services,
        prometheus_url: str,
        slos: slo.SloFile,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._services = services
        self._url = prometheus_url
        self._verify: ssl.SSLContext | bool | None = None
        self._slos = slos
        self._clock = clock
        api = services.settings.api
        self._range = api.dashboard_range_seconds
        self._step = api.dashboard_step_seconds

    @classmethod
    def from_services(cls, services: Services) -> Dashboard:
        """Over ``api.prometheus_url`` (empty: port 19090 on loopback; ``igflow serve`` fills
        it in from ``IGFLOW_PROMETHEUS_PORT``) and the SLO file of ``run.slo_file``."""
        settings = services.settings
        path = settings.run.slo_file
        return cls(
            services,
            settings.api.prometheus_url or prometheus_query.default_url({}, settings.tls.enabled),
            slo.load(Path(path) if path else None),
        )

    async def platform_page(self, _request: Request) -> Response:
        return _shell("IntelGraph Streams: platform", "/dashboard/panels/platform")

    async def tenant_page(self, request: Request) -> Response:
        tenant = request.path_params["tenant_id"]
        return _shell(f"IntelGraph Streams: {tenant}", f"/dashboard/panels/tenants/{tenant}")

    async def _principal(self, request: Request) -> Principal | Response:
        services = self._services
        try:
            principal = await services.auth.authenticate(
                request.headers.get("authorization"), request.headers.get("x-api-key")
            )
        except AuthFailure as failure:
            return problem(failure.reason, failure.detail, instance=request.url.path)
        wait = services.buckets.take(principal.tenant_id)
        if wait > 0:
            return problem(
                ReasonCode.RATE_LIMITED, "rate limit exceeded for this tenant", retry_after=wait
            )
        return principal

    async def _answer(self, render: Callable[[httpx.Client], str]) -> Response:
        def run() -> str:
            if self._verify is None:
                # An HTTPS Prometheus (the stack's, with TLS on) is verified against
                # tls.ca_file (a missing CA is a ConfigError: 503 like an absent Prometheus).
                self._verify = self._services.settings.client_verify()
            with httpx.Client(timeout=10.0, verify=self._verify) as client:
                return render(client)

        try:
            body = await asyncio.to_thread(run)
        except IgflowError as exc:
            log.warning("dashboard: %s", exc, extra={"op": "dashboard"})
            return problem(ReasonCode.STORE_UNAVAILABLE, "Prometheus did not answer", status=503)
        return HTMLResponse(body, headers={"Cache-Control": "no-store"})

    async def platform_panel(self, request: Request) -> Response:
        principal = await self._principal(request)
        if isinstance(principal, Response):
            return principal
        decision = self._services.authz.decide(principal, "platform", "")
        if not decision.allow:
            return problem(decision.reason or ReasonCode.SCOPE_MISSING, "needs platform:read")
        now = self._clock()
        return await self._answer(
            lambda client: render_platform(
                dashboard_data.platform_view(
                    client,
                    self._url,
                    self._slos,
                    now=now,
                    range_seconds=self._range,
                    step=self._step,
                )
            )
        )

    async def tenant_panel(self, request: Request) -> Response:
        principal = await self._principal(request)
        if isinstance(principal, Response):
            return principal
        tenant = request.path_params["tenant_id"]
        decision = self._services.authz.decide(principal, "read", tenant)
        if not decision.allow:
            reason = decision.reason or ReasonCode.TENANT_FORBIDDEN
            return problem(reason, "not authorized to read this tenant's dashboard")
        kafka = self._services.settings.kafka
        now = self._clock()
        return await self._answer(
            lambda client: render_tenant(
                dashboard_data.tenant_view(
                    client,
                    self._url,
                    self._slos,
                    tenant,
                    topic=kafka.topic,
                    partitions=kafka.partitions,
                    now=now,
                    range_seconds=self._range,
                    step=self._step,
                )
            )
        )
