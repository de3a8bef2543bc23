"""Drop what the benchmarks left in the local stack: everything named with their ``bench`` prefix.

    .venv/bin/python benchmarks/cleanup.py [--dry-run]      # or: make bench-clean

The benchmarks write under their own names (a run's tag in each): Iceberg namespaces ``bench_*``
(their tables purged: metadata and data files), Kafka topics ``bench.*``, Redis keys ``bench:*``,
graph labels ``bench_*`` (nodes, edges, constraints and indexes) and Postgres schemas ``bench_*``.
Some keep theirs on purpose (``benchmarks/replay.py`` prints ``--compare-verify TAG`` to verify
them again later), and a run killed before its end drops nothing; over five sessions the bench
stack had gathered 24 GB of lake files and 24 million graph nodes, which made the graph's writes
dearer. Run it when no benchmark is running: it drops every ``bench`` name, a running one's too.
``--dry-run`` lists what it would drop. Prints one line per kind: what was dropped.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from urllib.parse import urlparse

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import psycopg  # noqa: E402
import redis  # noqa: E402
from confluent_kafka.admin import AdminClient  # noqa: E402
from psycopg import sql  # noqa: E402

from core.catalog import catalog  # noqa: E402
from core.settings import Settings  # noqa: E402
from sinks.graph import GraphWriter  # noqa: E402
from sinks.graph_model import NODE_LABELS  # noqa: E402


def _lake(settings: Settings, dry_run: bool) -> str:
    cat = catalog(settings)
    namespaces = [ns for ns in cat.list_namespaces() if ns and ns[0].startswith("bench_")]
    tables = 0
    for ns in namespaces:
        for identifier in cat.list_tables(ns):
            tables += 1
            if dry_run:
                continue
            location = cat.load_table(identifier).location()
            cat.drop_table(identifier)
            parsed = urlparse(location)
            if parsed.scheme in ("", "file"):
                shutil.rmtree(parsed.path, ignore_errors=True)
        if not dry_run:
            cat.drop_namespace(ns)
            if settings.warehouse.startswith("file://"):
                folder = Path(urlparse(settings.warehouse).path) / ns[0]
                shutil.rmtree(folder, ignore_errors=True)
    return f"lake: {len(namespaces)} bench_* namespaces, {tables} tables"


def _topics(settings: Settings, dry_run: bool) -> str:
    admin = AdminClient(settings.kafka.client_config())
    topics = [t for t in admin.list_topics(timeout=30).topics if t.startswith("bench.")]
    if topics and not dry_run:
        for _topic, future in admin.delete_topics(topics, operation_timeout=60).items():
            future.result()
    return f"kafka: {len(topics)} bench.* topics"


def _redis(settings: Settings, dry_run: bool) -> str:
    client = redis.Redis.from_url(settings.stores.redis_url)
    try:
        keys = list(client.scan_iter(match="bench:*", count=1000))
        if not dry_run:
            for start in range(0, len(keys), 1000):
                client.delete(*keys[start : start + 1000])
    finally:
        client.close()
    return f"redis: {len(keys)} bench:* keys"


def _graph(settings: Settings, dry_run: bool) -> str:
    stores = settings.stores
    reader = GraphWriter.for_stores(stores, label_prefix="")
    labels = [r["label"] for r in reader.read("CALL db.labels() YIELD label RETURN label")]
    labels += [
        name
        for r in reader.read("SHOW CONSTRAINTS YIELD labelsOrTypes RETURN labelsOrTypes AS names")
        for name in r["names"] or []
    ]
    prefixes = sorted(
        {
            label.removesuffix(model)
            for label in labels
            if label.startswith("bench_")
            for model in NODE_LABELS
            if label.endswith("_" + model)
        }
    )
    nodes = 0
    if not dry_run:
        for prefix in prefixes:
            nodes += GraphWriter.for_stores(stores, label_prefix=prefix).drop_scratch()
    return f"graph: {len(prefixes)} bench_* label prefixes" + (
        "" if dry_run else f", {nodes} nodes"
    )


def _postgres(settings: Settings, dry_run: bool) -> str:
    with psycopg.connect(settings.stores.postgres_dsn, autocommit=True) as conn:
        schemas = [
            r[0]
            for r in conn.execute(
                "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'bench\\_%'"
            ).fetchall()
        ]
        if not dry_run:
            for schema in schemas:
                conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
    return f"postgres: {len(schemas)} bench_* schemas"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="list what would be dropped")
    args = parser.parse_args()
    settings = Settings.load()
    verb = "would drop" if args.dry_run else "dropped"
    failed = False
    for drop in (_lake, _topics, _redis, _graph, _postgres):
        try:
            print(f"{verb} {drop(settings, args.dry_run)}", flush=True)
        except Exception as exc:  # a server down: say which, go on with the others
            kind = drop.__name__.lstrip("_")
            print(f"{kind}: not reached ({type(exc).__name__}: {exc})"[:300], file=sys.stderr)
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
