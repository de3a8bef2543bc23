"""Replay's pure parts: offset parsing, progress arithmetic, the source's start/end bounds."""

from __future__ import annotations

import io
import json
from datetime import timedelta

import pytest
from bytewax.testing import TestingSink, TestingSource, run_main

from core.errors import ConfigError, IgflowError
from core.records import RawRecord
from core.settings import Settings
from core.switches import NO_HOLDS
from flows.coherence import build
from igflow.cli import main as cli_main
from igflow.workload import WorkloadSpec, generate
from replay.run import (
    NO_RECOVERY_EPOCH,
    Progress,
    _epoch,
    _Tally,
    json_progress,
    parse_offsets,
    tty_progress,
)
from replay.verify import verify
from sources.kafka import KafkaTopicSource, _Partition
from tests.conftest import SIGNAL_V1, V1_ID, DictSchemas, kafka_messages
from tests.unit.test_verify import POLICY, SEALER, TENANTS


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0:100,1:0,2:5", {0: 100, 1: 0, 2: 5}),
        ("3:7", {3: 7}),
        (" 0:1 , 1:2 ", {0: 1, 1: 2}),
    ],
)
def test_parse_offsets(text: str, expected: dict[int, int]) -> None:
    assert parse_offsets(text) == expected


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", "no offsets given"),
        ("   ", "no offsets given"),
        ("0", "is not PARTITION:OFFSET"),
        ("0:1,", "is not PARTITION:OFFSET"),
        ("a:1", "must be integers"),
        ("0:x", "must be integers"),
        ("0:1.5", "must be integers"),
        ("-1:4", "must not be negative"),
        ("0:-4", "must not be negative"),
        ("0:1,0:2", "partition 0 is given twice"),
    ],
)
def test_parse_offsets_errors(text: str, error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        parse_offsets(text)


def test_a_flow_without_a_recovery_store_runs_in_one_long_epoch() -> None:
    # An epoch only snapshots (to nothing) without a recovery store: a replay runs in one.
    plain = Settings().with_changes("run", recovery_dir="", epoch_seconds=0.5)
    assert _epoch(plain) == NO_RECOVERY_EPOCH >= timedelta(hours=1)
    recovered = plain.with_changes("run", recovery_dir="/tmp/recovery")
    assert _epoch(recovered) == timedelta(seconds=0.5)


def test_progress_rate_and_eta() -> None:
    p = Progress(rows=500, offsets=400, total=1000, seconds=2.0)
    assert p.rate == 250.0
    assert p.eta_seconds == pytest.approx(3.0)
    assert Progress(0, 0, 1000, 0.0).eta_seconds is None
    assert Progress(10, 10, None, 1.0).eta_seconds is None


def _raw(partition: int, offset: int) -> RawRecord:
    return RawRecord(
        topic="t",
        partition=partition,
        offset=offset,
        key=None,
        value=b"",
        timestamp_ms=None,
        error=None,
        headers=(),
    )


def test_tally_counts_rows_and_offsets_and_knows_the_total() -> None:
    tally = _Tally({0: 10, 1: 0}, {0: 50, 1: 20})
    assert tally.total == 60
    tally.read(0, [_raw(0, 10), _raw(0, 11)])
    tally.read(1, [_raw(1, 4)])  # offsets 0..3 absent (a gap still counts as covered)
    assert tally.rows == 3
    assert tally.offsets() == 2 + 5
    tally.done(0)
    tally.done(1)
    assert tally.offsets() == 60
    assert _Tally({0: 0, 1: 0}, {0: 5}).total is None  # partition 1 has no end: unknown


def test_progress_callbacks_write_a_bar_or_json_lines() -> None:
    bar = io.StringIO()
    tty_progress(bar, width=10)(Progress(rows=50, offsets=50, total=100, seconds=1.0))
    assert bar.getvalue().startswith("\rreplay [#####.....]  50% 50 rows  50/s  ETA 00:01")
    lines = io.StringIO()
    json_progress(lines)(Progress(rows=50, offsets=50, total=100, seconds=1.0))
    line = json.loads(lines.getvalue())
    assert line["op"] == "replay.progress"
    assert (line["rows"], line["total"], line["per_second"], line["eta_seconds"]) == (
        50,
        100,
        50,
        1.0,
    )


def _unreachable() -> dict[str, object]:
    # A port nobody listens on: a partition that is done at once never fetches.
    return {"bootstrap.servers": "127.0.0.1:9", "group.id": "unit", "log_level": 0}


@pytest.mark.parametrize(("start", "stop"), [(5, 5), (9, 5), (0, 0)])
def test_a_partition_whose_end_is_at_or_before_its_start_is_done_at_once(
    start: int, stop: int
) -> None:
    part = _Partition(_unreachable(), "t", 0, start, bounded=True, batch_size=10, stop=stop)
    try:
        with pytest.raises(StopIteration):
            part.next_batch()
        assert part.snapshot() == start
        assert part.next_awake() is None
    finally:
        part.close()


def test_negative_offsets_are_refused_by_the_source() -> None:
    with pytest.raises(IgflowError, match="negative end offset"):
        KafkaTopicSource("127.0.0.1:9", "t", bounded=True, end_offsets={0: -1})


def test_cli_refuses_a_namespace_unfit_for_scratch_store_names(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Without --lake-only the namespace also names Redis keys, graph labels and a schema;
    # refused before anything is read or created.
    code = cli_main(["replay", "--from", "0:0", "--to", "0:10", "--into", "scratch.x"])
    assert code == 2
    assert "letters, digits and _" in capsys.readouterr().err


def test_cli_refuses_half_a_cluster(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli_main(["replay", "--from", "0:0", "--to", "0:10", "--into", "s", "-i", "0"])
    assert code == 2
    assert "-i/--process-id and -a/--addresses go together" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--from", "0:0"], "--from and --to go together"),
        (["--from", "0:0", "--from-time", "2026-01-01"], "not both"),
        (["--from", "0:x", "--to", "0:1"], "must be integers"),
    ],
)
def test_cli_usage_errors(args: list[str], error: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli_main(["replay", "--into", "scratch", "--lake-only", *args])
    assert code == 2
    assert error in capsys.readouterr().err


def test_a_replay_makes_no_dlq_message_and_lands_every_reject(
    lake_settings: Settings, schemas: DictSchemas
) -> None:
    """``reject_messages=False`` (a replay) drops only the DLQ messages: the same rejects land in
    the quarantine table, with the same content as a flow that sends them."""
    records = kafka_messages(
        list(
            generate(WorkloadSpec(tenants=3, count=30, bad=4, invalid=0.1), V1_ID, SIGNAL_V1.parsed)
        )
    )
    sent: dict[str, list[object]] = {"with_dlq": [], "without_dlq": []}
    for namespace, messages in (("with_dlq", True), ("without_dlq", False)):
        run_main(
            build(
                lake_settings.with_changes("lake", namespace=namespace, batch_max_rows=7),
                source=TestingSource(records, batch_size=7),
                lookup=schemas,
                dlq=TestingSink(sent[namespace]),
                reject_messages=messages,
                tenants=TENANTS,
                holds=NO_HOLDS,
                policy=POLICY,
                sealer=SEALER,
            )
        )
    assert sent["with_dlq"] and sent["without_dlq"] == []
    report = verify(lake_settings, "with_dlq", "without_dlq", tables=["quarantine"])
    assert report.identical and report.groups
