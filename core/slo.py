"""Service-level objectives as data (``slo/slos.json``), and what Prometheus computes from them.

An SLO file names tenant tiers (which tenants are in each, and a default tier for all others)
and, per tier, an objective for each SLI of :data:`SLIS`. From it this module builds, without
any I/O beyond reading the file:

* recording rules ``slo:sli_error:ratio_rate<W>{tenant_id, slo, tier}``: the share of bad events
  per tenant over each window of :data:`WINDOWS`;
* multi-window, multi-burn-rate alerts (the SRE workbook's table, :data:`BURN_ALERTS`);
* the PromQL a report or a release gate asks Prometheus for (:func:`error_ratio_expr`).

The SLIs, from the metrics the engine exports (every ``tenant_id`` label is bounded, see
:class:`core.metrics.TenantLabels`):

``ingest_availability``
    good: signals landed in the lake (``ingest_events_processed_total{table="signals"}``) or
    rejected with a reason code (``igflow_rejected_total``); bad: rows a store gave up on after
    its retries (``igflow_ingest_failed_total``, dead-lettered as ``SINK_UNAVAILABLE``).
``freshness``
    Kafka append to the lake's commit (``igflow_pipeline_latency_seconds{table="signals"}``, one
    observation per tenant per commit: its oldest record's wait); good when at most the
    threshold.
``api_read_latency`` / ``api_write_latency``
    ``igflow_api_request_duration_seconds{kind="read"|"write"}`` (GraphQL queries; mutations and
    ``POST /v1/signals``); good when at most the threshold.
``probe_freshness``
    ``igflow_probe_freshness_seconds`` (``igflow probe``): a canary signal's trip from the API's
    publish through Kafka, the flow and the Redis store back to the API's subscription, one
    observation per tenant per probe round (a canary not back in time is observed as the
    probe's timeout, so it counts as bad); good when at most the threshold.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from core.errors import ConfigError

__all__ = [
    "API_LATENCY_BUCKETS",
    "BUDGET_RECORD",
    "BURN_ALERTS",
    "FRESHNESS_BUCKETS",
    "PROBE_BUCKETS",
    "RECORD",
    "SLIS",
    "WINDOWS",
    "BudgetQuery",
    "BudgetRow",
    "BurnAlert",
    "Objective",
    "SloFile",
    "Tier",
    "alert_rules",
    "budget_queries",
    "budget_row",
    "budget_rules",
    "error_ratio_expr",
    "load",
    "parse",
    "recording_rules",
    "rule_groups",
]

#: Buckets of ``igflow_pipeline_latency_seconds`` (a freshness threshold must be one of them).
FRESHNESS_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
#: Buckets of ``igflow_api_request_duration_seconds`` (read and write thresholds among them).
API_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.35, 0.5, 0.7, 1.0, 2.5, 5.0)

#: Buckets of ``igflow_probe_freshness_seconds`` (``igflow probe``'s end-to-end trip).
PROBE_BUCKETS = (0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

#: The windows the recording rules compute every SLI over.
WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")


@dataclasses.dataclass(frozen=True, slots=True)
class _Sli:
    """How one SLI's bad-event ratio is computed: an availability ratio, or a histogram's share
    of observations above a threshold."""

    metric: str
    selector: str
    buckets: tuple[float, ...] | None  # None: not a latency SLI


_AVAILABILITY_METRICS = (
    "igflow_ingest_failed_total",
    "ingest_events_processed_total",
    "igflow_rejected_total",
)

SLIS: Mapping[str, _Sli] = {
    "ingest_availability": _Sli("igflow_ingest_failed_total", "", None),
    "freshness": _Sli("igflow_pipeline_latency_seconds", 'table="signals"', FRESHNESS_BUCKETS),
    "api_read_latency": _Sli(
        "igflow_api_request_duration_seconds", 'kind="read"', API_LATENCY_BUCKETS
    ),
    "api_write_latency": _Sli(
        "igflow_api_request_duration_seconds", 'kind="write"', API_LATENCY_BUCKETS
    ),
    "probe_freshness": _Sli("igflow_probe_freshness_seconds", "", PROBE_BUCKETS),
}


@dataclasses.dataclass(frozen=True, slots=True)
class BurnAlert:
    """One row of the SRE workbook's multi-window, multi-burn-rate table: fire when the error
    ratio is above ``burn_rate`` times the budget over both windows."""

    long_window: str
    short_window: str
    burn_rate: float
    severity: str


BURN_ALERTS = (
    BurnAlert("1h", "5m", 14.4, "page"),
    BurnAlert("6h", "30m", 6.0, "page"),
    BurnAlert("1d", "2h", 3.0, "ticket"),
    BurnAlert("3d", "6h", 1.0, "ticket"),
)


@dataclasses.dataclass(frozen=True, slots=True)
class Objective:
    """One SLO of a tier: ``objective`` of events good over the budget window."""

    sli: str
    objective: float
    #: Latency SLIs: an event is good when at most this many seconds.
    threshold_seconds: float | None = None

    @property
    def budget(self) -> float:
        """The share of events allowed to be bad."""
        return 1.0 - self.objective


@dataclasses.dataclass(frozen=True, slots=True)
class Tier:
    """A tenant tier: its tenants (empty for the default tier: everyone not elsewhere)."""

    name: str
    tenants: tuple[str, ...]
    objectives: tuple[Objective, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class SloFile:
    """The parsed SLO file."""

    budget_window_days: int
    default_tier: str
    tiers: tuple[Tier, ...]

    @property
    def budget_window(self) -> str:
        """The budget window as a PromQL duration."""
        return f"{self.budget_window_days}d"

    def tier_of(self, tenant_id: str) -> str:
        """The tier ``tenant_id`` is in (the default tier unless a tier lists it)."""
        for tier in self.tiers:
            if tenant_id in tier.tenants:
                return tier.name
        return self.default_tier

    def named_tenants(self) -> frozenset[str]:
        """Every tenant a tier lists (they always keep their own metric label)."""
        return frozenset(t for tier in self.tiers for t in tier.tenants)

    def tenant_matcher(self, tier: Tier) -> str:
        """The PromQL label matcher selecting ``tier``'s tenants (``""``: no tenant at all)."""
        if tier.name == self.default_tier:
            others = sorted(t for other in self.tiers if other is not tier for t in other.tenants)
            return f'tenant_id!~"{_alternation(others)}"' if others else 'tenant_id!=""'
        if not tier.tenants:
            return ""
        return f'tenant_id=~"{_alternation(sorted(tier.tenants))}"'


