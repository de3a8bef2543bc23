"""``igflow compact``: rewrite the lake tables' small data files into few (sinks/lake_compact.py).

``igflow compact [--table NAME ...] [--target-mb 64] [--min-files 2] [--dry-run]`` rewrites, in
each table of ``lake.namespace`` (signals, scores, quarantine, deconfliction by default), the
data files below three quarters of ``--target-mb`` into files of about that size, partition by
partition, rows unchanged, in ``replace`` commits that a running flow's commits may interleave
with. Output is JSON lines on stdout: one per commit as it lands (the progress of a long
compaction), then one per table (files before and after); ``--dry-run`` prints each table's plan
and changes nothing. A table that does not exist is reported and skipped.

``igflow compact --every SECONDS`` is the same on a schedule, until SIGINT or SIGTERM: a round
every so many seconds, by size tier (``--fanout``, 8 by default there; ``--min-files`` then
defaults to it), so that what a round wrote is not rewritten by the next unless enough files of
its size have joined it (sinks/lake_compact.py, "Tiers"). Each round prints its commits as they
land and one line (``{"round": N, ...}``) with what it rewrote per table; a table that fails
(its catalog down, every race lost) is a warning with its reason and the next round tries again.
A signal lets the group being rewritten finish, commits it and exits 0.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from core.errors import IgflowError
from core.settings import Settings

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog
    from pyiceberg.table import Table

__all__ = ["register"]

Handler = Callable[[argparse.Namespace, Settings], int]

log = logging.getLogger(__name__)

#: The tables ``igflow compact`` rewrites unless ``--table`` names some.
TABLES = ("signals", "scores", "quarantine", "deconfliction")


def _compact(args: argparse.Namespace, settings: Settings) -> int:
    from core.catalog import catalog

    fanout = args.fanout if args.fanout is not None else (0 if args.every is None else 8)
    min_files = args.min_files if args.min_files is not None else max(2, fanout)
    problems = [
        f"{rule} (got {value})"
        for rule, value, bad in (
            ("--target-mb must be > 0", args.target_mb, args.target_mb <= 0),
            ("--every must be > 0", args.every, args.every is not None and args.every <= 0),
            ("--min-files must be >= 2", min_files, min_files < 2),
            ("--fanout must be >= 0", fanout, fanout < 0),
        )
        if bad
    ]
    if problems:
        raise IgflowError("; ".join(problems))
    rounds = _Rounds(
        catalog(settings),
        settings.lake.namespace,
        args.table or TABLES,
        target=int(args.target_mb * 1024 * 1024),
        min_files=min_files,
        fanout=fanout,
    )
    if args.dry_run:
        rounds.dry_run()
        return 0
    if args.every is None:
        rounds.once()
        return 0
    return rounds.every(args.every)


class _Rounds:
    """The compaction of a namespace's tables: once (raising an igflow error) or a round every
    so many seconds (a table's error a warning, tried again)."""

    def __init__(
        self,
        cat: Catalog,
        namespace: str,
        names: Sequence[str],
        *,
        target: int,
        min_files: int,
        fanout: int,
    ) -> None:
        self.cat = cat
        self.namespace = namespace
        self.names = tuple(names)
        self.target = target
        self.min_files = min_files
        self.fanout = fanout
        self.stopping = threading.Event()

    def _skipped(self, name: str) -> dict[str, object]:
        return {"table": f"{self.namespace}.{name}", "skipped": "no such table"}

    def _load(self, name: str) -> Table | None:
        from pyiceberg.exceptions import NoSuchTableError

        try:
            return self.cat.load_table((self.namespace, name))
        except NoSuchTableError:
            return None

    def dry_run(self) -> None:
        from sinks.lake_compact import plan_compaction, small_files

        for name in self.names:
            table = self._load(name)
            if table is None:
                print(json.dumps(self._skipped(name)))
                continue
            files, small = small_files(table, self.target)
            groups = plan_compaction(
                table, self.target, min_files=self.min_files, fanout=self.fanout
            )
            print(
                json.dumps(
                    {
                        "table": f"{self.namespace}.{name}",
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

    def table(self, name: str, round_no: int | None = None) -> dict[str, object]:
        """Compact one table: its summary line's fields (or that it was skipped)."""
        from pyiceberg.exceptions import CommitFailedException

        from sinks.lake_compact import CompactionCommit, compact_table, data_files

        label = f"{self.namespace}.{name}"
        table = self._load(name)
        if table is None:
            return self._skipped(name)

        def shown(commit: CompactionCommit) -> None:
            fields = dataclasses.asdict(commit)
            line = {"table": label, "commit": fields.pop("snapshot_id"), **fields}
            if round_no is not None:
                line = {"round": round_no, **line}
            print(json.dumps(line), flush=True)

        def reload() -> Table:
            return self.cat.load_table((self.namespace, name))

        files = data_files(table)  # before: the commits update ``table``
        try:
            commits = compact_table(
                table,
                reload,
                target_bytes=self.target,
                min_files=self.min_files,
                fanout=self.fanout,
                progress=shown,
                stop=self.stopping.is_set,
            )
        except CommitFailedException as exc:  # lost every race: a busy table, try again
            msg = f"{exc}; what landed before stays, run it again"
            raise IgflowError(msg) from exc
        return {
            "table": label,
            "files_before": files,
            "files_after": data_files(reload()) if commits else files,
            "commits": len(commits),
            "rewritten": sum(c.replaced for c in commits),
            "rows": sum(c.rows for c in commits),
        }

    def once(self) -> None:
        for name in self.names:
            print(json.dumps(self.table(name)), flush=True)

    def every(self, seconds: float) -> int:
        """A round every ``seconds`` until SIGINT or SIGTERM (then 0)."""

        def stop(signum: int, _frame: object) -> None:
            log.info("compaction stopping (signal %d)", signum, extra={"op": "lake.compact"})
            self.stopping.set()

        previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            round_no = 0
            while not self.stopping.is_set():
                round_no += 1
                began = time.monotonic()
                tables: dict[str, object] = {}
                for name in self.names:
                    if self.stopping.is_set():
                        break
                    tables[name] = self._guarded(name, round_no)
                line = {
                    "round": round_no,
                    "seconds": round(time.monotonic() - began, 3),
                    "tables": tables,
                }
                print(json.dumps(line), flush=True)
                self.stopping.wait(max(0.0, seconds - (time.monotonic() - began)))
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        return 0

    def _guarded(self, name: str, round_no: int) -> object:
        """:meth:`table` in a round: what it rewrote, ``{"skipped": ...}``, or the error (a
        warning with its reason, the table tried again next round)."""
        try:
            summary = self.table(name, round_no)
        except Exception as exc:  # a round never ends the schedule
            reason = "lake.compact_failed"
            log.warning(
                "compaction of %s.%s failed (tried again next round): %s: %s",
                self.namespace,
                name,
                type(exc).__name__,
                exc,
                extra={"op": reason, "table": name},
            )
            return {"error": f"{type(exc).__name__}: {exc}", "reason": reason}
        kept = (
            ("skipped",)
            if "skipped" in summary
            else ("rewritten", "commits", "rows", "files_after")
        )
        return {k: summary[k] for k in kept}


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
        "--min-files",
        type=int,
        help="fewest files a rewritten group holds (>= 2; default 2, with a fanout the fanout)",
    )
    p.add_argument(
        "--fanout",
        type=int,
        help="merge files by size tiers this factor apart (default 0: every small file at once;"
        " 8 with --every)",
    )
    p.add_argument(
        "--every",
        type=float,
        metavar="SECONDS",
        help="a round every so many seconds until SIGINT/SIGTERM (a maintenance process)",
    )
    p.add_argument("--dry-run", action="store_true", help="print what would be rewritten")
