"""What the dashboards show, read from Prometheus's HTTP API: per tenant, throughput,
freshness (the flow's, Kafka append to the lake's commit, and the probe's, API to API), the
consumer lag of the tenant's partition, and each SLO's budget left and burn rate, as numbers
now and as series over the page's range.

Budgets come from :func:`core.prometheus_query.budgets`, the very queries ``igflow slo`` and the
release gate run; the burn-rate series read the recording rules generated from the same SLO file
(``slo:sli_error:ratio_rate1h``), divided by each tier's budget. Plain functions over an
``httpx.Client``: the Starlette side (:mod:`api.dashboard`) runs them on a worker thread.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Sequence

import httpx

from core import prometheus_query, slo
from core.partitioning import partition_of
from core.prometheus_query import Series

__all__ = [
    "PlatformView",
    "Plot",
    "TenantLine",
    "TenantView",
    "platform_view",
    "tenant_view",
]

#: Rate windows: long enough for two scrapes at the stack's 15 s interval.
_RATE = "2m"
_QUANTILE_RATE = "5m"
_BURN = f"{slo.RECORD}1h"


def _q(text: str) -> str:
    """A PromQL string literal (JSON's escaping is PromQL's for these characters)."""
    return json.dumps(text)


def _throughput(matcher: str) -> str:
    metric = "ingest_events_processed_total"
    return f'sum by (tenant_id) (rate({metric}{{table="signals"{matcher}}}[{_RATE}]))'


def _p95(metric: str, matcher: str, extra: str = "") -> str:
    return (
        f"histogram_quantile(0.95, sum by (tenant_id, le) "
        f"(rate({metric}_bucket{{{extra}{matcher}}}[{_QUANTILE_RATE}])))"
    )


def _freshness(matcher: str) -> str:
    return _p95("igflow_pipeline_latency_seconds", matcher, 'table="signals"')


def _probe(matcher: str) -> str:
    return _p95("igflow_probe_freshness_seconds", matcher.lstrip(","))


@dataclasses.dataclass(frozen=True, slots=True)
class Plot:
    """One chart: its title, unit and named series of (unix time, value)."""

    title: str
    unit: str
    series: tuple[tuple[str, tuple[tuple[float, float], ...]], ...]


@dataclasses.dataclass(frozen=True, slots=True)
class TenantView:
    """One tenant's page: now, its budgets, and the plots over ``start``..``end``."""

    tenant_id: str
    tier: str
    partition: int
    throughput: float | None
    freshness_p95: float | None
    probe_p95: float | None
    lag: float | None
    budgets: tuple[slo.BudgetRow, ...]
    plots: tuple[Plot, ...]
    start: float
    end: float


@dataclasses.dataclass(frozen=True, slots=True)
class TenantLine:
    """A tenant's row in the rollup."""

    tenant_id: str
    tier: str
    throughput: float | None
    freshness_p95: float | None
    worst: slo.BudgetRow | None
    max_burn: float | None


@dataclasses.dataclass(frozen=True, slots=True)
class PlatformView:
    """The rollup: every tenant with metrics or budgets, and platform-wide plots."""

    tenants: tuple[TenantLine, ...]
    lag: float | None
    plots: tuple[Plot, ...]
    start: float
    end: float


Points = tuple[tuple[float, float], ...]


def _named(series: Series, label: str, default: str) -> list[tuple[str, Points]]:
    out = [(dict(labels).get(label, default), tuple(points)) for labels, points in series.items()]
    return sorted(out)


def _scalar(client: httpx.Client, url: str, expr: str, at: float) -> float | None:
    resp = prometheus_query.query(
        client, url, f'label_replace({expr}, "tenant_id", "all", "", "")', at
    )
    return resp.get("all")


def _burn_plot(
    client: httpx.Client,
    url: str,
    slos: slo.SloFile,
    matcher: str,
    by: str,
    window: tuple[float, float, float],
) -> Plot:
    """The 1 h burn rate per SLO (the tier's budget = 1), worst tenant when ``by`` is "slo"."""
    start, end, step = window
    budget = {(tier.name, o.sli): o.budget for tier in slos.tiers for o in tier.objectives}
    series = prometheus_query.query_range(
        client, url, f"{_BURN}{{{matcher.lstrip(',')}}}", start, end, step
    )
    worst: dict[str, dict[float, float]] = {}
    for labels, points in series.items():
        named = dict(labels)
        share = budget.get((named.get("tier", ""), named.get("slo", "")))
        if not share:
            continue
        key = named.get(by, "?")
        line = worst.setdefault(key, {})
        for t, v in points:
            line[t] = max(line.get(t, 0.0), v / share)
    lines = tuple((k, tuple(sorted(v.items()))) for k, v in sorted(worst.items()))
    return Plot("Burn rate, 1 h (1 = spending exactly the budget)", "x budget", lines)