def load(path: Path | None = None) -> SloFile:
    """Read and check the SLO file (default: the one shipped, ``slo/slos.json``)."""
    if path is None:
        from core.resources import slo_file

        path = slo_file()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        msg = f"SLO file {path}: {exc}"
        raise ConfigError(msg) from exc
    return parse(data, str(path))


def parse(data: Any, where: str = "SLO file") -> SloFile:
    """Check ``data`` (the SLO file's JSON) and build an :class:`SloFile`; ``ConfigError``
    naming the offending key otherwise."""

    def fail(text: str) -> ConfigError:
        return ConfigError(f"{where}: {text}")

    if not isinstance(data, dict) or not isinstance(data.get("tiers"), dict) or not data["tiers"]:
        msg = "expected an object with a non-empty 'tiers' object"
        raise fail(msg)
    days = data.get("budget_window_days", 30)
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= 90:
        msg = "budget_window_days must be a whole number of days from 1 to 90"
        raise fail(msg)
    default = data.get("default_tier", "standard")
    if default not in data["tiers"]:
        msg = f"default_tier {default!r} is not one of the tiers"
        raise fail(msg)
    tiers: list[Tier] = []
    seen: dict[str, str] = {}
    for name, body in data["tiers"].items():
        if not re.fullmatch(r"[a-z][a-z0-9_]*", name) or not isinstance(body, dict):
            msg = f"tier {name!r}: a lower-case name and an object are required"
            raise fail(msg)
        tenants = body.get("tenants", [])
        if not isinstance(tenants, list) or not all(isinstance(t, str) and t for t in tenants):
            msg = f"tier {name!r}: tenants must be a list of tenant ids"
            raise fail(msg)
        for tenant in tenants:
            if tenant in seen:
                msg = f"tenant {tenant!r} is in tiers {seen[tenant]!r} and {name!r}"
                raise fail(msg)
            seen[tenant] = name
        slos = body.get("slos")
        if not isinstance(slos, dict) or not slos:
            msg = f"tier {name!r}: 'slos' must name at least one SLI"
            raise fail(msg)
        objectives = tuple(_objective(fail, name, sli, spec) for sli, spec in slos.items())
        tiers.append(Tier(name, tuple(tenants), objectives))
    return SloFile(days, default, tuple(tiers))


