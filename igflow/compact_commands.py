"""``igflow compact``: rewrite the lake tables' small data files into few (sinks/lake_compact.py).

``igflow compact [--table NAME ...] [--target-mb 64] [--min-files 2] [--dry-run]`` rewrites, in
each table of ``lake.namespace`` (signals, scores, quarantine, deconfliction by default), the
data files below three quarters of ``--target-mb`` into files of about that size, partition by
partition, rows unchanged, in ``replace`` commits that a running flow's commits may interleave
with. Output is JSON lines on stdout: one per commit as it lands (the progress of a long
compaction), then one per table (files before and after); ``--dry-run`` prints each table's plan
and changes nothing. A table that does not exist is reported and skipped.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Callable

from core.errors import IgflowError
from core.settings import Settings

__all__ = ["register"]

Handler = Callable[[argparse.Namespace, Settings], int]

#: The tables ``igflow compact`` rewrites unless ``--table`` names some.
TABLES = ("signals", "scores", "quarantine", "deconfliction")


def _compact(args: argparse.Namespace, settings: Settings) -> int:
    from pyiceberg.exceptions import CommitFailedException, NoSuchTableError
    from pyiceberg.table import Table

    from core.catalog import catalog
    from sinks.lake_compact import (
        CompactionCommit,
        compact_table,
        data_files,
        plan_compaction,
        small_files,
    )

    if args.target_mb <= 0 or args.min_files < 2:
        msg = (
            f"--target-mb must be > 0 and --min-files >= 2 (got {args.target_mb}, {args.min_files})"
        )
        raise IgflowError(msg)
    target = int(args.target_mb * 1024 * 1024)
    cat = catalog(settings)
    namespace = settings.lake.namespace
    for name in args.table or TABLES:
        identifier = (namespace, name)
        try:
            table = cat.load_table(identifier)
        except NoSuchTableError:
            print(json.dumps({"table": f"{namespace}.{name}", "skipped": "no such table"}))
            continue
        if args.dry_run:
            files, small = small_files(table, target)
            groups = plan_compaction(table, target, min_files=args.min_files)
            print(
                json.dumps(
                    {
                        "table": f"{namespace}.{name}",
                        "dry_run": True,
                        "files": files,
                        "small_files": small,
                        "would_rewrite": sum(len(g.files) for g in groups),
                        "into": len(groups),
                        "rows": sum(g.rows for g in groups),
                        "bytes": sum(g.bytes for g in groups),
                    }
                )
            )
            continue

        def shown(commit: CompactionCommit, table_name: str = f"{namespace}.{name}") -> None:
            fields = dataclasses.asdict(commit)
            line = {"table": table_name, "commit": fields.pop("snapshot_id"), **fields}
            print(json.dumps(line), flush=True)

        def reload(ident: tuple[str, str] = identifier) -> Table:
            return cat.load_table(ident)

        files = data_files(table)  # before: the commits update ``table``
        try:
            commits = compact_table(
                table,
                reload,
                target_bytes=target,
                min_files=args.min_files,
                progress=shown,
            )
        except CommitFailedException as exc:  # lost every race: a busy table, try again
            msg = f"{exc}; what landed before stays, run it again"
            raise IgflowError(msg) from exc
        after = data_files(cat.load_table(identifier))
        print(
            json.dumps(
                {
                    "table": f"{namespace}.{name}",
                    "files_before": files,
                    "files_after": after,
                    "commits": len(commits),
                    "rewritten": sum(c.replaced for c in commits),
                    "rows": sum(c.rows for c in commits),
                }
            )
        )
    return 0


def register(add: Callable[[str, Handler, str], argparse.ArgumentParser]) -> None:
    """Add ``igflow compact`` through the CLI's ``add(name, handler, help)``."""
    p = add(
        "compact",
        _compact,
        "rewrite the lake tables' small data files into few (rows unchanged; a replace commit)",
    )
    p.add_argument(
        "--table", action="append", choices=TABLES, help="a table to compact (repeat; default: all)"
    )
    p.add_argument(
        "--target-mb", type=float, default=64.0, help="size of the files written (default 64)"
    )
    p.add_argument(
        "--min-files", type=int, default=2, help="fewest files a rewritten group holds (>= 2)"
    )
    p.add_argument("--dry-run", action="store_true", help="print what would be rewritten")
