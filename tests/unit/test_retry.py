"""The one backoff policy and retry loop (core.retry), and the numbers each user keeps."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

import pytest
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import CommitFailedException

from core import metrics
from core.errors import RetryableSinkError
from core.records import Decoded, PolicyTags, Provenance, Signal, Tagged
from core.retry import RetriesExhausted, RetryPolicy, retrying, write_with_retry
from operators.psi_match import _RETRY as PSI_RETRY
from sinks.iceberg import _COMMIT_RETRY, IcebergAppender, ensure_table
from sinks.lake_tables import SIGNALS

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class Flaky:
    """Fails ``failures`` times with ``exc``, then returns the attempt number."""

    def __init__(self, failures: int, exc: Exception) -> None:
        self.failures = failures
        self.exc = exc
        self.calls: list[int] = []

    def __call__(self, attempt: int) -> int:
        self.calls.append(attempt)
        if len(self.calls) <= self.failures:
            raise self.exc
        return attempt


def test_full_jitter_is_uniform_below_the_capped_exponential() -> None:
    policy = RetryPolicy(attempts=10, base_seconds=0.1, cap_seconds=8.0)
    rng = random.Random(7)
    for attempt in range(1, 12):
        ceiling = min(8.0, 0.1 * 2 ** (attempt - 1))
        for _ in range(50):
            assert 0.0 <= policy.delay(attempt, rng) <= ceiling


def test_around_jitter_is_the_lakes_former_schedule() -> None:
    # sinks.iceberg used to wait `delay * (0.5 + random())`, delay from 0.05 doubling to 2.0.
    policy = RetryPolicy(attempts=8, base_seconds=0.05, cap_seconds=2.0, jitter="around")
    ours, theirs = random.Random(3), random.Random(3)
    delay = 0.05
    for attempt in range(1, 9):
        assert policy.delay(attempt, ours) == pytest.approx(delay * (0.5 + theirs.random()))
        delay = min(delay * 2, 2.0)


def test_each_user_keeps_its_numbers() -> None:
    assert RetryPolicy(8, 0.05, 2.0, "around") == _COMMIT_RETRY
    assert RetryPolicy(3, 0.2, 2.0, "full") == PSI_RETRY
    assert RetryPolicy() == RetryPolicy(10, 0.1, 8.0, "full")


def test_retrying_returns_once_a_call_succeeds_and_sleeps_between() -> None:
    calls = Flaky(2, ConnectionError("down"))
    seen: list[tuple[int, str, float | None]] = []
    slept: list[float] = []
    got = retrying(
        calls,
        RetryPolicy(attempts=5, base_seconds=0.01, cap_seconds=0.01),
        transient=lambda exc: isinstance(exc, ConnectionError),
        on_failure=lambda attempt, exc, wait: seen.append((attempt, str(exc), wait)),
        sleep=slept.append,
    )
    assert got == 3
    assert calls.calls == [1, 2, 3]
    assert [(a, e) for a, e, _ in seen] == [(1, "down"), (2, "down")]
    assert [w for _, _, w in seen] == slept
    assert all(0.0 <= w <= 0.01 for w in slept)


def test_retrying_gives_up_after_the_last_attempt_without_sleeping() -> None:
    error = TimeoutError("slow")
    calls = Flaky(10, error)
    seen: list[tuple[int, float | None]] = []
    slept: list[float] = []
    with pytest.raises(RetriesExhausted) as info:
        retrying(
            calls,
            RetryPolicy(attempts=3, base_seconds=0.01, cap_seconds=0.01),
            transient=lambda exc: isinstance(exc, TimeoutError),
            on_failure=lambda attempt, exc, wait: seen.append((attempt, wait)),
            sleep=slept.append,
        )
    assert info.value.attempts == 3
    assert info.value.last is error
    assert info.value.__cause__ is error
    assert calls.calls == [1, 2, 3]
    assert [a for a, _ in seen] == [1, 2, 3]
    assert seen[-1][1] is None
    assert len(slept) == 2


def test_retrying_lets_a_permanent_error_through_at_once() -> None:
    calls = Flaky(10, PermissionError("no"))
    slept: list[float] = []
    with pytest.raises(PermissionError):
        retrying(
            calls,
            RetryPolicy(attempts=5),
            transient=lambda exc: isinstance(exc, TimeoutError),
            sleep=slept.append,
        )
    assert calls.calls == [1]
    assert slept == []


def test_a_policy_of_no_attempts_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one attempt"):
        retrying(Flaky(0, OSError()), RetryPolicy(attempts=0), transient=lambda _exc: True)


def _lose(table: Any, times: int, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Make the catalog refuse the lake's next ``times`` commits as lost races
    (``CommitFailedException``, what a catalog answers when another writer moved the table
    first). At the catalog, so whichever path writes the files (``Table.append``,
    ``sinks.lake_write``) meets it: patching ``Table.append`` stopped reaching the lake's
    commits when it began writing its files itself."""
    catalog = table.catalog
    real = catalog.commit_table
    lost: list[int] = []

    def commit_table(tbl: Any, requirements: Any, updates: Any) -> Any:
        if len(lost) < times:
            lost.append(1)
            msg = "another writer won"
            raise CommitFailedException(msg)
        return real(tbl, requirements, updates)

    monkeypatch.setattr(catalog, "commit_table", commit_table)  # undone after the test
    return lost


