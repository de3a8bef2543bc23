"""Replay and cluster runs on the real local stack land the same digests as one plain run.

``igflow replay`` runs the flow in-process (no ``-i/-a``), so "2 processes give the same digests
as 1" is checked on ``igflow run``: the same topic landed by a 2-process cluster into a second
namespace verifies IDENTICAL against the 1-process run (and against its replay), by scan and from
the cluster's commit history.
"""

from __future__ import annotations

import json
import socket

import pytest

from igflow.settings import Settings
from igflow.workload import WorkloadSpec
from tests.integration.conftest import finish, igflow, json_lines, produce_workload

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SPEC = WorkloadSpec(tenants=4, count=400, duplicates=0.05, invalid=0.02, bad=3, seed=11)


def _addresses(n: int) -> str:
    ports = []
    for _ in range(n):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    return ";".join(f"127.0.0.1:{p}" for p in ports)


def _verify(settings: Settings, namespace: str, against: str, *extra: str) -> str:
    out, _err = finish(
        igflow(settings, "verify", "--namespace", namespace, "--against", against, *extra)
    )
    assert "IDENTICAL" in out, out
    return out


def test_replay_and_a_two_process_cluster_land_the_digests_of_one_process(
    it_settings: Settings,
) -> None:
    # Small fetches and lake batches: many commits, split differently on every path.
    settings = it_settings.with_changes("kafka", batch_size=100).with_changes(
        "lake", batch_max_rows=300
    )
    produce_workload(settings, SPEC)
    original = settings.lake.namespace

    # 1 process, the plain run.
    _out, err = finish(igflow(settings, "run"))
    ends = {
        line["kafka_partition"]: line["kafka_offset"]
        for line in json_lines(err)
        if line.get("op") == "source.end"
    }
    assert ends and sum(ends.values()) > 0, "no source.end log lines"

    # A replay of every offset into a scratch namespace.
    replayed = f"{original}_replay"
    frm = ",".join(f"{p}:0" for p in sorted(ends))
    to = ",".join(f"{p}:{o}" for p, o in sorted(ends.items()))
    out, _err = finish(
        igflow(settings, "replay", "--from", frm, "--to", to, "--into", replayed, "--lake-only")
    )
    assert json.loads(out.strip().splitlines()[-1])["rows"] == sum(ends.values())

    # The same topic, landed by a cluster of 2 processes (-i/-a) into its own namespace.
    cluster = f"{original}_p2"
    on_cluster = settings.with_changes("lake", namespace=cluster)
    addresses = _addresses(2)
    procs = [igflow(on_cluster, "run", "-i", str(i), "-a", addresses) for i in range(2)]
    for proc in procs:
        finish(proc)

    _verify(settings, original, replayed)
    _verify(settings, original, replayed, "--from-history")
    _verify(settings, original, cluster)
    _verify(settings, cluster, original, "--from-history")
    _verify(settings, replayed, cluster)
