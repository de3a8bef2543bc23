"""Asking a Prometheus for what the SLO file defines: its HTTP API (``/api/v1/query`` and
``/api/v1/query_range``), shared by ``igflow slo`` (the report and the release gate) and the
API's dashboards (``/dashboard``), so both read every tenant's budget with the same queries
(:func:`core.slo.budget_queries`).

With TLS on (``tls.enabled``) the stack's Prometheus serves HTTPS only: :func:`default_url` is
``https://`` and every reader passes ``verify=Settings.client_verify()`` (the stack's CA).

Errors are :class:`~core.errors.IgflowError` naming the URL: a gate or a page that cannot look
must say so, never report an empty budget as a healthy one.
"""

from __future__ import annotations

import math
import ssl
from collections.abc import Mapping
from typing import Any

import httpx

from core import slo
from core.errors import IgflowError

__all__ = ["DEFAULT_PORT", "Series", "budgets", "default_url", "query", "query_range"]

#: The local stack's Prometheus port when ``IGFLOW_PROMETHEUS_PORT`` is not set.
DEFAULT_PORT = 19090

#: A range query's answer: per series (its labels, sorted), ``(unix time, value)`` points.
Series = dict[tuple[tuple[str, str], ...], list[tuple[float, float]]]


def default_url(environ: Mapping[str, str], tls: bool = False) -> str:
    """The local stack's Prometheus, from ``IGFLOW_PROMETHEUS_PORT`` in ``environ`` (read at the
    entry point and passed down); ``https://`` when ``tls`` (``tls.enabled``: the stack serves
    it over HTTPS only)."""
    scheme = "https" if tls else "http"
    return f"{scheme}://127.0.0.1:{environ.get('IGFLOW_PROMETHEUS_PORT') or DEFAULT_PORT}"


def _get(client: httpx.Client, url: str, path: str, params: dict[str, str]) -> list[dict[str, Any]]:
    try:
        resp = client.get(f"{url.rstrip('/')}{path}", params=params)
        body = resp.json()
    except (httpx.HTTPError, ValueError) as exc:
        msg = f"cannot query Prometheus at {url}: {exc}"
        raise IgflowError(msg) from exc
    if resp.status_code != 200 or body.get("status") != "success":
        msg = f"Prometheus at {url} refused a query ({resp.status_code}): {body.get('error')}"
        raise IgflowError(msg)
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def query(client: httpx.Client, url: str, expr: str, at: float | None = None) -> dict[str, float]:
    """``expr``'s instant vector (at unix time ``at``, default now) as ``{tenant_id: value}``;
    samples without a ``tenant_id`` label are left out."""
    params = {"query": expr} | ({} if at is None else {"time": str(at)})
    out: dict[str, float] = {}
    for sample in _get(client, url, "/api/v1/query", params):
        tenant = sample["metric"].get("tenant_id")
        if tenant is not None:
            out[tenant] = float(sample["value"][1])
    return out


def query_range(
    client: httpx.Client, url: str, expr: str, start: float, end: float, step: float
) -> Series:
    """``expr`` from ``start`` to ``end`` (unix seconds) every ``step`` seconds; points whose
    value is not finite (a ratio of nothing, a quantile without observations) are left out."""
    params = {"query": expr, "start": str(start), "end": str(end), "step": str(step)}
    out: Series = {}
    for series in _get(client, url, "/api/v1/query_range", params):
        labels = tuple(sorted(series["metric"].items()))
        points = [(float(t), float(v)) for t, v in series["values"]]
        out[labels] = [(t, v) for t, v in points if math.isfinite(v)]
    return out


def budgets(
    slos: slo.SloFile,
    url: str,
    at: float | None = None,
    client: httpx.Client | None = None,
    verify: ssl.SSLContext | bool = True,
) -> list[slo.BudgetRow]:
    """Every tenant's budget for every SLO of its tier, from the Prometheus at ``url``
    (evaluated at unix time ``at``, default now); sorted by tenant, then SLO. Without
    ``client``, one of its own verifying an HTTPS Prometheus with ``verify``."""
    own = client is None
    client = client or httpx.Client(timeout=30.0, verify=verify)
    rows: list[slo.BudgetRow] = []
    try:
        for budget_query in slo.budget_queries(slos):
            window = query(client, url, budget_query.window, at)
            hour = query(client, url, budget_query.last_hour, at)
            # NaN: no event in the window (0 / 0), so no SLI to report for that tenant.
            rows += [
                slo.budget_row(t, budget_query, v, hour.get(t))
                for t, v in window.items()
                if not math.isnan(v)
            ]
    finally:
        if own:
            client.close()
    return sorted(rows, key=lambda r: (r.tenant_id, r.slo))
