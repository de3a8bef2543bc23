"""``igflow switch list|off|on|release|audit``: kill switches (:mod:`tenancy.switches`).

``off KIND NAME`` and ``on KIND NAME`` change a switch (kinds: ``source``, ``tenant``, ``flow``,
``operation``) and audit the change (``--note`` says why, ``--actor`` who; default the OS user).
A running flow and every ``igflow serve`` follow within ``switches.refresh_seconds``.

``on source|tenant NAME`` then waits ``switches.release_delay_seconds`` (the flow's last holds
reach the quarantine table) and re-sends the records the switch held (:mod:`igflow.switch_release`);
``--no-release`` skips that, ``release KIND NAME`` does it later (again: it sends only what no
release sent). ``release`` refuses while the switch is off. No database, or the migrations not
applied (``igflow setup``), exits 2.
"""

from __future__ import annotations

import argparse
import getpass
import json
import time
from collections.abc import Callable

from core.settings import Settings
from core.switches import HELD_REASONS, SwitchKind

__all__ = ["register"]

Handler = Callable[[argparse.Namespace, Settings], int]


def _list(args: argparse.Namespace, settings: Settings) -> int:
    from tenancy.switches import list_switches

    states = list_switches(settings.stores.postgres_dsn)
    if args.json:
        rows = [
            {
                "kind": s.kind.value,
                "name": s.name,
                "enabled": s.enabled,
                "note": s.note,
                "updated_by": s.updated_by,
                "updated_at": s.updated_at.isoformat(),
            }
            for s in states
        ]
        print(json.dumps(rows))
        return 0
    print(f"{'kind':<10} {'name':<20} {'state':<5}  {'updated_at':<32} by / note")
    for s in states:
        state = "on" if s.enabled else "OFF"
        note = f" / {s.note}" if s.note else ""
        print(
            f"{s.kind.value:<10} {s.name:<20} {state:<5}  "
            f"{s.updated_at.isoformat():<32} {s.updated_by}{note}"
        )
    print(f"{len(states)} switch(es) set; every other switch is on")
    return 0


def _audit(args: argparse.Namespace, settings: Settings) -> int:
    from tenancy.switches import audit_log

    entries = audit_log(settings.stores.postgres_dsn, args.kind, args.name, args.limit)
    rows = [
        {
            "kind": e.kind.value,
            "name": e.name,
            "was_enabled": e.was_enabled,
            "enabled": e.enabled,
            "actor": e.actor,
            "note": e.note,
            "at": e.at.isoformat(),
        }
        for e in entries
    ]
    print(json.dumps(rows, indent=None if args.json else 1))
    return 0


def _change(enabled: bool) -> Handler:
    def handler(args: argparse.Namespace, settings: Settings) -> int:
        from tenancy.switches import set_switch

        entry = set_switch(
            settings.stores.postgres_dsn,
            args.kind,
            args.name,
            enabled=enabled,
            actor=args.actor or getpass.getuser(),
            note=args.note,
        )
        out = {
            "kind": entry.kind.value,
            "name": entry.name,
            "enabled": entry.enabled,
            "was_enabled": entry.was_enabled,
            "at": entry.at.isoformat(),
            "effective_within_seconds": settings.switches.refresh_seconds,
        }
        print(json.dumps(out))
        if enabled and entry.kind in HELD_REASONS and not args.no_release:
            if not args.no_wait:
                time.sleep(settings.switches.release_delay_seconds)
            return _do_release(entry.kind, args.name, settings)
        return 0

    return handler


def _release(args: argparse.Namespace, settings: Settings) -> int:
    from tenancy.switches import list_switches

    kind = SwitchKind(args.kind)
    off = any(
        s.kind is kind and s.name == args.name and not s.enabled
        for s in list_switches(settings.stores.postgres_dsn)
    )
    if off:
        print(f"{kind.value} {args.name} is switched off: switch it on first")
        return 1
    return _do_release(kind, args.name, settings)


def _do_release(kind: SwitchKind, name: str, settings: Settings) -> int:
    from igflow.switch_release import release_held

    report = release_held(settings, kind, name)
    print(
        json.dumps(
            {
                "released": report.sent,
                "held": report.held,
                "already_released": report.already,
                "kind": kind.value,
                "name": name,
            }
        )
    )
    return 0


_ACTIONS: dict[str, Handler] = {
    "list": _list,
    "off": _change(enabled=False),
    "on": _change(enabled=True),
    "release": _release,
    "audit": _audit,
}

_KINDS = tuple(k.value for k in SwitchKind)


def register(add: Callable[[str, Handler, str], argparse.ArgumentParser]) -> None:
    """Add ``igflow switch ACTION`` through the CLI's ``add(name, handler, help)``."""
    p = add(
        "switch",
        lambda a, s: _ACTIONS[a.action](a, s),
        "kill switches per source, tenant, flow and API operation (Postgres, audited)",
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    ls = actions.add_parser("list", help="the switches someone set (all others are on)")
    ls.add_argument("--json", action="store_true")

    for action, text in (("off", "switch off"), ("on", "switch on")):
        c = actions.add_parser(action, help=f"{text} a source, tenant, flow or API operation")
        c.add_argument("kind", choices=_KINDS)
        c.add_argument("name", help="the source, tenant, flow (coherence) or operation name")
        c.add_argument("--note", help="why (kept in the audit)")
        c.add_argument("--actor", help="who (default: the OS user)")
        if action == "on":
            c.add_argument(
                "--no-release", action="store_true", help="do not re-send the held records"
            )
            c.add_argument(
                "--no-wait",
                action="store_true",
                help="release at once, without waiting switches.release_delay_seconds",
            )

    r = actions.add_parser("release", help="re-send what a source or tenant switch held")
    r.add_argument("kind", choices=("source", "tenant"))
    r.add_argument("name")

    a = actions.add_parser("audit", help="the latest changes, newest first (JSON)")
    a.add_argument("kind", nargs="?", choices=_KINDS)
    a.add_argument("name", nargs="?")
    a.add_argument("--limit", type=int, default=100)
    a.add_argument("--json", action="store_true", help="one line")
