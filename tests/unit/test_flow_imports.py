"""What a flow imports follows its settings, and a missing dependency stops it at start-up.

A lake-only flow imports no serving store's client (redis-py, the Bolt driver), no HTTP client
for a PSI partner it does not have and, with pandas deferred as ``igflow run`` defers it, no
pandas; an enabled store or partner whose client cannot be imported fails
:func:`flows.coherence.build` with a :class:`ConfigError` that names it, before a record is read
(not on the first write or window, mid-run).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from bytewax.testing import TestingSink, TestingSource

from core.errors import ConfigError
from core.settings import Settings
from core.switches import NO_HOLDS
from flows.coherence import build
from igflow.workload import SOURCES, WorkloadSpec, generate, tenant_ids
from operators.tenancy import TenancyPolicy
from tenancy.registry import StaticTenants
from tests.conftest import SIGNAL_V1, V1_ID, DictSchemas, kafka_messages
from tests.fresh_python import run_python
from tests.memory_keys import memory_sealer

#: What a lake-only flow without a PSI partner must not import: the serving stores' modules and
#: clients, the PSI step's HTTP client (httpx, with click and pygments), and pandas.
SERVING_ONLY = (
    "sinks.redis",
    "sinks.graph",
    "sinks.postgres",
    "redis",
    "neo4j",
    "httpx",
    "pandas",
)


def test_a_lake_only_run_imports_no_serving_client_and_no_pandas(tmp_path: Path) -> None:
    code = """
        import json, sys
        from pathlib import Path
        from core.lazy_pandas import defer_pandas
        defer_pandas()  # as igflow run does, before the flow's modules
        from bytewax.testing import TestingSink, TestingSource, run_main
        from pyiceberg.catalog.sql import SqlCatalog
        from core.settings import Settings
        from core.switches import NO_HOLDS
        from flows.coherence import build
        from igflow.workload import SOURCES, WorkloadSpec, generate, tenant_ids
        from operators.tenancy import TenancyPolicy
        from tenancy.registry import StaticTenants
        from tests.conftest import SIGNAL_V1, V1_ID, SIGNAL_V2, V2_ID, DictSchemas, kafka_messages
        from tests.memory_keys import memory_sealer

        tmp = Path(sys.argv[1])
        settings = Settings(stack_dir=str(tmp)).with_changes("stores", sinks="").with_changes(
            "lake", catalog_uri=f"sqlite:///{tmp / 'catalog.db'}",
            warehouse=(tmp / "warehouse").as_uri(), batch_max_rows=100, batch_max_seconds=0.05)
        (tmp / "warehouse").mkdir()
        records = kafka_messages(list(generate(WorkloadSpec(tenants=2, count=20), V1_ID,
                                               SIGNAL_V1.parsed)))
        dlq = []
        flow = build(
            settings, source=TestingSource(records, batch_size=10),
            lookup=DictSchemas({V1_ID: SIGNAL_V1.text, V2_ID: SIGNAL_V2.text}),
            dlq=TestingSink(dlq), tenants=StaticTenants.of(*tenant_ids(2), sources=SOURCES),
            holds=NO_HOLDS, policy=TenancyPolicy.load(settings.policies_dir),
            sealer=memory_sealer())
        run_main(flow)
        catalog = SqlCatalog(settings.lake.catalog_name, **settings.catalog_properties)
        landed = catalog.load_table("coherence.signals").scan().to_arrow().num_rows
        names = sys.argv[2:]
        print(json.dumps({"landed": landed, "imported": [n for n in names if n in sys.modules]}))
        """
    out = run_python(code, str(tmp_path), *SERVING_ONLY)
    # The scan's to_arrow() above imports no pandas either; 40 signals, none held.
    assert out == {"landed": 40, "imported": []}


@pytest.mark.parametrize(
    ("store", "module", "client"),
    [
        ("redis", "sinks.redis", "redis"),
        ("graph", "sinks.graph", "neo4j"),
        ("postgres", "sinks.postgres", "psycopg"),
    ],
)
def test_an_enabled_store_without_its_client_fails_at_build(
    monkeypatch: pytest.MonkeyPatch, lake_settings: Settings, store: str, module: str, client: str
) -> None:
    # As if the client package were not installed: `import <client>` raises
    # ModuleNotFoundError (None in sys.modules), and the sink's module is imported afresh.
    monkeypatch.setitem(sys.modules, client, None)
    monkeypatch.delitem(sys.modules, module, raising=False)
    settings = lake_settings.with_changes("stores", sinks=store)
    records = kafka_messages(
        list(generate(WorkloadSpec(tenants=1, count=5), V1_ID, SIGNAL_V1.parsed))
    )
    with pytest.raises(ConfigError) as raised:
        _build(settings, records)
    message = str(raised.value)
    assert f"stores.sinks names {store}" in message
    assert repr(client) in message


def test_a_psi_partner_without_its_http_client_fails_at_build(
    monkeypatch: pytest.MonkeyPatch, lake_settings: Settings
) -> None:
    monkeypatch.setitem(sys.modules, "httpx", None)
    settings = lake_settings.with_changes("psi", server_url="http://127.0.0.1:9/")
    with pytest.raises(
        ConfigError, match=r"psi\.server_url is set, but its dependency .httpx. cannot be imported"
    ):
        _build(settings, [])


def _build(settings: Settings, records: list[Any]) -> None:
    """``build`` of one tenant's flow over ``records`` (in process)."""
    build(
        settings,
        source=TestingSource(records),
        lookup=DictSchemas({V1_ID: SIGNAL_V1.text}),
        dlq=TestingSink([]),
        tenants=StaticTenants.of(*tenant_ids(1), sources=SOURCES),
        holds=NO_HOLDS,
        policy=TenancyPolicy.load(settings.policies_dir),
        sealer=memory_sealer(),
    )


