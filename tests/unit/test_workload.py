"""The synthetic workload is deterministic and has exactly the faults asked for."""

from __future__ import annotations

from collections import Counter

from igflow.workload import BAD_KINDS, WorkloadSpec, generate
from tests.conftest import SIGNAL_V1, V1_ID


def _messages(spec: WorkloadSpec) -> list:
    return list(generate(spec, V1_ID, SIGNAL_V1.parsed))


def test_same_seed_same_bytes_other_seed_other_bytes() -> None:
    spec = WorkloadSpec(tenants=3, count=100, duplicates=0.05, bad=10, drift_tenant=1)
    a, b = _messages(spec), _messages(spec)
    assert [(m.key, m.value) for m in a] == [(m.key, m.value) for m in b]
    other = _messages(WorkloadSpec(tenants=3, count=100, seed=8))
    assert [m.value for m in other] != [m.value for m in a]


def test_counts_by_kind() -> None:
    msgs = _messages(WorkloadSpec(tenants=4, count=250, duplicates=0.05, bad=30))
    kinds = Counter(m.kind for m in msgs)
    assert kinds["valid"] == 1000
    assert sum(kinds[k] for k in BAD_KINDS) == 30
    assert all(kinds[k] == 10 for k in BAD_KINDS)
    assert 20 <= kinds["duplicate"] <= 80
    valid = [m for m in msgs if m.kind == "valid"]
    assert len({m.record["signal_id"] for m in valid if m.record}) == 1000
    duplicates = {m.value for m in msgs if m.kind == "duplicate"}
    assert duplicates <= {m.value for m in valid}


def test_the_drifted_tenant_shifts_mid_stream() -> None:
    msgs = _messages(WorkloadSpec(tenants=2, count=400, drift_tenant=1))

    def mean(tenant: str, lo: int, hi: int) -> float:
        values = [m.record["value"] for m in msgs if m.record and m.record["tenant_id"] == tenant][
            lo:hi
        ]
        return sum(values) / len(values)

    assert abs(mean("tenant-00", 0, 200) - mean("tenant-00", 200, 400)) < 0.05
    assert abs(mean("tenant-01", 0, 200) - mean("tenant-01", 200, 400)) > 0.1
