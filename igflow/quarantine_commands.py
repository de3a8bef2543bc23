"""``igflow quarantine list|release|discard``: operate on quarantined drift batches."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime

from core.settings import Settings

__all__ = ["register"]

Handler = Callable[[argparse.Namespace, Settings], int]


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _list(args: argparse.Namespace, settings: Settings) -> int:
    from igflow.quarantine import list_batches, rejects_summary

    batches = list_batches(settings, tenant=args.tenant, status=args.status)
    if args.json:
        rows = [
            {
                "batch_id": b.batch_id,
                "tenant_id": b.tenant_id,
                "reason": b.reason,
                "type": b.type,
                "types": list(b.types),
                "rows": b.rows,
                "first_ts": b.first_ts.isoformat() if b.first_ts else None,
                "last_ts": b.last_ts.isoformat() if b.last_ts else None,
                "psi": b.psi,
                "ks": b.ks,
                "status": b.status,
            }
            for b in batches
        ]
        print(json.dumps(rows, indent=2))
        return 0
    header = f"{'batch':<32}  {'tenant':<12} {'type':<12} {'reason':<15} {'rows':>5}"
    print(f"{header} {'psi':>6} {'ks':>6}  {'first event':<20} status")
    for b in batches:
        first = b.first_ts.strftime("%Y-%m-%d %H:%M:%S") if b.first_ts else "-"
        print(
            f"{b.batch_id:<32}  {b.tenant_id:<12} {b.type:<12} {b.reason:<15} {b.rows:>5}"
            f" {_fmt(b.psi):>6} {_fmt(b.ks):>6}  {first:<20} {b.status}"
        )
    print(f"{len(batches)} batch(es), {sum(b.rows for b in batches):,} record(s)")
    if args.rejects:
        print("\nrecords rejected one by one (tenant, stage, reason):")
        for (tenant, stage, reason), count in rejects_summary(settings).items():
            print(f"  {tenant:<12} {stage:<9} {reason:<20} {count:>8,}")
    return 0


def _decide(action: str) -> Handler:
    def handler(args: argparse.Namespace, settings: Settings) -> int:
        from igflow.quarantine import decide

        def progress(done: int, total: int) -> None:
            sys.stderr.write(f"\rre-sending {done:,}/{total:,} records")
            if done == total:
                sys.stderr.write("\n")

        entry = decide(
            settings,
            args.batch_id,
            action,
            actor=args.actor or getpass.getuser(),
            note=args.note,
            now=datetime.now(UTC),
            progress=progress if sys.stderr.isatty() else None,
        )
        entry["at"] = entry["at"].isoformat()
        print(json.dumps(entry))
        return 0

    return handler


def register(add: Callable[[str, Handler, str], argparse.ArgumentParser]) -> None:
    """Add ``igflow quarantine`` through the CLI's ``add(name, handler, help)``."""
    handlers: dict[str, Handler] = {
        "list": _list,
        "release": _decide("released"),
        "discard": _decide("discarded"),
    }
    p = add("quarantine", lambda a, s: handlers[a.action](a, s), "quarantined drift batches")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    ls = actions.add_parser("list", help="quarantined batches per tenant")
    ls.add_argument("--tenant", help="only this tenant")
    ls.add_argument("--status", choices=("open", "released", "discarded"))
    ls.add_argument("--rejects", action="store_true", help="also count one-by-one rejects")
    ls.add_argument("--json", action="store_true")
    for name, text in (
        ("release", "re-send a batch through Kafka, past the drift check"),
        ("discard", "close a batch without landing it"),
    ):
        d = actions.add_parser(name, help=text)
        d.add_argument("batch_id")
        d.add_argument("--actor", help="who decides (default: the OS user)")
        d.add_argument("--note", help="why (kept in the audit table)")
