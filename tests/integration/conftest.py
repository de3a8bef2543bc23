"""Integration fixtures: the real local stack, and an isolated topic + namespace per test.

The stack is started by ``make test`` (``python -m dev start``); the session fixture starts it
too when a test is run on its own, which is a no-op when it is up. Each test gets fresh topics and
a fresh Iceberg namespace, so tests never see each other's data.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from neo4j import Driver, GraphDatabase, TrustCustomCAs
from psycopg import sql

from core.catalog import catalog
from core.migrations import apply
from core.settings import Settings, StoreSettings
from igflow.admin import create_topics, setup
from igflow.dlq_reader import open_dead_letter, read_to_end
from igflow.lake_reader import open_sealed
from igflow.local_cluster import free_loopback_addresses
from igflow.producer import ProduceReport, produce
from igflow.workload import WorkloadSpec, generate, recent_start, seed_demo_tenants
from sinks.lake_tables import QUARANTINE, SIGNALS
from tenancy.sealing import sealer_of
from tests.conftest import SIGNAL_V1
from tests.integration.scratch import Scratch
from tests.processes import STARTED

REPO = Path(__file__).resolve().parents[2]

#: For a tail-mode flow (``igflow run --tail``) that a test waits on until a burst's last records
#: land: a tenant's last drift batch is decided once the tenant idles (``drift.idle_flush_seconds``,
#: 30 s by default, so each such wait took half a minute), here after 1 s. A bounded run decides
#: its open batches at its end and does not need it.
QUICK_IDLE_FLUSH = {"IGFLOW_DRIFT_IDLE_FLUSH_SECONDS": "1"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test of this folder ``integration`` (a conftest's ``pytestmark`` marks
    nothing), so ``-m "not integration"`` never starts the stack."""
    here = Path(__file__).parent
    for item in items:
        if item.path.is_relative_to(here):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def stack() -> Settings:
    """The local stack, up and set up (schemas registered)."""
    subprocess.run([sys.executable, "-m", "dev", "start"], cwd=REPO, check=True)
    settings = Settings.load()
    setup(settings)
    return settings


@pytest.fixture
def scratch(stack: Settings) -> Iterator[Scratch]:
    """What this test creates on the shared stack (see tests/integration/scratch.py), dropped
    when it ends."""
    names = Scratch(stack)
    yield names
    names.drop()


@pytest.fixture(scope="module")
def module_scratch(stack: Settings) -> Iterator[Scratch]:
    """:func:`scratch` for a module's fixtures (a server shared by a module's tests)."""
    names = Scratch(stack)
    yield names
    names.drop()


def tagged_topics(stack: Settings, scratch: Scratch, kind: str = "signals") -> Settings:
    """``stack`` with a signal topic (``it.<tag>.<kind>``) and DLQ of its own, created and
    registered in ``scratch``."""
    tag = uuid.uuid4().hex[:10]
    settings = stack.with_changes("kafka", topic=f"it.{tag}.{kind}", dlq_topic=f"it.{tag}.dlq")
    scratch.topics_of(settings)
    create_topics(settings)
    return settings


def tagged_settings(stack: Settings, scratch: Scratch, tag: str | None = None) -> Settings:
    """``stack`` with topics and an Iceberg namespace of its own (registered in ``scratch``)."""
    tag = tag or uuid.uuid4().hex[:10]
    settings = stack.with_changes(
        "kafka", topic=f"it.{tag}.signals", dlq_topic=f"it.{tag}.dlq"
    ).with_changes("lake", namespace=f"it_{tag}", batch_max_rows=500, batch_max_seconds=0.5)
    return scratch.lake_of(scratch.topics_of(settings))


@pytest.fixture
def it_settings(stack: Settings, scratch: Scratch) -> Settings:
    """Settings with this test's own topics and Iceberg namespace, the lake only; they are
    dropped when the test ends."""
    settings = tagged_settings(stack, scratch).with_changes("stores", sinks="")
    create_topics(settings)
    return settings