def tenant_view(
    client: httpx.Client,
    url: str,
    slos: slo.SloFile,
    tenant_id: str,
    *,
    topic: str,
    partitions: int,
    now: float,
    range_seconds: float,
    step: float,
) -> TenantView:
    """Everything ``tenant_id``'s page shows, as Prometheus answers at ``now``."""
    matcher = f",tenant_id={_q(tenant_id)}"
    partition = partition_of(tenant_id.encode(), partitions)
    lag_expr = f'sum(igflow_consumer_lag{{topic={_q(topic)},partition="{partition}"}})'
    start = now - range_seconds
    window = (start, now, step)

    def series(expr: str) -> Series:
        return prometheus_query.query_range(client, url, expr, start, now, step)

    throughput = prometheus_query.query(client, url, _throughput(matcher), now)
    freshness = prometheus_query.query(client, url, _freshness(matcher), now)
    probe = prometheus_query.query(client, url, _probe(matcher), now)
    rows = tuple(
        r for r in prometheus_query.budgets(slos, url, now, client) if r.tenant_id == tenant_id
    )
    fresh = _named(series(_freshness(matcher)), "tenant_id", tenant_id)
    probed = _named(series(_probe(matcher)), "tenant_id", tenant_id)
    plots = (
        Plot(
            "Throughput, signals landed",
            "signals/s",
            tuple(
                ("landed", p)
                for _n, p in _named(series(_throughput(matcher)), "tenant_id", tenant_id)
            ),
        ),
        Plot(
            "Freshness, p95",
            "seconds",
            tuple(
                [("flow: Kafka to lake", p) for _n, p in fresh]
                + [("probe: API to API", p) for _n, p in probed]
            ),
        ),
        Plot(
            f"Consumer lag, partition {partition}",
            "records",
            tuple(("lag", p) for _n, p in _named(series(lag_expr), "partition", str(partition))),
        ),
        _burn_plot(client, url, slos, matcher, "slo", window),
    )
    return TenantView(
        tenant_id=tenant_id,
        tier=slos.tier_of(tenant_id),
        partition=partition,
        throughput=throughput.get(tenant_id),
        freshness_p95=freshness.get(tenant_id),
        probe_p95=probe.get(tenant_id),
        lag=_scalar(client, url, lag_expr, now),
        budgets=rows,
        plots=plots,
        start=start,
        end=now,
    )


def _worst(rows: Sequence[slo.BudgetRow]) -> slo.BudgetRow | None:
    return min(rows, key=lambda r: r.budget_left, default=None)


def platform_view(
    client: httpx.Client,
    url: str,
    slos: slo.SloFile,
    *,
    now: float,
    range_seconds: float,
    step: float,
    top: int = 8,
) -> PlatformView:
    """The rollup: each tenant's numbers now, and platform plots (the ``top`` busiest tenants'
    throughput and freshness, the total lag, the worst burn per SLO)."""
    start = now - range_seconds
    window = (start, now, step)

    def series(expr: str) -> Series:
        return prometheus_query.query_range(client, url, expr, start, now, step)

    throughput = prometheus_query.query(client, url, _throughput(""), now)
    freshness = prometheus_query.query(client, url, _freshness(""), now)
    rows = prometheus_query.budgets(slos, url, now, client)
    by_tenant: dict[str, list[slo.BudgetRow]] = {}
    for row in rows:
        by_tenant.setdefault(row.tenant_id, []).append(row)
    tenants = sorted(set(throughput) | set(freshness) | set(by_tenant))
    lines = tuple(
        TenantLine(
            tenant_id=t,
            tier=slos.tier_of(t),
            throughput=throughput.get(t),
            freshness_p95=freshness.get(t),
            worst=_worst(by_tenant.get(t, [])),
            max_burn=max(
                (r.burn_rate_1h for r in by_tenant.get(t, []) if r.burn_rate_1h is not None),
                default=None,
            ),
        )
        for t in tenants
    )
    busiest = sorted(throughput, key=lambda t: -throughput[t])[:top]
    pick = f",tenant_id=~{_q('|'.join(map(re.escape, busiest)))}" if busiest else ',tenant_id=""'
    lag_expr = "sum(igflow_consumer_lag)"
    plots = (
        Plot(
            "Throughput by tenant (busiest)",
            "signals/s",
            tuple(_named(series(_throughput(pick)), "tenant_id", "?")),
        ),
        Plot(
            "Freshness p95 by tenant (busiest)",
            "seconds",
            tuple(_named(series(_freshness(pick)), "tenant_id", "?")),
        ),
        Plot(
            "Consumer lag, all partitions",
            "records",
            tuple(("lag", p) for _n, p in _named(series(lag_expr), "x", "lag")),
        ),
        _burn_plot(client, url, slos, "", "slo", window),
    )
    return PlatformView(lines, _scalar(client, url, lag_expr, now), plots, start, now)