def test_a_run_imports_nothing_after_import_flow(tmp_path: Path) -> None:
    # `igflow run --processes N` forks after import_flow: whatever a run imports later, each
    # child imports again (its libraries' lazy imports at the first append, manifest read,
    # host name: igflow.runner.FIRST_USE). A lake-only flow imports nothing new.
    code = """
        import json, sys
        from pathlib import Path
        from core.settings import Settings
        from igflow.runner import import_flow

        tmp = Path(sys.argv[1])
        settings = Settings(stack_dir=str(tmp)).with_changes("stores", sinks="").with_changes(
            "lake", catalog_uri=f"sqlite:///{tmp / 'catalog.db'}",
            warehouse=(tmp / "warehouse").as_uri(), batch_max_rows=100, batch_max_seconds=0.05)
        (tmp / "warehouse").mkdir()
        import_flow(settings)
        # The test's own harness, imported before the count starts.
        from bytewax.testing import TestingSink, TestingSource, run_main
        from pyiceberg.catalog.sql import SqlCatalog
        from core.switches import NO_HOLDS
        from flows.coherence import build
        from igflow.workload import SOURCES, WorkloadSpec, generate, tenant_ids
        from operators.tenancy import TenancyPolicy
        from tenancy.registry import StaticTenants
        from tests.conftest import SIGNAL_V1, V1_ID, SIGNAL_V2, V2_ID, DictSchemas, kafka_messages
        from tests.memory_keys import memory_sealer
        records = kafka_messages(list(generate(WorkloadSpec(tenants=2, count=20), V1_ID,
                                               SIGNAL_V1.parsed)))

        before = set(sys.modules)
        flow = build(
            settings, source=TestingSource(records, batch_size=10),
            lookup=DictSchemas({V1_ID: SIGNAL_V1.text, V2_ID: SIGNAL_V2.text}),
            dlq=TestingSink([]), tenants=StaticTenants.of(*tenant_ids(2), sources=SOURCES),
            holds=NO_HOLDS, policy=TenancyPolicy.load(settings.policies_dir),
            sealer=memory_sealer())
        run_main(flow)
        imported = sorted(set(sys.modules) - before)
        catalog = SqlCatalog(settings.lake.catalog_name, **settings.catalog_properties)
        landed = catalog.load_table("coherence.signals").scan().to_arrow().num_rows
        print(json.dumps({"landed": landed, "imported": imported}))
        """
    out = run_python(code, str(tmp_path))
    assert out == {"landed": 40, "imported": []}
