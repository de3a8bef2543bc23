"""``igflow keys list | rotate | audit`` and ``igflow tenants offboard``: tenant-scoped keys
(:mod:`tenancy.keys`)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

from core.settings import Settings

# tenancy (psycopg, the KMS) is imported by the commands that use it, not at igflow's start.

__all__ = ["offboard", "register"]

Handler = Callable[[argparse.Namespace, Settings], int]


def _list(args: argparse.Namespace, settings: Settings) -> int:
    from tenancy.keys import tenant_keys

    keys = tenant_keys(settings).data_keys(args.tenant)
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "tenant_id": k.tenant_id,
                        "scope": k.scope,
                        "version": k.version,
                        "effective_from": k.effective_from.isoformat(),
                        "kek_version": k.kek_version,
                    }
                    for k in keys
                ]
            )
        )
        return 0
    print(f"{'tenant':<24} {'scope':<20} {'version':>7} {'kek':>4}  effective from")
    for k in keys:
        print(
            f"{k.tenant_id:<24} {k.scope:<20} {k.version:>7} {k.kek_version:>4}  "
            f"{k.effective_from.isoformat()}"
        )
    return 0


def _rotate(args: argparse.Namespace, settings: Settings) -> int:
    from tenancy.keys import tenant_keys

    done = tenant_keys(settings).rotate(args.tenant)
    print(
        json.dumps(
            {
                "tenant_id": done.tenant_id,
                "kek_version": done.kek_version,
                "rewrapped_data_keys": done.rewrapped,
                "new_data_keys": [
                    {
                        "scope": k.scope,
                        "version": k.version,
                        "effective_from": k.effective_from.isoformat(),
                    }
                    for k in done.new_data_keys
                ],
            }
        )
    )
    return 0


def _audit(args: argparse.Namespace, settings: Settings) -> int:
    from tenancy.keys import tenant_keys

    for at, action, detail in tenant_keys(settings).audit(args.tenant):
        print(json.dumps({"at": at.isoformat(), "action": action, **detail}, sort_keys=True))
    return 0


def offboard(args: argparse.Namespace, settings: Settings) -> int:
    """Destroy the tenant's keys (its encrypted fields become unreadable everywhere), and mark
    it inactive in the registry so no new signal of it lands."""
    from tenancy.keys import tenant_keys
    from tenancy.registry import list_tenants, upsert_tenant

    dsn = settings.stores.postgres_dsn
    entry = next((e for e in list_tenants(dsn) if e.tenant_id == args.tenant), None)
    if entry is not None:
        upsert_tenant(dsn, args.tenant, sources=entry.sources, active=False)
    destroyed = tenant_keys(settings).offboard(args.tenant, note=args.note or "")
    print(
        json.dumps(
            {"tenant_id": args.tenant, "destroyed": destroyed, "deactivated": entry is not None}
        )
    )
    return 0


_ACTIONS: dict[str, Handler] = {"list": _list, "rotate": _rotate, "audit": _audit}


def register(add: Callable[[str, Handler, str], argparse.ArgumentParser]) -> None:
    p = add("keys", lambda a, s: _ACTIONS[a.action](a, s), "tenant-scoped encryption keys")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    ls = actions.add_parser("list", help="data keys per tenant and scope (never the keys)")
    ls.add_argument("--tenant")
    ls.add_argument("--json", action="store_true")
    r = actions.add_parser(
        "rotate", help="new KEK, data keys re-wrapped, new data keys for new data; no downtime"
    )
    r.add_argument("--tenant", required=True)
    a = actions.add_parser("audit", help="the tenant's key events")
    a.add_argument("--tenant", required=True)
