"""``igflow residency show|release``: where each residency lands (:mod:`core.residency`).

``show`` prints the configured map (``residency.namespaces``, ``residency.key_prefixes``), the
residency this configuration's flow serves (its ``lake.namespace``), and every tenant the policy
names with its residency. ``release [--tenant T]`` re-sends the records held as
``RESIDENCY_BLOCKED`` in this namespace's quarantine table (:mod:`igflow.residency_release`);
run it once the cause is fixed (the copies are judged again).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

from core.residency import parse_map, served_residency
from core.settings import Settings

__all__ = ["register"]

Handler = Callable[[argparse.Namespace, Settings], int]


def _show(args: argparse.Namespace, settings: Settings) -> int:
    from operators.tenancy import TenancyPolicy

    r = settings.residency
    served = served_residency(
        r.namespaces, r.key_prefixes, settings.lake.namespace, settings.stores.key_prefix
    )
    policy = TenancyPolicy.load(settings.policies_dir)
    tenants = {t: policy.tags(t).residency for t in (args.tenant or ())}
    out = {
        "namespaces": parse_map(r.namespaces),
        "key_prefixes": parse_map(r.key_prefixes),
        "lake_namespace": settings.lake.namespace,
        "serves": served,
        "default_residency": policy.tags("").residency,
        "tenants": tenants,
    }
    print(json.dumps(out, indent=1))
    return 0


def _release(args: argparse.Namespace, settings: Settings) -> int:
    from igflow.residency_release import release_blocked

    report = release_blocked(settings, args.tenant)
    print(
        json.dumps(
            {
                "released": report.sent,
                "held": report.held,
                "already_released": report.already,
                "tenant": report.tenant,
            }
        )
    )
    return 0


_ACTIONS: dict[str, Handler] = {"show": _show, "release": _release}


def register(add: Callable[[str, Handler, str], argparse.ArgumentParser]) -> None:
    """Add ``igflow residency ACTION`` through the CLI's ``add(name, handler, help)``."""
    p = add(
        "residency",
        lambda a, s: _ACTIONS[a.action](a, s),
        "where each residency lands; release records held as RESIDENCY_BLOCKED",
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    sh = actions.add_parser("show", help="the residency map and what this flow serves (JSON)")
    sh.add_argument("--tenant", action="append", help="also show this tenant's residency")
    rl = actions.add_parser("release", help="re-send the records held as RESIDENCY_BLOCKED")
    rl.add_argument("--tenant", help="only this tenant's")
