"""The per-address limit on failed authentications: its buckets and its address key."""

from __future__ import annotations

from api.auth_limit import client_key
from api.ratelimit import FailureBuckets


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_an_address_may_fail_burst_times_then_at_the_rate() -> None:
    clock = Clock()
    buckets = FailureBuckets(rate=2.0, burst=3, clock=clock)
    assert buckets.wait("a") == 0.0
    assert [buckets.fail("a") for _ in range(3)] == [False, False, True]  # True: the last one
    assert buckets.wait("a") == 0.5  # one more failure allowed half a second on
    assert buckets.wait("b") == 0.0  # another address is untouched
    clock.now = 0.5
    assert buckets.wait("a") == 0.0
    assert buckets.fail("a") is True
    assert buckets.wait("a") == 0.5
    clock.now = 10.0  # refilled: the address is forgotten
    assert buckets.wait("a") == 0.0 and len(buckets) == 0


def test_waiting_takes_nothing_and_failures_beyond_the_limit_do_not_go_below_zero() -> None:
    clock = Clock()
    buckets = FailureBuckets(rate=1.0, burst=1, clock=clock)
    buckets.fail("a")
    for _ in range(100):
        buckets.fail("a")  # e.g. known credentials that then failed a signature check
        assert buckets.wait("a") == 1.0
    clock.now = 1.0
    assert buckets.wait("a") == 0.0


def test_a_reservation_is_a_failure_unless_refunded() -> None:
    clock = Clock()
    buckets = FailureBuckets(rate=1.0, burst=2, clock=clock)
    assert buckets.take("a") is None  # no failure yet: nothing to reserve from
    buckets.fail("a")
    assert buckets.take("a") == 0.0  # the last one, reserved by a request in flight
    assert buckets.take("a") == 1.0  # a concurrent request waits, it does not slip through
    buckets.refund("a")  # the first request passed after all
    assert buckets.take("a") == 0.0
    clock.now = 0.5
    assert buckets.take("a") == 0.5  # half a failure refilled, none to reserve
    clock.now = 100.0
    assert buckets.take("a") is None and len(buckets) == 0  # refilled, forgotten


def test_the_buckets_hold_at_most_max_keys_addresses() -> None:
    buckets = FailureBuckets(rate=1.0, burst=1, max_keys=2, clock=Clock())
    for key in ("a", "b", "c"):
        buckets.fail(key)
    assert len(buckets) == 2
    assert buckets.wait("a") == 0.0  # the oldest went first
    assert buckets.wait("c") > 0


def test_ipv6_addresses_count_by_their_64_block() -> None:
    def key(host: str) -> str | None:
        return client_key({"client": (host, 1234)})

    assert key("192.0.2.7") == "192.0.2.7"
    assert key("2001:db8:1:2:aaaa::1") == key("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert key("2001:db8:1:3::1") != key("2001:db8:1:2::1")
    assert key("fe80::1%eth0") == "fe80::/64"
    assert client_key({"client": None}) is None
