"""``igflow``: the operator's command line.

This is the edge: settings are read here once (``--config`` / ``IGFLOW_*``) and passed down.
Every subcommand exits 0 on success, 1 when it ran and found a problem (an incompatible schema),
and 2 on a usage or configuration error.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.arrow_pool import choose_pool
from core.collector import starting

# The collector paused while the command line's modules are imported (pydantic and the
# settings models, the commands: ~0.2 CPU s of every command, `igflow --help` included): the
# collections they trigger find nothing to free (core/collector.py) and cost ~10 ms of it.
with starting():
    from core import logs
    from core.settings import Settings
    from igflow.api_commands import register as register_api
    from igflow.compact_commands import register as register_compact
    from igflow.dlq_commands import register as register_dlq
    from igflow.evidence_commands import register as register_evidence
    from igflow.governance_commands import register as register_governance
    from igflow.key_commands import register as register_keys
    from igflow.probe_commands import register as register_probe
    from igflow.psi_commands import register as register_psi
    from igflow.quarantine_commands import register as register_quarantine
    from igflow.replay_commands import register as register_replay
    from igflow.reported import reported
    from igflow.residency_commands import register as register_residency
    from igflow.retention_commands import register as register_retention
    from igflow.serve_commands import register as register_serve
    from igflow.slo_commands import register as register_slo
    from igflow.source_commands import register as register_sources
    from igflow.switch_commands import register as register_switch
    from igflow.tenant_commands import register as register_tenants
    from igflow.verify_commands import register as register_verify


__all__ = ["main"]

Handler = Callable[[argparse.Namespace, Settings], int]


def _cmd_config(args: argparse.Namespace, settings: Settings) -> int:
    print(json.dumps(settings.as_dict(masked=not args.show_secrets), indent=2))
    return 0


def _cmd_setup(args: argparse.Namespace, settings: Settings) -> int:
    from igflow.admin import setup

    home = Path(args.pyiceberg_home or os.environ.get("PYICEBERG_HOME") or settings.stack_dir)
    print(json.dumps(setup(settings, home), indent=2))
    return 0


def _cmd_produce(args: argparse.Namespace, settings: Settings) -> int:
    from igflow.producer import end_offsets, print_progress, produce
    from igflow.workload import WorkloadSpec, recent_start

    if args.if_empty and any(end_offsets(settings, settings.kafka.topic).values()):
        print(json.dumps({"produced": {}, "skipped": f"{settings.kafka.topic} is not empty"}))
        return 0

    start = (
        datetime.fromisoformat(args.start).astimezone(UTC)
        if args.start
        else recent_start(datetime.now(UTC))
    )
    spec = WorkloadSpec(
        start=start,
        tenants=args.tenants,
        count=args.count,
        seed=args.seed,
        duplicates=args.duplicates,
        bad=args.bad,
        invalid=args.invalid,
        drift_tenant=args.drift_tenant,
    )
    progress = print_progress(args.tenants * args.count) if sys.stderr.isatty() else None
    report = produce(
        settings, spec, schema_version=args.schema_version, rate=args.rate, progress=progress
    )
    if progress:
        sys.stderr.write("\n")
    rate = report.total / report.seconds if report.seconds else 0.0
    print(json.dumps({"produced": report.kinds, "total": report.total, "per_second": round(rate)}))
    return 0


def _cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    with starting():  # the collector paused until the flow's start-up is done
        return _start_run(args, settings)


def _start_run(args: argparse.Namespace, settings: Settings) -> int:
    from igflow.runner import Cluster, import_flow, run

    changes: dict[str, Any] = {"bounded": not args.tail}
    if args.workers is not None:
        changes["workers"] = args.workers
    if args.recovery_dir is not None:
        changes["recovery_dir"] = args.recovery_dir
    if args.metrics_port is not None:
        changes["metrics_port"] = args.metrics_port
    settings = settings.with_changes("run", **changes)
    addresses = tuple(a for a in (args.addresses or "").split(";") if a)
    if (args.process_id is None) != (not addresses):
        print("igflow run: -i/--process-id and -a/--addresses go together", file=sys.stderr)
        return 2
    if args.processes is not None:
        if addresses:
            print("igflow run: --processes starts its own cluster: not with -i/-a", file=sys.stderr)
            return 2
        if args.processes < 1:
            print("igflow run: --processes must be at least 1", file=sys.stderr)
            return 2
        from igflow.local_cluster import run_forked

        import_flow(settings)  # once, before the fork: the children inherit the imported modules
        return run_forked(
            args.processes, lambda cluster: reported("run", lambda: run(settings, cluster))
        )
    return run(settings, Cluster(args.process_id, addresses))


def _cmd_lake(args: argparse.Namespace, settings: Settings) -> int:
    from igflow.admin import lake_summary

    summary = lake_summary(settings, sample=args.sample)
    if args.json:
        out = {"rows": summary.rows, "per_tenant": summary.per_tenant, "tables": summary.others}
        print(json.dumps(out))
        return 0
    ns = settings.lake.namespace
    print(f"{ns}.signals: {summary.rows:,} rows in {summary.snapshots} snapshots")
    for name, count in summary.others.items():
        print(f"{ns}.{name}: {count:,} rows")
    print(f"{'tenant':<12} {'rows':>8}")
    for tenant, count in summary.per_tenant.items():
        print(f"{tenant:<12} {count:>8,}")
    print("sample:")
    for row in summary.sample:
        print("  " + json.dumps(row, default=str))
    return 0


def _cmd_schemas(args: argparse.Namespace, settings: Settings) -> int:
    from core.contracts import signal_contracts
    from igflow.admin import register_schemas

    contracts = signal_contracts()
    if args.action == "register":
        for r in register_schemas(settings):
            print(f"{r.subject} v{r.version}: id {r.schema_id}")
        return 0
    from registry.governance import check_schemas

    results = check_schemas(
        settings.kafka.schema_registry_url,
        {settings.kafka.subject: [c.text for c in contracts]},
        ca_location=settings.kafka.ssl_ca_location,
    )
    failed = 0
    for contract, result in zip(contracts, results, strict=True):
        state = (
            "registered"
            if result.registered
            else ("compatible" if result.compatible else "INCOMPATIBLE")
        )
        print(f"{contract.path.name:<20} {result.subject:<28} {state}")
        for message in result.messages:
            print(f"    {message}")
        failed += not result.compatible
    return 1 if failed else 0


def _cmd_stack(args: argparse.Namespace, settings: Settings) -> int:
    from dev.__main__ import main as stack_main

    code: int = stack_main([args.action])
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="igflow", description="IntelGraph Streams: run, replay and inspect coherence flows."
    )
    parser.add_argument("--config", help="TOML settings file (default: $IGFLOW_CONFIG)")
    parser.add_argument("--log-level", default=None, help="override run.log_level")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(handler=handler)
        return p

    p = add("run", _cmd_run, "run the coherence flow (bounded by default)")
    p.add_argument("--tail", action="store_true", help="keep consuming after the end offsets")
    p.add_argument(
        "-w", "--workers", type=int, help="worker threads per process (one GIL: see --processes)"
    )
    p.add_argument("-i", "--process-id", type=int, help="this process's index in the cluster")
    p.add_argument("-a", "--addresses", help="host:port of every process, ';'-separated")
    p.add_argument(
        "-p",
        "--processes",
        type=int,
        help="a cluster of this many processes on this host, forked after the imports (the "
        "GIL runs one worker thread at a time: processes run in parallel)",
    )
    p.add_argument("-r", "--recovery-dir", help="Bytewax recovery store (enables resume)")
    p.add_argument("--metrics-port", type=int, help="Prometheus port (process i uses port+i)")

    p = add("produce", _cmd_produce, "produce a deterministic synthetic workload")
    p.add_argument("--tenants", type=int, default=10)
    p.add_argument("--count", type=int, default=1000, help="signals per tenant")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument(
        "--rate", type=float, default=0.0, help="messages per second (0: as fast as possible)"
    )
    p.add_argument("--duplicates", type=float, default=0.0, help="probability of a re-send")
    p.add_argument("--bad", type=int, default=0, help="bad payloads to mix in")
    p.add_argument(
        "--invalid", type=float, default=0.0, help="probability of an invalid record (decodes)"
    )
    p.add_argument("--drift-tenant", type=int, default=None, help="tenant index whose values drift")
    p.add_argument(
        "--start", help="event time of the first signal, ISO 8601 (default: yesterday 00:00 UTC)"
    )
    p.add_argument("--schema-version", type=int, default=1, choices=(1, 2))
    p.add_argument("--if-empty", action="store_true", help="do nothing if the topic has records")

    p = add("setup", _cmd_setup, "register schemas, create topics and tables (idempotent)")
    p.add_argument(
        "--pyiceberg-home", help="where to write .pyiceberg.yaml (default: $PYICEBERG_HOME)"
    )

    p = add("schemas", _cmd_schemas, "register schemas/avro/ or check it against the registry")
    p.add_argument("action", choices=("register", "check"))

    p = add("lake", _cmd_lake, "show what landed in the lake (signals per tenant, other tables)")
    p.add_argument("--sample", type=int, default=5)
    p.add_argument("--json", action="store_true")

    p = add("config", _cmd_config, "print the effective settings (secrets masked)")
    p.add_argument("--show-secrets", action="store_true")

    p = add("stack", _cmd_stack, "start, stop or show the local service stack")
    p.add_argument("action", choices=("start", "stop", "status"))

    register_psi(add)
    register_tenants(add)
    register_quarantine(add)
    register_dlq(add)
    register_replay(add)
    register_verify(add)
    register_serve(add)
    register_api(add)
    register_slo(add)
    register_governance(add)
    register_keys(add)
    register_probe(add)
    register_switch(add)
    register_evidence(add)
    register_sources(add)
    register_residency(add)
    register_retention(add)
    register_compact(add)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``igflow`` console script."""
    # A native crash (an abort in a library, a panic inside a panic in Bytewax, a segfault)
    # kills the process with a signal and no Python traceback: with faulthandler on, stderr
    # gets every thread's Python stack first (a SIGABRT in CI once left nothing to read).
    if not faulthandler.is_enabled():
        faulthandler.enable()
    # numpy's OpenBLAS starts a thread per core at import, and they spun in a lake-only run
    # (0.9% of its CPU samples in `perf`) though no step multiplies matrices: the steps' arrays
    # are small. One thread (unless the environment chose); numpy is imported after this.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    args = _parser().parse_args(argv)

    def call() -> int:
        settings = Settings.load(config_file=args.config)
        logs.configure(args.log_level or settings.run.log_level)
        # Before any command imports pyarrow: Arrow reads its pool once, then (core/arrow_pool.py).
        choose_pool(settings.run.arrow_memory_pool)
        handler: Handler = args.handler
        return handler(args, settings)

    return reported(args.command, call)


if __name__ == "__main__":
    sys.exit(main())
