"""The psi step in the running flow: v2 signals with selectors, a partner's ``igflow psi serve``
on loopback, and ``coherence.deconfliction`` holding, per tenant and window, exactly the
plaintext intersection of the window's selectors with the partner's set."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path

import pytest

from core.contracts import signal_contracts
from core.settings import Settings
from igflow.producer import produce
from igflow.workload import WorkloadSpec, generate
from tests.integration.conftest import env_for, finish, igflow, opened_rows, recent
from tests.integration.test_psi_cli import serving
from tests.unit.test_psi_commands import write_csv

pytestmark = pytest.mark.integration

WINDOW = 300
#: The partner knows half of the selector space.
PARTNER = [f"sel-{i:05d}" for i in range(0, 10_000, 2)]


def _window(ts: datetime) -> datetime:
    start = int(ts.timestamp()) // WINDOW * WINDOW
    return datetime.fromtimestamp(start, UTC)


def test_each_tenant_window_lands_its_intersection_with_the_partner(
    it_settings: Settings, tmp_path: Path
) -> None:
    spec = dataclasses.replace(recent(WorkloadSpec(tenants=3, count=900, seed=51)), selectors=True)
    messages = list(generate(spec, 2, signal_contracts()[1].parsed))
    produce(it_settings, spec, schema_version=2)
    expected: dict[tuple[str, datetime], set[str]] = {}
    for m in messages:
        assert m.record is not None
        key = (m.record["tenant_id"], _window(m.record["ts"]))
        expected.setdefault(key, set()).update(m.record["selectors"])
    partner = set(PARTNER)

    csv = write_csv(tmp_path / "partner.csv", ["selector"], [[s] for s in PARTNER])
    env = env_for(it_settings)
    with serving(tmp_path / "psi.log", env, "--csv", str(csv), "--partner", "partner") as started:
        finish(
            igflow(
                it_settings,
                "run",
                IGFLOW_PSI_SERVER_URL=started["url"],
                IGFLOW_PSI_WINDOW_SECONDS=str(WINDOW),
            )
        )

    # The matched selectors are sealed (on by default): read through the analysts' helper.
    rows = opened_rows(it_settings, "deconfliction")
    got = {(r["tenant_id"], r["window_start"]): r for r in rows}
    assert set(got) == {k for k, selectors in expected.items() if selectors}
    for key, row in got.items():
        assert row["reason"] is None, row["reason"]
        assert set(row["matched"]) == expected[key] & partner
        assert row["selectors_sent"] == len(expected[key])
        assert row["provenance_id"] and row["kafka_offset"] >= 0
