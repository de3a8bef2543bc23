"""``igflow replay``: re-run the flow over an offset range into a scratch namespace.

``--from``/``--to`` give per-partition offsets (``P:O,P:O``; ``--to`` exclusive); partitions named
in neither are not read. ``--from-time``/``--to-time`` give a Kafka record-time range instead,
resolved with ``offsets_for_times``. With neither, everything the topic retains is replayed (each
partition from its log start to its high watermark at the start). The serving stores
``stores.sinks`` enables are written under scratch names derived from ``--into`` (Redis
``replay:NS:…``, graph labels ``replay_NS_…``, Postgres schema ``replay_NS``), unless
``--lake-only``. ``--commits original`` (the default) commits each lake table like the flow
namespace's commits, so the data files come out byte-identical; ``own`` batches afresh. ``-w`` runs
more workers, ``-i/-a`` one process of a cluster (start every process, as for ``igflow run``).
``--settings original`` (the default) computes with the deciding settings the original's commits
of the range recorded (refused across a change of them, or when a recorded file differs);
``current`` with this environment's, reporting how they differ (:mod:`replay.settings`).
Progress goes to standard error (a bar on a terminal, else a JSON line every ~2 s); the report is
one JSON object on standard output (each process its own).

``--source iceberg --from-namespace NS`` re-derives the downstream ``scores`` table from the
signals landed in ``NS`` (for when Kafka's retention has passed), see :mod:`replay.derive`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime

from core.cluster import Cluster
from core.errors import ConfigError
from core.settings import Settings

__all__ = ["register"]

Handler = Callable[[argparse.Namespace, Settings], int]


def _time(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        msg = f"{text!r} is not an ISO 8601 time"
        raise ConfigError(msg) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _replay(args: argparse.Namespace, settings: Settings) -> int:
    from core.collector import starting

    with starting():  # the collector paused until the flow's start-up is done (core/collector.py)
        return _start_replay(args, settings)


def _start_replay(args: argparse.Namespace, settings: Settings) -> int:
    from core.lazy_pandas import defer_pandas

    defer_pandas()  # before the flow's modules, as `igflow run` (core/lazy_pandas.py)
    from core.catalog import preload
    from replay.run import parse_offsets, resolve_times, retained_offsets

    preload(settings)  # before --processes forks, as `igflow run` (igflow/runner.py)

    if args.source == "iceberg":
        return _derive(args, settings)
    if args.from_namespace is not None:
        print("igflow replay: --from-namespace needs --source iceberg", file=sys.stderr)
        return 2
    addresses = tuple(a for a in (args.addresses or "").split(";") if a)
    if (args.process_id is None) != (not addresses):
        print("igflow replay: -i/--process-id and -a/--addresses go together", file=sys.stderr)
        return 2
    if args.processes is not None and (addresses or args.processes < 1):
        print(
            "igflow replay: --processes N (N >= 1) starts its own cluster: not with -i/-a",
            file=sys.stderr,
        )
        return 2
    if args.workers is not None:
        settings = settings.with_changes("run", workers=args.workers)
    by_offset = args.from_offsets is not None or args.to_offsets is not None
    by_time = args.from_time is not None or args.to_time is not None
    if by_offset and by_time:
        print(
            "igflow replay: give --from/--to (offsets) or --from-time/--to-time, not both",
            file=sys.stderr,
        )
        return 2
    if not by_offset and not by_time:
        start, end = retained_offsets(settings.kafka)
    elif by_offset:
        if args.from_offsets is None or args.to_offsets is None:
            print("igflow replay: --from and --to go together", file=sys.stderr)
            return 2
        start = parse_offsets(args.from_offsets)
        end = parse_offsets(args.to_offsets)
    else:
        since = _time(args.from_time)
        if since is None:
            print("igflow replay: --to-time needs --from-time", file=sys.stderr)
            return 2
        start, end = resolve_times(settings.kafka, since, _time(args.to_time))

    if args.processes is None:
        return _replay_one(args, settings, start, end, Cluster(args.process_id, addresses))
    from igflow.local_cluster import run_forked
    from igflow.reported import reported

    # The offsets' Kafka consumer is closed by now: nothing but the imports crosses the fork.
    return run_forked(
        args.processes,
        lambda cluster: reported(
            "replay", lambda: _replay_one(args, settings, start, end, cluster)
        ),
    )


def _replay_one(
    args: argparse.Namespace,
    settings: Settings,
    start: dict[int, int],
    end: dict[int, int],
    cluster: Cluster,
) -> int:
    """This process's part of the replay, and its report on stdout (one JSON line)."""
    from replay.run import json_progress, replay, tty_progress

    # A terminal's progress line is one process's to draw.
    tty = sys.stderr.isatty() and not cluster.process_id
    progress = tty_progress() if tty else json_progress()
    report = replay(
        settings,
        args.into,
        start,
        end,
        progress,
        lake_only=args.lake_only,
        commits=args.commits,
        cluster=cluster,
        interval=0.25 if tty else 2.0,
        settings_from=args.settings_from,
    )
    if tty:
        sys.stderr.write("\n")
    out: dict[str, object] = {
        "namespace": report.namespace,
        "from": {str(p): o for p, o in sorted(report.start.items())},
        "to": {str(p): o for p, o in sorted(report.end.items())},
        "rows": report.rows,
        "seconds": round(report.seconds, 3),
        "stores": report.stores,
        "planned_commits": report.planned,
        "settings": report.settings.as_dict(),
    }
    if cluster.process_id is not None:
        out["process"] = cluster.process_id
    from igflow.local_cluster import write_line

    write_line(json.dumps(out))  # one write: a forked cluster's reports share stdout
    return 0