def test_the_lake_retries_a_lost_commit_race_after_rereading_the_ledger(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    appender = IcebergAppender(ensure_table(catalog, "coherence", SIGNALS), SIGNALS, attempts=3)
    retries = metrics.LAKE_COMMIT_RETRIES.labels("signals")
    before = retries._value.get()
    lost = _lose(appender.table, 2, monkeypatch)
    result = appender.append([_signal(0), _signal(1)])
    assert (result.appended, result.attempts, len(lost)) == (2, 3, 2)
    assert retries._value.get() - before == 2


def test_the_lake_gives_up_after_its_commit_attempts(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    appender = IcebergAppender(ensure_table(catalog, "coherence", SIGNALS), SIGNALS, attempts=2)
    retries = metrics.LAKE_COMMIT_RETRIES.labels("signals")
    before = retries._value.get()
    lost = _lose(appender.table, 10, monkeypatch)
    with pytest.raises(RetryableSinkError, match="gave up after 2 lost commit races"):
        appender.append([_signal(0)])
    assert len(lost) == 2
    assert retries._value.get() - before == 2  # every lost race counts, the last one too


def _signal(offset: int) -> Tagged:
    signal = Signal("tenant-00", f"s-{offset}", "latency", 0.5, None, "src", T0)
    decoded = Decoded(signal, Provenance("topic", 0, offset, 1, "0" * 64))
    return Tagged(decoded, PolicyTags("p", "standard-365d", "l", "US"), "p" * 64, f"prov-{offset}")


def test_a_dead_lettered_batch_counts_as_failed_per_tenant() -> None:
    """The availability SLI's bad events: rows a store gave up on, by (bounded) tenant."""

    class Row:
        def __init__(self, tenant_id: str) -> None:
            self.tenant_id = tenant_id

    def failed(tenant: str) -> float:
        value = metrics.INGEST_FAILED.labels(tenant)._value.get()
        return float(value)

    before = {t: failed(t) for t in ("slo-a", "slo-b")}
    dead: list[int] = []

    def refuse(_batch: Any) -> None:
        raise RetryableSinkError("down")

    written = write_with_retry(
        "redis",
        [Row("slo-a"), Row("slo-a"), Row("slo-b")],
        refuse,
        transient=lambda _exc: True,
        dead_letter=lambda batch, _exc: dead.append(len(batch)),
        policy=RetryPolicy(attempts=2, base_seconds=0.0, cap_seconds=0.0),
        sleep=lambda _s: None,
    )
    assert not written and dead == [3]
    assert failed("slo-a") - before["slo-a"] == 2
    assert failed("slo-b") - before["slo-b"] == 1