def _objective(fail: Any, tier: str, sli: str, spec: Any) -> Objective:
    where = f"tier {tier!r}, {sli}"
    if sli not in SLIS:
        msg = f"{where}: unknown SLI (known: {', '.join(SLIS)})"
        raise fail(msg)
    if not isinstance(spec, dict):
        msg = f"{where}: expected an object"
        raise fail(msg)
    objective = spec.get("objective")
    if isinstance(objective, bool) or not isinstance(objective, int | float):
        msg = f"{where}: objective must be a number"
        raise fail(msg)
    if not 0.5 <= objective < 1:
        msg = f"{where}: objective {objective} must be at least 0.5 and below 1"
        raise fail(msg)
    buckets = SLIS[sli].buckets
    threshold = spec.get("threshold_seconds")
    if buckets is None:
        if threshold is not None:
            msg = f"{where}: takes no threshold_seconds"
            raise fail(msg)
        return Objective(sli, float(objective))
    if isinstance(threshold, bool) or not isinstance(threshold, int | float):
        msg = f"{where}: threshold_seconds must be a number"
        raise fail(msg)
    if float(threshold) not in {float(b) for b in buckets}:
        msg = f"{where}: threshold_seconds must be a bucket boundary: {list(buckets)}"
        raise fail(msg)
    return Objective(sli, float(objective), float(threshold))


def _alternation(tenants: Sequence[str]) -> str:
    """An RE2 alternation matching exactly ``tenants`` (Prometheus anchors it), escaped for
    both RE2 and a PromQL double-quoted string."""
    return "|".join(re.sub(r"([\\.^$*+?()\[\]{}|])", r"\\\\\1", t) for t in tenants)


def _go_float(value: float) -> str:
    """A bucket bound as the client library writes it in ``le`` (``0.1``, ``1.0``)."""
    return repr(float(value))


def _selector(*matchers: str) -> str:
    return "{" + ",".join(m for m in matchers if m) + "}"


def error_ratio_expr(objective: Objective, matcher: str, window: str) -> str:
    """PromQL: the share of bad events per ``tenant_id`` over ``window`` (0 for a tenant that
    had events and no bad one), for the tenants ``matcher`` selects."""
    sli = SLIS[objective.sli]
    if sli.buckets is None:
        names = "|".join(_AVAILABILITY_METRICS)
        every = _selector(f"__name__=~{json.dumps(names)}", 'table=~"signals|"', matcher)
        total = f"sum by (tenant_id) (rate({every}[{window}]))"
        bad = f"sum by (tenant_id) (rate({sli.metric}{_selector(matcher)}[{window}]))"
        return f"({bad} or 0 * {total}) / {total}"
    le = f'le="{_go_float(objective.threshold_seconds or 0.0)}"'
    good = (
        f"sum by (tenant_id) (rate({sli.metric}_bucket{_selector(sli.selector, le, matcher)}"
        f"[{window}]))"
    )
    total = (
        f"sum by (tenant_id) (rate({sli.metric}_count{_selector(sli.selector, matcher)}[{window}]))"
    )
    return f"1 - {good} / {total}"


RECORD = "slo:sli_error:ratio_rate"


def recording_rules(slos: SloFile) -> list[dict[str, Any]]:
    """One rule group per tier and SLO: its error ratio per tenant over every window."""
    groups: list[dict[str, Any]] = []
    for tier in slos.tiers:
        matcher = slos.tenant_matcher(tier)
        if not matcher:
            continue
        for objective in tier.objectives:
            labels = {"slo": objective.sli, "tier": tier.name}
            rules = [
                {
                    "record": f"{RECORD}{window}",
                    "expr": error_ratio_expr(objective, matcher, window),
                    "labels": labels,
                }
                for window in WINDOWS
            ]
            groups.append({"name": f"slo:{tier.name}:{objective.sli}", "rules": rules})
    return groups


def _number(value: float) -> str:
    return format(round(value, 12), ".12g")


