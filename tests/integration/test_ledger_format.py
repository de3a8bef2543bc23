"""The ledger's delta format on the stack's Postgres catalog: two processes append to one table
whose history starts in the old format (the whole ledger per summary), losing commit races and
re-sending what landed; every row lands once and the ledger read cold is exact."""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest

from core.catalog import catalog
from core.records import Tagged
from core.settings import Settings
from sinks.iceberg import IcebergAppender, ensure_table, ledger
from sinks.lake_plan import CommitPlan
from sinks.lake_tables import SIGNALS
from tests.integration.conftest import REPO, env_for
from tests.integration.scratch import Scratch
from tests.unit.test_ledger_format import _item, _old_append, _reference

pytestmark = pytest.mark.integration

#: One writer process: ``python -c WRITER namespace partition``. Batches of 5 rows over 6 tenants,
#: each re-sending the 2 rows before it; checkpoints every 3 commits.
WRITER = """
import sys
from core.catalog import catalog
from core.settings import Settings
from sinks.iceberg import IcebergAppender
from sinks.lake_tables import SIGNALS
from tests.unit.test_iceberg_sink import _item

namespace, partition = sys.argv[1], int(sys.argv[2])
table = catalog(Settings.load()).load_table((namespace, "signals"))
appender = IcebergAppender(table, SIGNALS, attempts=200, checkpoint_every=3)
rows = lambda lo, hi: [_item(partition, o, f"tenant-{o % 6:02d}") for o in range(lo, hi)]
for start in range(10, 70, 5):
    appender.append(rows(max(10, start - 2), start + 5))
"""


def test_two_processes_on_an_old_format_lake_land_each_row_once(
    stack: Settings, scratch: Scratch
) -> None:
    settings = scratch.lake_of(stack.with_changes("lake", namespace=f"it_{uuid.uuid4().hex[:10]}"))
    namespace = settings.lake.namespace
    table = ensure_table(catalog(settings), namespace, SIGNALS)
    # The release before: offsets 0..9 of both partitions, whole ledgers in the summaries.
    sent: list[Tagged] = []
    for start in (0, 5):
        batch = [
            _item(p, o, f"tenant-{o % 6:02d}") for p in (0, 1) for o in range(start, start + 5)
        ]
        sent.extend(batch)
        _old_append(table, batch, _reference(sent))
    env = env_for(settings)
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, namespace, str(p)],
            cwd=REPO,
            env=env,
            stderr=subprocess.PIPE,
        )
        for p in (0, 1)
    ]
    for w in writers:
        _out, err = w.communicate(timeout=300)
        assert w.returncode == 0, err.decode()[-3000:]
    sent.extend(_item(p, o, f"tenant-{o % 6:02d}") for p in (0, 1) for o in range(10, 70))
    cold = catalog(settings).load_table((namespace, "signals"))
    rows = cold.scan().to_arrow()
    keys = list(
        zip(
            rows.column("kafka_partition").to_pylist(),
            rows.column("kafka_offset").to_pylist(),
            strict=True,
        )
    )
    assert sorted(keys) == sorted((p, o) for p in (0, 1) for o in range(70))
    assert ledger(cold) == _reference(sent)
    # A third writer (a resume that re-sends everything) lands nothing.
    again = IcebergAppender(cold, SIGNALS).append(sent)
    assert (again.appended, again.skipped) == (0, len(sent))
    plan = CommitPlan.from_table(cold)
    assert plan.commit_of("topic", 1, "signals:tenant-03", 9) == (1, True)
    assert len(plan) == len([s for s in cold.metadata.snapshots])