def _derive(args: argparse.Namespace, settings: Settings) -> int:
    from replay.derive import derive_scores
    from replay.run import json_progress, tty_progress

    if args.from_namespace is None:
        print("igflow replay: --source iceberg needs --from-namespace", file=sys.stderr)
        return 2
    ranges = (args.from_offsets, args.to_offsets, args.from_time, args.to_time)
    if any(v is not None for v in ranges):
        print(
            "igflow replay: --source iceberg reads all landed signals; "
            "--from/--to/--from-time/--to-time do not apply",
            file=sys.stderr,
        )
        return 2
    tty = sys.stderr.isatty()
    report = derive_scores(
        settings,
        args.from_namespace,
        args.into,
        tty_progress() if tty else json_progress(),
        interval=0.25 if tty else 2.0,
        settings_from=args.settings_from,
    )
    if tty:
        sys.stderr.write("\n")
    out = {
        "source": report.source,
        "namespace": report.namespace,
        "snapshot_id": report.snapshot_id,
        "tenants": report.tenants,
        "rows": report.rows,
        "seconds": round(report.seconds, 3),
        "settings": report.settings.as_dict(),
    }
    print(json.dumps(out))
    return 0


def register(add: Callable[[str, Handler, str], argparse.ArgumentParser]) -> None:
    """Add ``igflow replay`` through the CLI's ``add(name, handler, help)``."""
    p = add("replay", _replay, "re-run the flow over an offset range into scratch lake and stores")
    p.add_argument(
        "--from", dest="from_offsets", metavar="P:O,...", help="first offset per partition"
    )
    p.add_argument(
        "--to", dest="to_offsets", metavar="P:O,...", help="end offset per partition (exclusive)"
    )
    p.add_argument("--from-time", help="Kafka record time to start at, ISO 8601 (UTC if naive)")
    p.add_argument("--to-time", help="Kafka record time to stop before, ISO 8601")
    p.add_argument(
        "--into",
        required=True,
        metavar="NAMESPACE",
        help="scratch Iceberg namespace (and the scratch names of the serving stores)",
    )
    p.add_argument(
        "--source",
        choices=("kafka", "iceberg"),
        default="kafka",
        help="kafka: re-run the flow over offsets; iceberg: re-derive scores from landed signals",
    )
    p.add_argument(
        "--from-namespace",
        metavar="NAMESPACE",
        help="with --source iceberg: the namespace whose signals table to read",
    )
    p.add_argument(
        "--lake-only",
        action="store_true",
        help="land in the scratch Iceberg namespace only, not in scratch serving stores",
    )
    p.add_argument(
        "--commits",
        choices=("original", "own"),
        default="original",
        help="original: commit like lake.namespace's commits (byte-identical files); own: afresh",
    )
    p.add_argument(
        "--settings",
        dest="settings_from",
        choices=("original", "current"),
        default="original",
        help="original: compute with the settings the original's commits recorded; "
        "current: with this environment's (reported)",
    )
    p.add_argument(
        "-w", "--workers", type=int, help="worker threads per process (one GIL: see --processes)"
    )
    p.add_argument("-i", "--process-id", type=int, help="this process's index in the cluster")
    p.add_argument("-a", "--addresses", help="host:port of every process, ';'-separated")
    p.add_argument(
        "-p",
        "--processes",
        type=int,
        help="a cluster of this many processes on this host, forked after the imports",
    )
