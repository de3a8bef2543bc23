"""Tenant runs (docs/columnar-path.md, phase 1): any cut of the input into runs gives what the
per-record form (a run per record) gives, from one step (:class:`operators.batching.RunLogic`)
to the whole flow (lake tables and DLQ)."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import bytewax.operators as op
import hypothesis.strategies as st
import pytest
from bytewax.dataflow import Dataflow
from bytewax.operators import StatefulBatchLogic
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, TestingSource, run_main
from hypothesis import HealthCheck, given, settings
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NoSuchTableError

from core.records import Decoded
from core.settings import Settings
from core.switches import NO_HOLDS
from flows.coherence import build
from flows.execute import execute
from igflow.workload import SOURCES, WorkloadSpec, generate, tenant_ids
from operators.batching import (
    RunLogic,
    flatten,
    map_runs,
    snapshots_dropped,
    stateful_runs_at,
    tenant_runs,
)
from operators.tenancy import TenancyPolicy
from tenancy.registry import StaticTenants
from tests.conftest import SIGNAL_V1, V1_ID, DictSchemas, kafka_messages
from tests.memory_keys import memory_sealer
from tests.runs import cut_runs, random_runs, run_cut, single_runs
from tests.unit.test_flow import _rows

SEALER = memory_sealer()


def _tenant(item: Decoded) -> str:
    return item.signal.tenant_id


# ------------------------------------------------------------------------------ the helpers


@given(st.lists(st.sampled_from("abc"), max_size=40), st.integers(0, 1000), st.integers(1, 6))
def test_a_cut_keeps_every_item_once_and_each_keys_order(
    keys: list[str], seed: int, max_run: int
) -> None:
    items = list(enumerate(keys))
    runs = cut_runs(items, lambda x: x[1], random.Random(seed), max_run)
    assert all(run and len(run) <= max_run and {x[1] for x in run} == {k} for k, run in runs)
    assert sorted(x for _, run in runs for x in run) == items
    for k in "abc":
        assert [x for kk, run in runs if kk == k for x in run] == [x for x in items if x[1] == k]
    assert tenant_runs(items, lambda x: x[1]) == [
        (k, [x for x in items if x[1] == k]) for k in dict.fromkeys(keys)
    ]


class _Echo(StatefulBatchLogic[int, int, list[int]]):
    """Emits what it got, doubled, and holds the odd ones until EOF (a record-level logic)."""

    def __init__(self) -> None:
        self.held: list[int] = []
        self.calls = 0

    def on_batch(self, values: list[int]) -> tuple[Iterable[int], bool]:
        self.calls += 1
        self.held.extend(v for v in values if v % 2)
        return values, StatefulBatchLogic.RETAIN  # its input itself: RunLogic copies it

    def on_eof(self) -> tuple[Iterable[int], bool]:
        return self.held, StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        return None

    def snapshot(self) -> list[int]:
        return list(self.held)


def test_a_run_logic_flattens_in_order_and_gives_one_run() -> None:
    inner = _Echo()
    logic: RunLogic[int, int] = RunLogic(inner)
    out, discard = logic.on_batch([[1, 2], [3], [4, 5, 6]])
    assert list(out) == [[1, 2, 3, 4, 5, 6]] and discard is StatefulBatchLogic.RETAIN
    assert inner.calls == 1
    (run,) = logic.on_batch([[8]])[0]
    assert run == [8]
    assert list(logic.on_eof()[0]) == [[1, 3, 5]]
    assert logic.snapshot() == [1, 3, 5]
    assert list(RunLogic(_Echo()).on_eof()[0]) == []  # an empty output is no run
    flat: RunLogic[int, int] = RunLogic(_Echo(), runs_out=False)
    assert list(flat.on_batch([[1], [2, 3]])[0]) == [1, 2, 3]


class _Counted(_Echo):
    """:class:`_Echo`, counting the snapshots asked of every instance."""

    snapshots = 0

    def snapshot(self) -> list[int]:
        _Counted.snapshots += 1
        return super().snapshot()


@pytest.mark.parametrize("recovery", [False, True])
def test_without_a_recovery_store_the_steps_are_not_asked_for_snapshots(
    recovery: bool, tmp_path: Path
) -> None:
    """Bytewax asks every key for a snapshot at each epoch's end with or without a recovery
    store; :func:`flows.execute.execute` spares the steps those copies when nothing keeps them,
    and the outputs are the same either way."""
    config = None
    if recovery:
        init_db_dir(tmp_path, 1)
        config = RecoveryConfig(str(tmp_path))
    flow = Dataflow("snapshots")
    up = op.input("in", flow, TestingSource(list(range(40)), batch_size=4))
    runs = random_runs("runs", up, lambda x: "ab"[x % 2], seed=5, max_run=3)
    echoed = stateful_runs_at("echo", runs, lambda _resume: _Counted())
    got: list[Any] = []
    op.output("out", echoed, TestingSink(got))
    _Counted.snapshots = 0
    execute(flow, workers_per_process=1, epoch_interval=timedelta(0), recovery_config=config)
    assert sorted(x for _, run in got for x in run) == sorted([*range(40), *range(1, 40, 2)])
    # Ten epochs of two keys, each key snapshotted in the epochs it was given an item.
    assert (_Counted.snapshots > 10) if recovery else (_Counted.snapshots == 0)
    with snapshots_dropped():
        dropped: RunLogic[int, int] = RunLogic(_Counted())
    assert dropped.snapshot() is None and RunLogic(_Counted()).snapshot() == []


def test_map_runs_drops_a_run_it_empties() -> None:
    flow = Dataflow("map_runs")
    up = op.input("in", flow, TestingSource(list(range(20)), batch_size=6))
    runs = random_runs("runs", up, lambda x: "ab"[x % 2], seed=3, max_run=3)
    evens = map_runs("evens", runs, lambda run: [x for x in run if x % 4 == 0])
    got: list[Any] = []
    op.output("out", evens, TestingSink(got))
    run_main(flow)
    assert all(run for _, run in got)
    assert [x for _, run in got for x in run] == [x for x in range(20) if x % 4 == 0]


def test_flatten_gives_the_records_in_order() -> None:
    flow = Dataflow("flatten")
    up = op.input("in", flow, TestingSource(list(range(30)), batch_size=7))
    got: list[Any] = []
    op.output(
        "out", flatten("flat", random_runs("runs", up, lambda x: "k", seed=1)), TestingSink(got)
    )
    run_main(flow)
    assert got == list(range(30))


# ------------------------------------------------------------------------------ the flow


def _landed(catalog: Catalog, namespace: str) -> dict[str, list[Any]]:
    """Each lake table's rows, sorted (a table's commits may cut otherwise, not its rows)."""
    out = {}
    for table in ("signals", "scores", "quarantine", "deconfliction"):
        try:
            rows = _rows(catalog, namespace, table)
        except NoSuchTableError:  # never written (no psi partner here)
            rows = []
        for row in rows:
            row.pop("at", None)  # a decision's wall clock, if a table has one
        out[table] = sorted(rows, key=repr)
    return out


def _flow_run(
    settings: Settings, records: list[Any], batch: int, runs: Any, tenants: int
) -> list[Any]:
    dlq: list[Any] = []
    flow = build(
        settings,
        source=TestingSource(records, batch_size=batch),
        lookup=DictSchemas({V1_ID: SIGNAL_V1.text}),
        dlq=TestingSink(dlq),
        tenants=StaticTenants.of(*tenant_ids(tenants), sources=SOURCES),
        holds=NO_HOLDS,
        policy=TenancyPolicy.load(settings.policies_dir),
        sealer=SEALER,
        runs=runs,
    )
    run_main(flow)
    return sorted(repr(m) for m in dlq)


@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    tenants=st.integers(1, 2),
    seed=st.integers(0, 1000),
    cut_seed=st.integers(0, 1000),
    batch=st.sampled_from([3, 50, 500]),
    max_run=st.integers(1, 40),
)
def test_the_flow_lands_the_same_for_any_cut_into_runs(
    lake_settings: Settings,
    catalog: Catalog,
    tenants: int,
    seed: int,
    cut_seed: int,
    batch: int,
    max_run: int,
) -> None:
    """Rejects (bad payloads, invalid records, late ones), duplicates and a drifting tenant's
    quarantined batches: every lake table's rows and the DLQ's messages are the per-record
    form's (a run per record) for any cut of the engine batches into runs."""
    settings_ = lake_settings.with_changes(
        "drift",
        batch_size=20,
        reference_batches=2,
        reference_values=0,
        batch_seconds=3600.0,
        ks_alpha=0.0001,
    )
    spec = WorkloadSpec(
        tenants=tenants,
        count=400,
        bad=5,
        invalid=0.05,
        duplicates=0.05,
        drift_tenant=tenants - 1,
        seed=seed,
    )
    records = kafka_messages(list(generate(spec, V1_ID, SIGNAL_V1.parsed)), partitions=2)
    landed = []
    for runs in (single_runs(_tenant), run_cut(_tenant, cut_seed, max_run), None):
        namespace = f"runs{uuid.uuid4().hex[:8]}"
        at = settings_.with_changes("lake", namespace=namespace)
        dlq = _flow_run(at, records, batch, runs, tenants)
        landed.append((_landed(catalog, namespace), dlq))
    reference = landed[0][0]
    assert reference["signals"] and reference["scores"] and reference["quarantine"]
    assert any(r["reason"] == "DRIFT_DETECTED" for r in reference["quarantine"]), "no drift"
    assert landed[1] == landed[0]
    assert landed[2] == landed[0]
