"""The replay law, as a property: one input landed twice, batched differently, digests equal.

For a random workload (tenants, count, duplicates, invalid and bad records, seed) keyed to a random
number of partitions, the real flow runs in-process twice into two namespaces of one SQLite
catalog, with different random source batch sizes and lake batch sizes. Batching decides how rows
split into commits and files, never which rows land: every verifiable table's digest groups match,
by scan and from the snapshot summaries (history), and history equals the scan on each side.
"""

from __future__ import annotations

import itertools

import hypothesis.strategies as st
from bytewax.testing import TestingSink, TestingSource, run_main
from hypothesis import HealthCheck, given, settings
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NoSuchTableError
from pyiceberg.table import Table

from core.digest import UNVERIFIABLE_TABLES
from core.records import RawRecord
from core.settings import Settings
from core.switches import NO_HOLDS
from flows.coherence import build
from igflow.workload import SOURCES, WorkloadSpec, generate, tenant_ids
from operators.tenancy import TenancyPolicy
from replay.verify import compare, digest_history, digest_table
from sinks.lake_tables import TABLES
from tenancy.registry import StaticTenants
from tests.conftest import SIGNAL_V1, V1_ID, DictSchemas, kafka_messages
from tests.memory_keys import memory_sealer

POLICY = TenancyPolicy.load(Settings().policies_dir)
#: Every tenant a drawn workload can name (``tenant-00`` … ``tenant-04``).
TENANTS = StaticTenants.of(*tenant_ids(5), sources=SOURCES)
VERIFIABLE = [t.name for t in TABLES if t.name not in UNVERIFIABLE_TABLES]
#: Namespaces are unique per example: the catalog (a function-scoped fixture) outlives them.
_NAMESPACES = itertools.count()

_specs = st.builds(
    WorkloadSpec,
    tenants=st.integers(1, 5),
    count=st.integers(1, 25),
    seed=st.integers(0, 2**16),
    duplicates=st.sampled_from([0.0, 0.1, 0.3]),
    invalid=st.sampled_from([0.0, 0.05, 0.2]),
    bad=st.integers(0, 3),
)

#: One in-memory key store for the module: runs compared with each other seal alike.
SEALER = memory_sealer()


def _land(
    settings_: Settings,
    schemas: DictSchemas,
    records: list[RawRecord],
    namespace: str,
    source_batch: int,
    lake_batch: int,
) -> None:
    flow = build(
        settings_.with_changes("lake", namespace=namespace, batch_max_rows=lake_batch),
        source=TestingSource(records, batch_size=source_batch),
        lookup=schemas,
        dlq=TestingSink([]),
        tenants=TENANTS,
        holds=NO_HOLDS,
        policy=POLICY,
        sealer=SEALER,
    )
    run_main(flow)


def _load(catalog: Catalog, namespace: str, name: str) -> Table | None:
    try:
        return catalog.load_table((namespace, name))
    except NoSuchTableError:
        return None


@settings(
    max_examples=15,
    deadline=None,
    # The catalog fixture is shared by the examples on purpose; each example has its own
    # namespaces, so nothing leaks between them.
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    spec=_specs,
    partitions=st.integers(1, 4),
    source_batches=st.tuples(st.integers(1, 64), st.integers(1, 64)),
    lake_batches=st.tuples(st.integers(1, 200), st.integers(1, 200)),
)
def test_any_batching_of_one_input_lands_the_same_digests(
    lake_settings: Settings,
    catalog: Catalog,
    schemas: DictSchemas,
    spec: WorkloadSpec,
    partitions: int,
    source_batches: tuple[int, int],
    lake_batches: tuple[int, int],
) -> None:
    messages = list(generate(spec, V1_ID, SIGNAL_V1.parsed))
    records = kafka_messages(messages, partitions=partitions)
    n = next(_NAMESPACES)
    original, other = f"law{n}_a", f"law{n}_b"
    _land(lake_settings, schemas, records, original, source_batches[0], lake_batches[0])
    _land(lake_settings, schemas, records, other, source_batches[1], lake_batches[1])

    landed = 0
    for name in VERIFIABLE:
        table_a = _load(catalog, original, name)
        table_b = _load(catalog, other, name)
        assert (table_a is None) == (table_b is None), f"{name} exists on one side only"
        if table_a is None or table_b is None:
            continue
        scan_a, scan_b = digest_table(table_a, name), digest_table(table_b, name)
        history_a, history_b = digest_history(table_a, name), digest_history(table_b, name)
        for left, right in ((scan_a, scan_b), (history_a, history_b), (history_a, scan_b)):
            report = compare(left, right)
            assert report.identical, f"{name}: {[g.key for g in report.mismatched]}"
            assert all(g.status == "match" for g in report.groups)
        assert history_a == scan_a and history_b == scan_b
        landed += sum(g.count for g in scan_a.values())
    # Something landed: the law is not vacuously true over empty tables.
    assert landed > 0
