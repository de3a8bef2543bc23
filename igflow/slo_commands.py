"""``igflow slo``: the SLO file's Prometheus rules, each tenant's error budget, a release gate.

* ``igflow slo rules`` prints the recording rules and burn-rate alerts of the SLO file
  (``run.slo_file``, default the shipped ``slo/slos.json``) as a Prometheus rule file;
* ``igflow slo`` (``report``) asks Prometheus (``/api/v1/query``) for each tenant's SLI over the
  budget window, the budget left and the burn rate over the last hour;
* ``igflow slo gate`` prints the same and exits 1 when any tenant's budget is spent.

Exit codes follow the CLI's rule: 0 fine, 1 a budget is spent (gate), 2 a usage error or an
unreachable Prometheus (raised as :class:`IgflowError`: a gate that cannot look must not pass).
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from core import slo
from core.errors import IgflowError
from core.settings import Settings

__all__ = ["json_rows", "register"]

Handler = Callable[[argparse.Namespace, Settings], int]

#: The stack's Prometheus (dev/prometheus.py), unless ``--prometheus`` says otherwise.
PROMETHEUS_PORT_VARIABLE = "IGFLOW_PROMETHEUS_PORT"


def _default_url(settings: Settings) -> str:
    from core import prometheus_query  # httpx: only for a command that asks Prometheus

    return prometheus_query.default_url(os.environ, tls=settings.tls.enabled)


def _slos(settings: Settings, override: str | None) -> slo.SloFile:
    path = override or settings.run.slo_file
    return slo.load(Path(path) if path else None)


def _percent(value: float) -> str:
    return f"{value * 100:.3f}%"


def json_rows(rows: list[slo.BudgetRow]) -> list[dict[str, object]]:
    """The rows as ``igflow slo --json`` prints them (and the evidence bundle stores them)."""
    return [{**_asdict(r), "spent": r.spent} for r in rows]


def _print(rows: list[slo.BudgetRow], window: str, as_json: bool) -> None:
    if as_json:
        print(json.dumps(json_rows(rows), indent=2))
        return
    if not rows:
        print(f"no tenant had events in the budget window ({window})")
        return
    print(
        f"{'TENANT':<16} {'TIER':<9} {'SLO':<20} {'OBJECTIVE':>9} {'SLI (' + window + ')':>11} "
        f"{'BUDGET LEFT':>11} {'BURN 1h':>8}"
    )
    for r in rows:
        burn = "-" if r.burn_rate_1h is None else f"{r.burn_rate_1h:.2f}x"
        flag = "  SPENT" if r.spent else ""
        print(
            f"{r.tenant_id:<16} {r.tier:<9} {r.slo:<20} {_percent(r.objective):>9} "
            f"{_percent(r.sli):>11} {_percent(r.budget_left):>11} {burn:>8}{flag}"
        )


def _asdict(row: slo.BudgetRow) -> dict[str, object]:
    return {
        k: (None if isinstance(v, float) and not math.isfinite(v) else v)
        for k, v in (
            ("tenant_id", row.tenant_id),
            ("tier", row.tier),
            ("slo", row.slo),
            ("objective", row.objective),
            ("sli", row.sli),
            ("budget_left", row.budget_left),
            ("burn_rate_1h", row.burn_rate_1h),
        )
    }


def _at(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError as exc:
        msg = f"--at {text!r}: not a unix time or an ISO 8601 time"
        raise IgflowError(msg) from exc


def _cmd_slo(args: argparse.Namespace, settings: Settings) -> int:
    slos = _slos(settings, args.slos)
    if args.action == "rules":
        print(json.dumps(slo.rule_groups(slos), indent=2))
        return 0
    from core.prometheus_query import budgets  # the queries, shared with the API's dashboards

    url = args.prometheus or _default_url(settings)
    rows = budgets(slos, url, _at(args.at), verify=settings.client_verify())
    _print(rows, slos.budget_window, args.json)
    if args.action == "gate":
        spent = sorted({f"{r.tenant_id} ({r.slo})" for r in rows if r.spent})
        if spent:
            print(f"gate: error budget spent: {', '.join(spent)}")
            return 1
        print(f"gate: every budget holds ({len(rows)} tenant SLOs)")
    return 0


def register(add: Callable[[str, Handler, str], argparse.ArgumentParser]) -> None:
    """Add ``igflow slo [report|gate|rules]`` through the CLI's ``add(name, handler, help)``."""
    p = add("slo", _cmd_slo, "per-tenant SLOs: budgets from Prometheus, the release gate, rules")
    p.add_argument(
        "action",
        nargs="?",
        default="report",
        choices=("report", "gate", "rules"),
        help="report (default): each tenant's SLI, budget left and burn rate; gate: exit 1 when "
        "a budget is spent; rules: print the Prometheus rules of the SLO file",
    )
    p.add_argument("--slos", help="the SLO file (default: run.slo_file, else the shipped one)")
    p.add_argument(
        "--prometheus",
        help="Prometheus's URL (default: the stack's, 127.0.0.1:$IGFLOW_PROMETHEUS_PORT or 19090, "
        "https:// with TLS on; an https:// one is verified against tls.ca_file with TLS on)",
    )
    p.add_argument("--at", help="evaluate at this time (unix seconds or ISO 8601; default: now)")
    p.add_argument("--json", action="store_true")
