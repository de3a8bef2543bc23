"""``igflow`` with the lake batched by ledger lane, as the flow did before session 13 (main
859e9e1): ``python -m tests.integration.lane_keyed run -r DIR`` writes a recovery store with that
keying, for the migration test (tests/integration/test_lane_migration.py).

``land`` below is 859e9e1's, unchanged but for its docstring: each lake table batched by
``collect_batches("<flow_id>_batch", key=table.lane)``. The flow is the current one otherwise
(the recovery snapshots of every other step are this code's). Since the flow's items became
tenant runs (session 14), ``land`` gets runs and the batching step takes runs: it flattens them
and cuts them into runs by lane instead of keying records by lane (stateless steps); the
batching step's id and snapshot (a ``CollectState`` of records per lane) are 859e9e1's.
"""

from __future__ import annotations

import sys
from datetime import timedelta
from typing import TypeVar

import bytewax.operators as op
from bytewax.dataflow import Stream

import flows.coherence
from core.catalog import CatalogOnce
from core.output_settings import OutputSettings
from core.settings import Settings
from core.tls import Brokers
from operators.batching import Runs, flatten, runs_on
from operators.collect import collect_batches
from sinks.group_offsets import GroupTarget
from sinks.iceberg import IcebergSink
from sinks.lake_plan import CommitPlan, planned_batches
from sinks.lake_tables import TableDef
from tenancy.sealed_state import StateSeal
from tenancy.sealing import Sealer

T = TypeVar("T")


def land(
    flow_id: str,
    runs: Runs[T],
    table: TableDef[T],
    settings: Settings,
    plan: CommitPlan | None = None,
    group: GroupTarget | None = None,
    bootstrap: Brokers | None = None,
    sealer: Sealer | None = None,
    seal: StateSeal | None = None,
    record: OutputSettings | None = None,
    catalog: CatalogOnce | None = None,
    phase: timedelta = timedelta(0),
) -> None:
    """859e9e1's ``flows.coherence.land``: batches keyed by ledger lane. ``phase``, which the
    flow passes since session 15, is not used: 859e9e1's batches were not on a grid."""
    up: Stream[T] = flatten(f"{flow_id}_rows", runs)
    if plan is None:
        keyed = runs_on(f"{flow_id}_lane", up, table.lane)
        batches = collect_batches(
            f"{flow_id}_batch",
            keyed,
            timeout=timedelta(seconds=settings.lake.batch_max_seconds),
            max_size=settings.lake.batch_max_rows,
            seal=seal,
            key_of=table.lane,
        )
    else:
        batches = planned_batches(f"{flow_id}_plan", up, table, plan, settings.lake.batch_max_rows)
    sink = IcebergSink(
        settings.lake.catalog_name,
        settings.catalog_properties,
        settings.lake.namespace,
        table,
        commit_attempts=settings.lake.commit_attempts,
        commit_each=plan is not None,
        group=group,
        bootstrap=bootstrap,
        sealer=sealer,
        settings=record,
        catalog=catalog,
    )
    op.output(flow_id, batches, sink)


if __name__ == "__main__":
    flows.coherence.land = land  # igflow.runner imports build at run time: it finds this one
    from igflow.cli import main

    sys.exit(main(sys.argv[1:]))
