"""``core.logs.LineLimit``: lines the input can repeat without bound (a rejected record's) are
written so many a second per key, and the rest counted in one line; the DLQ keeps every one."""

from __future__ import annotations

import logging
import threading

import pytest

from core.logs import LineLimit
from core.reasons import ReasonCode
from core.records import RawRecord, Rejected
from sinks.dlq import dlq_message
from tests.fresh_python import run_python


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _lines(caplog: pytest.LogCaptureFixture) -> list[tuple[str, dict[str, object]]]:
    return [
        (r.getMessage(), {k: r.__dict__.get(k) for k in ("op", "error_code", "rows")})
        for r in caplog.records
    ]


@pytest.fixture
def logger(caplog: pytest.LogCaptureFixture) -> logging.Logger:
    caplog.set_level(logging.WARNING, logger="test.limit")
    return logging.getLogger("test.limit")


def test_lines_past_the_limit_are_counted_when_their_second_is_over(
    logger: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    clock = _Clock()
    limit = LineLimit(logger, 3, op="dlq", clock=clock)
    for i in range(10):
        limit.warning("BAD", "line %d", i, extra={"op": "dlq"})
    assert [m for m, _ in _lines(caplog)] == ["line 0", "line 1", "line 2"]
    clock.now += 0.99  # the same second
    limit.warning("BAD", "line %d", 10, extra={"op": "dlq"})
    assert len(caplog.records) == 3
    clock.now += 0.01  # the next: its first line comes after the count of the one before
    limit.warning("BAD", "line %d", 11, extra={"op": "dlq"})
    assert _lines(caplog)[3:] == [
        (
            "8 more lines with BAD in one second were not written (at most 3 a second are)",
            {"op": "dlq", "error_code": "BAD", "rows": 8},
        ),
        ("line 11", {"op": "dlq", "error_code": None, "rows": None}),
    ]


def test_each_key_has_its_own_second(
    logger: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    limit = LineLimit(logger, 1, op="dlq", clock=_Clock())
    for key in ("A", "B", "A", "B", "C"):
        limit.warning(key, "%s", key, extra={})
    assert [m for m, _ in _lines(caplog)] == ["A", "B", "C"]
    limit.flush()
    assert [(m, x["error_code"], x["rows"]) for m, x in _lines(caplog)[3:]] == [
        ("1 more lines with A in one second were not written (at most 1 a second are)", "A", 1),
        ("1 more lines with B in one second were not written (at most 1 a second are)", "B", 1),
    ]
    limit.flush()  # nothing held: nothing to say
    assert len(caplog.records) == 5


def test_zero_writes_only_counts(logger: logging.Logger, caplog: pytest.LogCaptureFixture) -> None:
    limit = LineLimit(logger, 0, op="dlq", clock=_Clock())
    for _ in range(4):
        limit.warning("BAD", "never", extra={})
    limit.flush()
    assert [x["rows"] for _, x in _lines(caplog)] == [4]
    with pytest.raises(ValueError, match="negative"):
        LineLimit(logger, -1, op="dlq")


def test_threads_lose_no_count(logger: logging.Logger, caplog: pytest.LogCaptureFixture) -> None:
    limit = LineLimit(logger, 5, op="dlq", clock=_Clock())

    def many() -> None:
        for _ in range(500):
            limit.warning("BAD", "line", extra={})

    threads = [threading.Thread(target=many) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    limit.flush()
    written = [x for m, x in _lines(caplog) if m == "line"]
    counted = sum(
        x["rows"] for m, x in _lines(caplog) if m != "line" and isinstance(x["rows"], int)
    )
    assert (len(written), counted) == (5, 1995)


def test_the_count_is_written_when_the_process_exits() -> None:
    out = run_python(
        """
        import json, logging, sys
        from core.logs import LineLimit
        class Printed(logging.Handler):
            def emit(self, record):
                print(json.dumps([record.getMessage(), getattr(record, "rows", None)]))
        logger = logging.getLogger("exit.limit")
        logger.addHandler(Printed())
        limit = LineLimit(logger, 2, op="dlq")
        for i in range(7):
            limit.warning("BAD", "line %d", i, extra={})
        """
    )
    assert out == [
        "5 more lines with BAD in one second were not written (at most 2 a second are)",
        5,
    ]


def test_every_reject_gets_its_dlq_message_whatever_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="sinks.dlq")
    limit = LineLimit(logging.getLogger("sinks.dlq"), 10, op="dlq", clock=_Clock())
    rejects = [
        Rejected(
            ReasonCode.FIELD_INVALID,
            "value out of range",
            RawRecord("t", 0, i, b"k", b"v%d" % i, 1_700_000_000_000),
            "validate",
            "tenant-00",
            2,
        )
        for i in range(25)
    ]
    messages = [dlq_message(r, lines=limit) for r in rejects]
    limit.flush()
    assert [m.value for m in messages] == [b"v%d" % i for i in range(25)]
    logged = [r for r in caplog.records if r.getMessage().startswith("rejected record")]
    assert [r.__dict__["kafka_offset"] for r in logged] == list(range(10))
    assert {r.__dict__["error_code"] for r in logged} == {"FIELD_INVALID"}
    counts = [r.__dict__["rows"] for r in caplog.records if r not in logged]
    assert counts == [15]