def alert_rules(slos: SloFile) -> dict[str, Any]:
    """The burn-rate alerts: for every tier and SLO, each row of :data:`BURN_ALERTS`."""
    rules: list[dict[str, Any]] = []
    for tier in slos.tiers:
        if not slos.tenant_matcher(tier):
            continue
        for objective in tier.objectives:
            sel = f'{{slo="{objective.sli}",tier="{tier.name}"}}'
            for row in BURN_ALERTS:
                limit = _number(row.burn_rate * objective.budget)
                rules.append(
                    {
                        "alert": "SLOErrorBudgetBurn",
                        "expr": (
                            f"{RECORD}{row.long_window}{sel} > {limit}\n"
                            f"and {RECORD}{row.short_window}{sel} > {limit}"
                        ),
                        "labels": {
                            "slo": objective.sli,
                            "tier": tier.name,
                            "severity": row.severity,
                            "window": f"{row.long_window}/{row.short_window}",
                            "burn_rate": _number(row.burn_rate),
                        },
                        "annotations": {
                            "summary": (
                                "{{ $labels.tenant_id }} burns its "
                                f"{objective.sli} budget ({tier.name}: objective "
                                f"{_number(objective.objective)}) at over "
                                f"{_number(row.burn_rate)}x over {row.long_window} and "
                                f"{row.short_window}"
                            ),
                        },
                    }
                )
    return {"name": "slo:burn-rate-alerts", "rules": rules}


#: The recorded error budget of every (slo, tier): ``1 - objective``, as a series, so that a
#: dashboard (Grafana) divides an error ratio by it to show a burn rate without knowing the file.
BUDGET_RECORD = "slo:error_budget:ratio"


def budget_rules(slos: SloFile) -> dict[str, Any]:
    """One constant series per tier and SLO: its error budget (``BUDGET_RECORD``)."""
    rules = [
        {
            "record": BUDGET_RECORD,
            "expr": f"vector({_number(objective.budget)})",
            "labels": {"slo": objective.sli, "tier": tier.name},
        }
        for tier in slos.tiers
        if slos.tenant_matcher(tier)
        for objective in tier.objectives
    ]
    return {"name": "slo:budgets", "rules": rules}


def rule_groups(slos: SloFile) -> dict[str, Any]:
    """The whole Prometheus rule file: recording rules, the budgets, then the alerts."""
    return {"groups": [*recording_rules(slos), budget_rules(slos), alert_rules(slos)]}


@dataclasses.dataclass(frozen=True, slots=True)
class BudgetQuery:
    """What a report asks Prometheus for one tier's SLO: the error ratio per tenant over the
    budget window (``window``) and over the last hour (``last_hour``, for the burn rate)."""

    tier: str
    objective: Objective
    window: str
    last_hour: str


def budget_queries(slos: SloFile) -> list[BudgetQuery]:
    """One :class:`BudgetQuery` per tier (with tenants) and SLO."""
    out: list[BudgetQuery] = []
    for tier in slos.tiers:
        matcher = slos.tenant_matcher(tier)
        if not matcher:
            continue
        for objective in tier.objectives:
            out.append(
                BudgetQuery(
                    tier.name,
                    objective,
                    error_ratio_expr(objective, matcher, slos.budget_window),
                    error_ratio_expr(objective, matcher, "1h"),
                )
            )
    return out


@dataclasses.dataclass(frozen=True, slots=True)
class BudgetRow:
    """One tenant's SLO: its SLI over the budget window, the budget left (1: untouched, 0 or
    less: spent) and the burn rate over the last hour (1: spending exactly the budget)."""

    tenant_id: str
    tier: str
    slo: str
    objective: float
    sli: float
    budget_left: float
    burn_rate_1h: float | None

    @property
    def spent(self) -> bool:
        """True when the budget is used up (to float precision: 1 - 0.999 is not 0.001)."""
        return self.budget_left <= 1e-9


def budget_row(
    tenant_id: str, query: BudgetQuery, error_ratio: float, last_hour: float | None
) -> BudgetRow:
    """A :class:`BudgetRow` from the error ratios Prometheus answered (a ``NaN``, no event in
    the window, counts as no bad event)."""
    budget = query.objective.budget
    ratio = 0.0 if math.isnan(error_ratio) else error_ratio
    hour = None if last_hour is None or math.isnan(last_hour) else last_hour
    return BudgetRow(
        tenant_id=tenant_id,
        tier=query.tier,
        slo=query.objective.sli,
        objective=query.objective.objective,
        sli=1.0 - ratio,
        budget_left=1.0 - ratio / budget,
        burn_rate_1h=None if hour is None else hour / budget,
    )