def bolt_driver(stores: StoreSettings) -> Driver:
    """A Bolt driver of the stores' graph database for a test's own queries: encrypted and
    verified against ``stores.neo4j_ca_file`` when it names one (TLS on), as the sink's is."""
    tls: dict[str, Any] = {}
    if stores.neo4j_ca_file:
        tls = {"encrypted": True, "trusted_certificates": TrustCustomCAs(stores.neo4j_ca_file)}
    return GraphDatabase.driver(
        stores.neo4j_uri, auth=(stores.neo4j_user, stores.neo4j_password), **tls
    )


def env_for(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment a subprocess needs to see ``settings`` (the CLI's edge reads it)."""
    env = dict(os.environ)
    env.update(
        {
            "IGFLOW_KAFKA_TOPIC": settings.kafka.topic,
            "IGFLOW_KAFKA_DLQ_TOPIC": settings.kafka.dlq_topic,
            "IGFLOW_KAFKA_BATCH_SIZE": str(settings.kafka.batch_size),
            "IGFLOW_LAKE_NAMESPACE": settings.lake.namespace,
            "IGFLOW_LAKE_BATCH_MAX_ROWS": str(settings.lake.batch_max_rows),
            "IGFLOW_LAKE_BATCH_MAX_SECONDS": str(settings.lake.batch_max_seconds),
            "IGFLOW_CATALOG_URI": settings.lake.catalog_uri,
            "IGFLOW_WAREHOUSE": settings.warehouse,
            # The lake only, unless a test asks for the serving stores.
            "IGFLOW_STORES_SINKS": settings.stores.sinks,
        }
    )
    env.update(extra)
    return env


#: Every process ``igflow()`` started in the running test; ``_reap_igflow`` ends them (one
#: list for both module objects of this file: see tests/processes.py).
_STARTED = STARTED


def igflow(settings: Settings, *args: str, **extra: str) -> subprocess.Popen[bytes]:
    """Start ``igflow ARGS`` in its own process group, its logs in a pipe. It is killed and its
    pipes closed when the test ends, whatever the test did with it."""
    return python_module(settings, "igflow.cli", *args, **extra)


def python_module(
    settings: Settings, module: str, *args: str, **extra: str
) -> subprocess.Popen[bytes]:
    """``python -m MODULE ARGS`` started as :func:`igflow` starts ``igflow``."""
    proc = subprocess.Popen(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        env=env_for(settings, **extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    _STARTED.append(proc)
    return proc


@pytest.fixture(autouse=True)
def _reap_igflow() -> Iterator[None]:
    """A test that fails while its flow runs must not leave the flow running (it would write into
    the next tests' stack) nor its pipes open (their ResourceWarning would fail a later test)."""
    yield
    while _STARTED:
        proc = _STARTED.pop()
        ended = proc.poll() is not None
        if not ended:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        _out, err = proc.communicate()
        if ended and proc.returncode != 0 and err:
            _report_death(proc, err)


def _report_death(proc: subprocess.Popen[bytes], err: bytes) -> None:
    """A process that ended on its own and failed: its last words in the failed test's report
    ("Captured stdout teardown"), and its whole stderr in the stack's log folder. A flow died
    with SIGABRT in CI twice (ci35, ci37); faulthandler's stacks filled the 4,000 characters
    printed then, and what came before them (the flow's own log lines, a Rust panic) was lost.
    """
    text = err.decode(errors="replace")
    logs = Path(os.environ.get("IGFLOW_STACK_DIR") or REPO / ".stack") / "logs"
    saved = logs / f"died-{proc.pid}.stderr"
    with contextlib.suppress(OSError):
        logs.mkdir(parents=True, exist_ok=True)
        saved.write_text(text)
    fatal = text.find("Fatal Python error")
    before = text[max(0, fatal - 6000) : fatal] if fatal > 0 else ""
    print(f"{proc.args!r} exited {proc.returncode}; whole stderr in {saved}")
    if before:
        print(f"--- its stderr before the fatal error:\n{before}")
    print(f"--- its stderr ends:\n{text[-4000:]}")


def finish(proc: subprocess.Popen[bytes], timeout: float = 240) -> tuple[str, str]:
    """Wait for a process; fail the test with its output if it fails."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"timed out; stderr tail:\n{err.decode()[-3000:]}")
    if proc.returncode != 0:
        pytest.fail(f"exit {proc.returncode}; stderr tail:\n{err.decode()[-3000:]}")
    return out.decode(), err.decode()


def finish_all(
    procs: Sequence[subprocess.Popen[bytes]], timeout: float = 240
) -> list[tuple[str, str]]:
    """:func:`finish` for processes that run together (a cluster's ``-i/-a`` processes), each
    drained on a thread of its own: waiting for one while another's pipe fills blocks that one on
    its next log line, and with it the whole cluster (a 2-process resume stalled that way)."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(procs))) as pool:
        waits = [pool.submit(finish, p, timeout) for p in procs]
        return [w.result() for w in waits]


def kill(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> str:
    """Signal a process's whole group, reap it and return its standard error."""
    os.killpg(proc.pid, sig)
    _out, err = proc.communicate()
    return err.decode()


def produce_workload(settings: Settings, spec: WorkloadSpec) -> ProduceReport:
    """Produce a workload; every message is acknowledged by the broker or this fails."""
    report = produce(settings, recent(spec))
    assert report.total > 0
    return report


def recent(spec: WorkloadSpec) -> WorkloadSpec:
    """The workload starting yesterday: the producer stamps records with the wall clock, and the
    validate step rejects event times too far from that stamp."""
    return dataclasses.replace(spec, start=recent_start(datetime.now(UTC)))


def expected_valid(spec: WorkloadSpec, schema_id: int) -> set[tuple[str, str]]:
    """(tenant_id, signal_id) of the distinct valid records of a workload."""
    return {
        (m.record["tenant_id"], m.record["signal_id"])
        for m in generate(spec, schema_id, SIGNAL_V1.parsed)
        if m.record is not None
    }


def lake_rows(settings: Settings) -> list[dict[str, Any]]:
    """Every row of this test's signals table."""
    table = catalog(settings).load_table(f"{settings.lake.namespace}.{SIGNALS.name}")
    rows: list[dict[str, Any]] = table.scan().to_arrow().to_pylist()
    return rows


def assert_landed_once(settings: Settings, total: int) -> None:
    """This test's signals table holds ``total`` rows, no signal and no Kafka record twice."""
    rows = lake_rows(settings)
    keys = {(r["tenant_id"], r["source"], r["signal_id"], r["ts"]) for r in rows}
    offsets = {(r["kafka_partition"], r["kafka_offset"]) for r in rows}
    assert (len(rows), len(keys), len(offsets)) == (total, total, total)


def quarantine_rows(settings: Settings) -> list[dict[str, Any]]:
    """Every row of this test's quarantine table, the payloads opened with their tenants' keys
    (``igflow.lake_reader.open_sealed``: sealing is on by default), so tests compare them with
    the bytes that were produced."""
    return opened_rows(settings, QUARANTINE.name)


def opened_rows(settings: Settings, table_name: str) -> list[dict[str, Any]]:
    """Every row of this test's lake table ``table_name`` (``quarantine`` or
    ``deconfliction``), its sealed column opened with the tenants' keys."""
    table = catalog(settings).load_table(f"{settings.lake.namespace}.{table_name}")
    rows: list[dict[str, Any]] = open_sealed(
        table.scan().to_arrow(), table_name, sealer_of(settings)
    ).to_pylist()
    return rows


def dlq_values(settings: Settings, messages: list[Any]) -> list[bytes | None]:
    """The values of DLQ ``messages`` opened with their tenants' keys
    (``igflow.dlq_reader.open_dead_letter``): the original bytes of each reject."""
    sealer = sealer_of(settings)
    return [open_dead_letter(sealer, m.key(), m.value(), m.headers()) for m in messages]


def lake_count(settings: Settings) -> int:
    """Rows landed so far (0 while the table does not exist)."""
    try:
        table = catalog(settings).load_table(f"{settings.lake.namespace}.{SIGNALS.name}")
    except Exception:
        return 0
    snapshot = table.current_snapshot()
    if snapshot is None or snapshot.summary is None:
        return 0
    return int(snapshot.summary.additional_properties.get("total-records", "0"))


def read_topic(settings: Settings, topic: str, timeout_s: float = 60) -> list[Any]:
    """Every message of ``topic`` a consumer sees (read_committed, as every consumer of the
    DLQ reads it: an attempt the DLQ sink aborted is not there), each partition read until the
    broker reports its end."""
    return list(read_to_end(settings, topic, timeout_s))


def json_lines(text: str) -> Iterator[dict[str, Any]]:
    """The JSON log objects in a process's standard error."""
    for line in text.splitlines():
        if line.startswith("{"):
            yield json.loads(line)


def _descendants(pid: int) -> set[int]:
    out = {pid}
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text(encoding="utf-8").split()
        except FileNotFoundError:  # the thread or the process ended while we looked
            continue
        for child in children:
            out |= _descendants(int(child))
    return out


@contextlib.contextmanager
def paused(service: str, seconds: float) -> Iterator[None]:
    """SIGSTOP a local-stack service (and its child processes) for ``seconds``, then SIGCONT it,
    always, even if the test fails while it is stopped."""
    from dev import stack as dev_stack
    from dev.config import StackConfig

    cfg = StackConfig.from_env(os.environ)
    pid = dev_stack.our_pid(cfg, dev_stack.select([service], cfg)[0])
    assert pid is not None, f"{service} is not running"
    stopped: set[int] = set()
    try:
        for _round in range(2):  # twice: catch a child forked in between
            for p in sorted(_descendants(pid) - stopped):
                # A child may exit between the listing and the signal (Postgres's backends do).
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p, signal.SIGSTOP)
                    stopped.add(p)
        time.sleep(seconds)
        yield
    finally:
        for p in sorted(stopped):
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGCONT)


def backend_alive(dsn: str, pid: int, timeout: float = 5.0) -> bool:
    """Whether backend ``pid`` is still connected after up to ``timeout`` s of waiting for it
    to go (a closed client's backend leaves pg_stat_activity a moment later)."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(dsn, autocommit=True) as conn:
        while True:
            row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,))
            count = row.fetchone()
            if count is not None and count[0] == 0:
                return False
            if time.monotonic() > deadline:
                return True
            time.sleep(0.05)


def eventually(condition: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    """Whether ``condition()`` holds within ``timeout_s`` (asked every 20 ms): for what another
    thread or process makes true, such as a cache's next refresh."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def cluster_addresses(n: int) -> str:
    """``n`` free loopback addresses for a Bytewax cluster's ``-a`` (``host:port;...``)."""
    return ";".join(free_loopback_addresses(n))


def in_schema(dsn: str, schema: str) -> str:
    """``dsn`` with ``schema`` first on its ``search_path``."""
    sep = "&" if "?" in dsn else "?"
    return f"{dsn}{sep}options=-csearch_path%3D{schema}"


@contextlib.contextmanager
def fresh_schema(base: str, prefix: str, tenants: int) -> Iterator[str]:
    """A DSN whose tables (migrations applied, ``tenants`` demo tenants seeded) live in a new
    schema named ``<prefix>_<random>``, dropped afterwards."""
    schema = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    scoped = in_schema(base, schema)
    try:
        apply(scoped)
        seed_demo_tenants(scoped, tenants)
        yield scoped
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
