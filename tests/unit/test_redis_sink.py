"""The Redis writer without a server: error classification, retention TTLs, the retry hand-off."""

from __future__ import annotations

import socket
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest
import redis.exceptions as rx

from core.records import Decoded, PolicyTags, Provenance, ScoreChange, Signal, Tagged
from core.retry import RetryPolicy, write_with_retry
from sinks.redis import RedisWriter, retention_seconds, transient

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _change(tenant: str = "t", seq: int = 1, at: datetime = T0) -> ScoreChange:
    return ScoreChange(
        tenant,
        0.8,
        "HEALTHY",
        at,
        1,
        1.0,
        "prov",
        Provenance("topic", 0, seq, 1, "0" * 64),
        seq=seq,
    )


def _signal(offset: int = 0) -> Tagged:
    sig = Signal("t", f"s-{offset}", "latency", 0.5, None, "src", T0)
    decoded = Decoded(sig, Provenance("topic", 0, offset, 1, "0" * 64))
    return Tagged(decoded, PolicyTags("b", "standard-365d", "l", "US"), "p" * 64, "prov")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.mark.parametrize(
    ("tag", "seconds"),
    [
        ("standard-365d", 365 * 86400.0),
        ("standard-90d", 90 * 86400.0),
        ("legal-hold-3650d", 3650 * 86400.0),
        ("standard-0d", 7.0),
        ("standard", 7.0),
        ("90d-then-review", 7.0),
        ("", 7.0),
    ],
)
def test_retention_tags_give_days_or_the_default(tag: str, seconds: float) -> None:
    assert retention_seconds(tag, 7.0) == seconds


@pytest.mark.parametrize(
    "exc",
    [
        rx.ConnectionError("refused"),
        rx.TimeoutError("read"),
        rx.BusyLoadingError("LOADING"),
        rx.TryAgainError("TRYAGAIN"),
        rx.ReadOnlyError("READONLY"),
        rx.ResponseError("BUSY Redis is busy running a script"),
        ConnectionResetError(),
        TimeoutError(),
    ],
)
def test_outages_are_transient(exc: BaseException) -> None:
    assert transient(exc)


@pytest.mark.parametrize(
    "exc",
    [
        rx.AuthenticationError("WRONGPASS"),
        rx.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"),
        rx.DataError("bad"),
        ValueError("bug"),
    ],
)
def test_mistakes_are_not_transient(exc: BaseException) -> None:
    assert not transient(exc)


def test_a_batch_that_keeps_failing_is_dead_lettered_after_the_last_attempt() -> None:
    writer = RedisWriter(
        f"redis://127.0.0.1:{_closed_port()}/0", stream_max=10, ttl_seconds=60, connect_timeout=1
    )
    calls: list[int] = []
    dead: list[tuple[Sequence[ScoreChange | Tagged], BaseException]] = []

    def write(batch: Sequence[ScoreChange | Tagged]) -> None:
        calls.append(len(batch))
        writer.write(batch)

    batch: list[ScoreChange | Tagged] = [_change(), _signal()]
    try:
        written = write_with_retry(
            "redis",
            batch,
            write,
            transient=transient,
            dead_letter=lambda b, exc: dead.append((b, exc)),
            policy=RetryPolicy(attempts=3, base_seconds=0.01, cap_seconds=0.01),
            sleep=lambda _s: None,
        )
    finally:
        writer.close()
    assert not written
    assert calls == [2, 2, 2]
    assert len(dead) == 1
    assert list(dead[0][0]) == batch
    assert isinstance(dead[0][1], rx.ConnectionError)


def test_a_naive_time_is_refused_before_anything_is_sent() -> None:
    writer = RedisWriter(f"redis://127.0.0.1:{_closed_port()}/0", stream_max=10, ttl_seconds=60)
    try:
        with pytest.raises(ValueError, match="naive datetime"):
            writer.write([_change(at=datetime(2026, 1, 1))])  # noqa: DTZ001
    finally:
        writer.close()


@pytest.mark.parametrize(("stream_max", "ttl"), [(0, 60.0), (10, 0.0), (10, float("nan"))])
def test_nonsense_limits_are_refused(stream_max: int, ttl: float) -> None:
    with pytest.raises(ValueError, match="must be"):
        RedisWriter("redis://127.0.0.1:1/0", stream_max=stream_max, ttl_seconds=ttl)
