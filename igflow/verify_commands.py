"""``igflow verify``: is the landed content identical to another namespace's, or to its history?

Exit codes follow the CLI's rule: 0 when every group matches, 1 when any group differs or is
missing on one side, 2 on a usage error (raised as :class:`IgflowError`). Against another
namespace, the report ends with each table's data files: how many of the original's have a
byte-identical twin, of how many (equal content need not mean equal files: the commits decide
how rows split into files; ``igflow replay`` commits like the original to make them equal).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import UTC, datetime

from core.errors import IgflowError
from core.settings import Settings

__all__ = ["parse_window", "register"]

Handler = Callable[[argparse.Namespace, Settings], int]


def parse_window(text: str) -> tuple[datetime, datetime]:
    """``T1..T2`` (ISO 8601, a time without offset read as UTC) as a half-open ``[T1, T2)``."""
    start_text, sep, end_text = text.partition("..")
    if not sep:
        msg = f"window {text!r} is not T1..T2"
        raise IgflowError(msg)
    try:
        start, end = (datetime.fromisoformat(t.strip()) for t in (start_text, end_text))
    except ValueError as exc:
        msg = f"window {text!r}: {exc}"
        raise IgflowError(msg) from exc
    start, end = (t if t.tzinfo else t.replace(tzinfo=UTC) for t in (start, end))
    if not start < end:
        msg = f"window {text!r} is empty: T1 must come before T2"
        raise IgflowError(msg)
    return start, end


def _files_verdict(same: int, total: int) -> str:
    if total == 0:
        return "(no data files)"
    if same == total:
        return "(all)"
    return "(the others differ in bytes: rows split into files differently, or changed)"


def _short(hex_digest: str | None) -> str:
    return "-" if hex_digest is None else hex_digest[:16]


def _verify(args: argparse.Namespace, settings: Settings) -> int:
    from core.lazy_pandas import defer_pandas

    defer_pandas()  # the digest's reads need no pandas (core/lazy_pandas.py)
    from replay.verify import verify

    namespace = args.namespace or settings.lake.namespace
    report = verify(
        settings,
        namespace,
        args.against,
        parse_window(args.window) if args.window else None,
        tables=[t.strip() for t in args.tables.split(",") if t.strip()] if args.tables else None,
        from_history=args.from_history,
    )
    other = args.against or f"{namespace} (scan)"
    original = f"{namespace} (history)" if args.from_history or not args.against else namespace
    print(f"original: {original}   other: {other}")
    print(
        f"{'table':<14} {'tenant':<14} {'part':>4} {'offsets':>17} {'rows':>8}"
        f" {'original':<16} {'other':<16} status"
    )
    for g in report.groups:
        table, tenant, partition = g.key
        side = g.original or g.other
        assert side is not None  # a group exists on at least one side
        offsets = f"{side.min_offset}..{side.max_offset}"
        rows = f"{side.count}"
        if g.original is not None and g.other is not None and g.original.count != g.other.count:
            rows = f"{g.original.count}/{g.other.count}"
        print(
            f"{table:<14} {tenant or '-':<14} {partition:>4} {offsets:>17} {rows:>8}"
            f" {_short(g.original.hex if g.original else None):<16}"
            f" {_short(g.other.hex if g.other else None):<16} {g.status}"
        )
    for key, diff in report.differences.items():
        print(f"\nfirst differences in {key[0]} tenant={key[1] or '-'} partition={key[2]}:")
        for row in diff.only_in_original:
            print(f"  - only in original: {row}")
        for row in diff.only_in_other:
            print(f"  + only in other:    {row}")
    tables = list(dict.fromkeys([g.key[0] for g in report.groups] + list(report.files)))
    if tables:
        print(f"\n{'per table':<14} {'groups matching':>17}   data files byte-identical")
    for table in tables:
        groups = [g for g in report.groups if g.key[0] == table]
        matching = f"{sum(g.status == 'match' for g in groups)} of {len(groups)}"
        files = report.files.get(table)
        described = "- (not compared: one side only, or no other namespace)"
        if files is not None:
            same, total = files
            described = f"{same} of {total} {_files_verdict(same, total)}"
        print(f"{table:<14} {matching:>17}   {described}")
    for table, (left, right) in report.retention_removed.items():
        print(
            f"{table:<14} rows removed by igflow retention, counted as landed: "
            f"{left} in the original, {right} in the other"
        )
    matched = sum(g.status == "match" for g in report.groups)
    verdict = "IDENTICAL" if report.identical else "DIFFERENT"
    print(f"{matched}/{len(report.groups)} group(s) match: {verdict}")
    return 0 if report.identical else 1


def register(add: Callable[[str, Handler, str], argparse.ArgumentParser]) -> None:
    """Add ``igflow verify`` through the CLI's ``add(name, handler, help)``."""
    p = add("verify", _verify, "compare landed content digests with another namespace or history")
    p.add_argument("--namespace", help="the original namespace (default: lake.namespace)")
    p.add_argument(
        "--against", help="the namespace to compare with (default: the original's own history)"
    )
    p.add_argument("--window", help="event-time window T1..T2 (ISO 8601, half-open; scans only)")
    p.add_argument("--tables", help="comma-separated tables (default: every verifiable table)")
    p.add_argument(
        "--from-history",
        action="store_true",
        help="take the original's digests from its snapshot summaries (no scan)",
    )
