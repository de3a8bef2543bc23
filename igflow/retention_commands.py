"""``igflow retention apply|verify|audit``: retention enforced (:mod:`igflow.retention`).

``apply [--dry-run] [--now ISO] [--actor WHO]`` deletes what is past its retention tag at
``now`` (default: the wall clock) from the lake, the graph and Postgres, expires old lake
snapshots and audits every deletion in ``retention_runs``; ``--dry-run`` prints what it would
delete and changes nothing. ``verify [--now ISO]`` exits 0 only when nothing past retention
remains in any store. ``audit [--run ID]`` prints the audit, newest first. Output is JSON, one
object per store target. No database, or the migrations not applied (``igflow setup``), exits 2
before anything is deleted.
"""

from __future__ import annotations

import argparse
import getpass
import json
from collections.abc import Callable
from datetime import UTC, datetime

from core.errors import IgflowError
from core.settings import Settings

__all__ = ["parse_now", "register"]

Handler = Callable[[argparse.Namespace, Settings], int]


def parse_now(text: str | None) -> datetime:
    """``--now`` (ISO 8601; no offset reads as UTC), or the wall clock."""
    if not text:
        return datetime.now(UTC)
    try:
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        msg = f"--now {text!r}: {exc}"
        raise IgflowError(msg) from exc
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _apply(args: argparse.Namespace, settings: Settings) -> int:
    from igflow.retention import apply, plan

    now = parse_now(args.now)
    if args.dry_run:
        lines = plan(settings, now)
        print(json.dumps({"dry_run": True, "now": now.isoformat()}))
        for line in lines:
            print(json.dumps({"would_delete": line.rows, **line.as_dict()}, sort_keys=True))
        return 0
    run_id, lines = apply(settings, now, args.actor or getpass.getuser())
    print(json.dumps({"dry_run": False, "now": now.isoformat(), "run_id": run_id}))
    for line in lines:
        print(json.dumps({"deleted": line.rows, **line.as_dict()}, sort_keys=True))
    return 0


def _verify(args: argparse.Namespace, settings: Settings) -> int:
    from igflow.retention import verify

    now = parse_now(args.now)
    lines = verify(settings, now)
    for line in lines:
        print(json.dumps({"past_retention": line.rows, **line.as_dict()}, sort_keys=True))
    remaining = sum(line.rows for line in lines)
    print(json.dumps({"now": now.isoformat(), "past_retention": remaining, "ok": remaining == 0}))
    return 0 if remaining == 0 else 1


def _audit(args: argparse.Namespace, settings: Settings) -> int:
    from igflow.retention import audit

    for row in audit(settings.stores.postgres_dsn, args.limit, args.run):
        print(json.dumps(row, sort_keys=True))
    return 0


_ACTIONS: dict[str, Handler] = {"apply": _apply, "verify": _verify, "audit": _audit}


def register(add: Callable[[str, Handler, str], argparse.ArgumentParser]) -> None:
    """Add ``igflow retention ACTION`` through the CLI's ``add(name, handler, help)``."""
    p = add(
        "retention",
        lambda a, s: _ACTIONS[a.action](a, s),
        "delete what is past its retention tag from the lake, graph and Postgres (audited)",
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = actions.add_parser("apply", help="delete rows past retention, expire old snapshots")
    a.add_argument("--dry-run", action="store_true", help="print what would go; change nothing")
    a.add_argument("--now", help="reference time, ISO 8601 (default: now); cut-off = now - N days")
    a.add_argument("--actor", help="who (kept in the audit; default: the OS user)")
    v = actions.add_parser("verify", help="exit 0 only if nothing past retention remains")
    v.add_argument("--now", help="reference time, ISO 8601 (default: now)")
    au = actions.add_parser("audit", help="the audit of past runs, newest first (JSON lines)")
    au.add_argument("--run", help="one run's rows")
    au.add_argument("--limit", type=int, default=100)
