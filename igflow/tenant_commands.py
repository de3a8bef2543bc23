"""``igflow tenants list|add|remove|seed``: the tenant registry (:mod:`tenancy.registry`).

``add`` registers a tenant or replaces its settings (``--source`` repeatable; none: any source;
``--inactive`` keeps it registered but rejects its signals). ``remove`` exits 1 when the tenant was
not registered. ``seed`` registers the demo workload's tenants and leaves existing ones as they
are. The flow picks changes up within ``validate.tenant_refresh_seconds``. A registry that cannot
be reached, or whose migrations were not applied (``igflow setup``), exits 2.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from core.settings import Settings

if TYPE_CHECKING:
    from tenancy.registry import TenantEntry

__all__ = ["register"]

Handler = Callable[[argparse.Namespace, Settings], int]


def _sources(entry_sources: frozenset[str] | None) -> str:
    return "*" if entry_sources is None else ",".join(sorted(entry_sources)) or "(none)"


def _print_table(entries: Sequence[TenantEntry]) -> None:
    print(f"{'tenant':<16} {'active':<6}  sources")
    for e in entries:
        print(f"{e.tenant_id:<16} {'yes' if e.active else 'no':<6}  {_sources(e.sources)}")


def _list(args: argparse.Namespace, settings: Settings) -> int:
    from tenancy.registry import list_tenants

    entries = list_tenants(settings.stores.postgres_dsn)
    if args.json:
        rows = [
            {
                "tenant_id": e.tenant_id,
                "active": e.active,
                "sources": None if e.sources is None else sorted(e.sources),
            }
            for e in entries
        ]
        print(json.dumps(rows))
        return 0
    _print_table(entries)
    print(f"{len(entries)} tenant(s)")
    return 0


def _add(args: argparse.Namespace, settings: Settings) -> int:
    from tenancy.registry import upsert_tenant

    entry = upsert_tenant(
        settings.stores.postgres_dsn, args.tenant, sources=args.source, active=not args.inactive
    )
    _print_table([entry])
    return 0


def _remove(args: argparse.Namespace, settings: Settings) -> int:
    from tenancy.registry import remove_tenant

    if not remove_tenant(settings.stores.postgres_dsn, args.tenant):
        print(f"no tenant {args.tenant!r} is registered")
        return 1
    print(f"removed {args.tenant}")
    return 0


def _seed(args: argparse.Namespace, settings: Settings) -> int:
    from igflow.workload import seed_demo_tenants

    added = seed_demo_tenants(settings.stores.postgres_dsn, args.count)
    print(json.dumps({"registered": added}))
    return 0


def _offboard(args: argparse.Namespace, settings: Settings) -> int:
    from igflow.key_commands import offboard

    return offboard(args, settings)


_ACTIONS: dict[str, Handler] = {
    "list": _list,
    "add": _add,
    "remove": _remove,
    "seed": _seed,
    "offboard": _offboard,
}


def register(add: Callable[[str, Handler, str], argparse.ArgumentParser]) -> None:
    """Add ``igflow tenants ACTION`` through the CLI's ``add(name, handler, help)``."""
    p = add("tenants", lambda a, s: _ACTIONS[a.action](a, s), "the tenant registry (Postgres)")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    ls = actions.add_parser("list", help="list the registered tenants")
    ls.add_argument("--json", action="store_true")

    a = actions.add_parser("add", help="register a tenant or replace its settings")
    a.add_argument("tenant")
    a.add_argument(
        "--source", action="append", help="an accepted source (repeatable; none: any source)"
    )
    a.add_argument("--inactive", action="store_true", help="register it, but reject its signals")

    r = actions.add_parser("remove", help="delete a tenant from the registry")
    r.add_argument("tenant")

    o = actions.add_parser(
        "offboard", help="destroy the tenant's keys (crypto-shredding) and deactivate it"
    )
    o.add_argument("tenant")
    o.add_argument("--note", help="why (kept in the key audit)")

    s = actions.add_parser("seed", help="register the demo tenants tenant-00 ... (idempotent)")
    s.add_argument("--count", type=int, default=10)
