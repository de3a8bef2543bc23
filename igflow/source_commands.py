"""``igflow sources add|set|list|show|remove|audit``: the source registry (:mod:`tenancy.sources`).

``add NAME`` registers a source with its owners (``--owner``, repeatable), the transports it may
arrive by (``--transport kafka|api``, repeatable), its license and terms of service
(``--license``, ``--tos``), the retention of what it sends (``--retention standard-365d``), its
residency (``--residency EU``, empty: any) and SLA window (``--sla-seconds``, none by default).
``set NAME`` changes any of those, ``remove NAME`` unregisters it; each change is a new,
audited revision (``--actor``, default the OS user; ``--note`` says why) that applies to records
whose Kafka timestamp is ``sources.grace_seconds`` or more after it. ``list`` shows the
registered sources, ``show NAME`` one source and its revisions, ``audit [NAME]`` the latest
changes. The flow reads the registry only when ``sources.mode`` is ``check`` or ``enforce``.
No database, or the migrations not applied (``igflow setup``), exits 2.
"""

from __future__ import annotations

import argparse
import getpass
import json
from collections.abc import Callable
from typing import Any

from core.settings import Settings
from core.sources import TRANSPORTS, SourceEntry

__all__ = ["register"]

Handler = Callable[[argparse.Namespace, Settings], int]


def _revision_json(rev: Any) -> dict[str, Any]:
    entry = rev.entry
    out: dict[str, Any] = {
        "name": rev.name,
        "action": rev.action,
        "actor": rev.actor,
        "note": rev.note,
        "at": rev.at.isoformat(),
        "effective_from": rev.effective_from.isoformat(),
    }
    if entry is not None:
        out.update(
            owners=list(entry.owners),
            transports=list(entry.transports),
            license=entry.license,
            tos=entry.tos,
            retention=entry.retention,
            residency=entry.residency,
            sla_seconds=entry.sla_seconds,
        )
    return out


def _audited(
    change: Callable[..., Any], args: argparse.Namespace, settings: Settings, *what: Any
) -> int:
    """Apply one registry change (add, set, remove) as ``--actor`` with ``--note``, after the
    grace period, and print the revision it wrote."""
    rev = change(
        settings.stores.postgres_dsn,
        *what,
        actor=args.actor or getpass.getuser(),
        note=args.note,
        grace_seconds=settings.sources.grace_seconds,
    )
    print(json.dumps(_revision_json(rev)))
    return 0


def _add(args: argparse.Namespace, settings: Settings) -> int:
    from tenancy.sources import add_source

    entry = SourceEntry(
        args.name,
        tuple(args.owner or ()),
        tuple(dict.fromkeys(args.transport or ())),
        args.license or "",
        args.tos or "",
        args.retention or "",
        args.residency or "",
        args.sla_seconds,
    )
    return _audited(add_source, args, settings, entry)


def _set(args: argparse.Namespace, settings: Settings) -> int:
    from tenancy.sources import set_source

    changes: dict[str, Any] = {}
    if args.owner:
        changes["owners"] = tuple(args.owner)
    if args.transport:
        changes["transports"] = tuple(dict.fromkeys(args.transport))
    for field in ("license", "tos", "retention", "residency"):
        value = getattr(args, field)
        if value is not None:
            changes[field] = value
    if args.sla_seconds is not None:
        changes["sla_seconds"] = args.sla_seconds
    if args.no_sla:
        changes["sla_seconds"] = None
    if not changes:
        print("nothing to change: give at least one option")
        return 1
    return _audited(set_source, args, settings, args.name, changes)


def _remove(args: argparse.Namespace, settings: Settings) -> int:
    from tenancy.sources import remove_source

    return _audited(remove_source, args, settings, args.name)


def _list(args: argparse.Namespace, settings: Settings) -> int:
    from tenancy.sources import list_sources

    revs = list_sources(settings.stores.postgres_dsn)
    if args.json:
        print(json.dumps([_revision_json(r) for r in revs]))
        return 0
    print(f"{'name':<20} {'transports':<10} {'residency':<9} {'retention':<16} license / owners")
    for r in revs:
        e = r.entry
        assert e is not None  # list_sources leaves removed sources out
        print(
            f"{e.name:<20} {','.join(e.transports):<10} {e.residency or '-':<9} "
            f"{e.retention:<16} {e.license} / {', '.join(e.owners)}"
        )
    print(f"{len(revs)} source(s) registered (sources.mode={settings.sources.mode})")
    return 0


def _show(args: argparse.Namespace, settings: Settings) -> int:
    from tenancy.sources import revisions

    revs = revisions(settings.stores.postgres_dsn, args.name)
    if not revs:
        print(f"source {args.name!r} was never registered")
        return 1
    current = revs[-1]
    out = {
        "registered": current.action != "remove",
        "current": _revision_json(current),
        "revisions": [_revision_json(r) for r in revs],
    }
    print(json.dumps(out, indent=1))
    return 0


def _audit(args: argparse.Namespace, settings: Settings) -> int:
    from tenancy.sources import revisions

    revs = revisions(settings.stores.postgres_dsn, args.name, limit=args.limit)
    rows = [_revision_json(r) for r in reversed(revs)]
    print(json.dumps(rows, indent=None if args.json else 1))
    return 0


_ACTIONS: dict[str, Handler] = {
    "add": _add,
    "set": _set,
    "remove": _remove,
    "list": _list,
    "show": _show,
    "audit": _audit,
}


def _terms(p: argparse.ArgumentParser) -> None:
    p.add_argument("--owner", action="append", help="an owner (repeat for several)")
    p.add_argument(
        "--transport", action="append", choices=TRANSPORTS, help="allowed transport (repeatable)"
    )
    p.add_argument("--license", help="the license of what it sends")
    p.add_argument("--tos", help="terms of service (URL or reference)")
    p.add_argument("--retention", help="retention of what it sends, e.g. standard-365d")
    p.add_argument("--residency", help="residency code (US, EU); empty: any")
    p.add_argument("--sla-seconds", type=float, help="max seconds from event time to Kafka")


def _who(p: argparse.ArgumentParser) -> None:
    p.add_argument("--note", help="why (kept in the audit)")
    p.add_argument("--actor", help="who (default: the OS user)")


def register(add: Callable[[str, Handler, str], argparse.ArgumentParser]) -> None:
    """Add ``igflow sources ACTION`` through the CLI's ``add(name, handler, help)``."""
    p = add(
        "sources",
        lambda a, s: _ACTIONS[a.action](a, s),
        "the source registry: owners, transport, license/TOS, retention, residency, SLA (audited)",
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    a = actions.add_parser("add", help="register a source")
    a.add_argument("name")
    _terms(a)
    _who(a)

    s = actions.add_parser("set", help="change a registered source")
    s.add_argument("name")
    _terms(s)
    s.add_argument("--no-sla", action="store_true", help="drop the SLA window")
    _who(s)

    r = actions.add_parser("remove", help="unregister a source (its history stays)")
    r.add_argument("name")
    _who(r)

    ls = actions.add_parser("list", help="the registered sources")
    ls.add_argument("--json", action="store_true")

    sh = actions.add_parser("show", help="one source and its revisions (JSON)")
    sh.add_argument("name")

    au = actions.add_parser("audit", help="the latest changes, newest first (JSON)")
    au.add_argument("name", nargs="?")
    au.add_argument("--limit", type=int, default=100)
    au.add_argument("--json", action="store_true", help="one line")
