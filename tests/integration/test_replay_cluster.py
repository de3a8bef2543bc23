"""Replay and cluster runs on the real local stack land the same digests as one plain run.

"2 processes give the same digests as 1", both ways: the same topic landed by a 2-process
``igflow run`` (``-i/-a``) into a second namespace verifies IDENTICAL against the 1-process run
(and against its replay), by scan and from the cluster's commit history; and a replay by 2
processes verifies IDENTICAL against the 1-process replay and the original. The same for 2
processes forked by one command (``--processes 2``), run and replay. Replays commit like
their original, so their data files are byte-identical to it, whether 1 or 2 processes replay
and whether the original's commits were made by 1 process or 2.
"""

from __future__ import annotations

import json

import pytest

from core.settings import Settings
from igflow.workload import WorkloadSpec
from tests.integration.conftest import (
    cluster_addresses,
    finish,
    igflow,
    json_lines,
    produce_workload,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SPEC = WorkloadSpec(tenants=4, count=400, duplicates=0.05, invalid=0.02, bad=3, seed=11)


def _verify(settings: Settings, namespace: str, against: str, *extra: str) -> str:
    out, _err = finish(
        igflow(settings, "verify", "--namespace", namespace, "--against", against, *extra)
    )
    assert "IDENTICAL" in out, out
    return out


def _files(out: str) -> dict[str, tuple[int, int]]:
    """The verify report's data files per table: (byte-identical, of)."""
    found: dict[str, tuple[int, int]] = {}
    for line in out.split("per table", 1)[1].splitlines()[1:]:
        words = line.split()
        if len(words) >= 7 and words[5] == "of":
            found[words[0]] = (int(words[4]), int(words[6]))
    return found


def _all_files_identical(out: str) -> None:
    files = {name: pair for name, pair in _files(out).items() if pair[1]}
    assert files and all(same == total for same, total in files.values()), files


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

    # The same offsets, replayed by 2 processes (-i/-a).
    replayed_p2 = f"{original}_replay_p2"
    addresses = cluster_addresses(2)
    procs = [
        igflow(
            settings,
            "replay",
            *("--from", frm, "--to", to, "--into", replayed_p2, "--lake-only"),
            *("-i", str(i), "-a", addresses),
        )
        for i in range(2)
    ]
    reports = [json.loads(finish(proc)[0].strip().splitlines()[-1]) for proc in procs]
    assert sorted(r["process"] for r in reports) == [0, 1]
    assert sum(r["rows"] for r in reports) == sum(ends.values())

    # The same offsets, replayed by one command forking 2 processes (--processes 2).
    replayed_f2 = f"{original}_replay_f2"
    out, _err = finish(
        igflow(
            settings,
            "replay",
            *("--from", frm, "--to", to, "--into", replayed_f2, "--lake-only"),
            *("--processes", "2"),
        )
    )
    reports = [json.loads(line) for line in out.strip().splitlines() if line.startswith("{")]
    assert sorted(r["process"] for r in reports) == [0, 1]
    assert sum(r["rows"] for r in reports) == sum(ends.values())

    # The same topic, landed by a cluster of 2 processes (-i/-a) into its own namespace.
    cluster = f"{original}_p2"
    on_cluster = settings.with_changes("lake", namespace=cluster)
    addresses = cluster_addresses(2)
    procs = [igflow(on_cluster, "run", "-i", str(i), "-a", addresses) for i in range(2)]
    for proc in procs:
        finish(proc)
    # That cluster's commits, replayed by 1 process.
    cluster_replayed = f"{cluster}_replay"
    finish(
        igflow(
            on_cluster,
            "replay",
            *("--from", frm, "--to", to, "--into", cluster_replayed, "--lake-only"),
        )
    )

    _all_files_identical(_verify(settings, original, replayed))
    _verify(settings, original, replayed, "--from-history")
    _all_files_identical(_verify(settings, replayed, replayed_p2))
    _all_files_identical(_verify(settings, original, replayed_p2, "--from-history"))
    _verify(settings, original, cluster)
    _verify(settings, cluster, original, "--from-history")
    _verify(settings, replayed, cluster)
    _all_files_identical(_verify(settings, cluster, cluster_replayed))
    _all_files_identical(_verify(settings, original, replayed_f2, "--from-history"))

    # And by one command forking 2 processes (igflow run --processes 2).
    forked = f"{original}_f2"
    finish(igflow(settings.with_changes("lake", namespace=forked), "run", "--processes", "2"))
    _verify(settings, original, forked)
    _verify(settings, forked, original, "--from-history")
