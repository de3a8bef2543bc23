"""TenantKeys when its Postgres is unreachable: keys read less than the rotation grace ago keep
sealing; older ones, or none, raise "key store unavailable" (tenancy/keys.py). And past the
refresh, a tenant's keys are read again only when they changed, which one read of
``key_epoch`` a refresh tells for every tenant."""

from __future__ import annotations

import os
from datetime import UTC, datetime

import pytest

from core.envelope import FieldCipher
from core.errors import ConfigError
from tenancy.keys import TenantKeys

TS = datetime(2026, 1, 1, tzinfo=UTC)


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class _FlakyStore(TenantKeys):
    """TenantKeys whose table reads answer from memory until the store 'goes down'."""

    def __init__(self, clock: _Clock) -> None:
        super().__init__(
            "postgresql://unused",
            kms=None,  # type: ignore[arg-type]
            refresh_seconds=30,
            rotation_grace_seconds=60,
            clock=clock,
        )
        self.down = False
        self.loads = 0
        self.epoch = 7
        self.changes: dict[str, int] = {}  # tenant_key_epochs
        self.epoch_reads = 0
        self.cipher = FieldCipher(os.urandom(32), 1)

    def _up(self) -> None:
        if self.down:
            msg = "key store unavailable: connection refused"
            raise ConfigError(msg)

    def _load(self, tenant_id: str, scope: str) -> list[tuple[datetime, FieldCipher]]:
        self._up()
        self.loads += 1
        return [(datetime(1970, 1, 1, tzinfo=UTC), self.cipher)]

    def _read_epoch(self, since: int | None) -> tuple[int, list[tuple[str, int]]]:
        self._up()
        self.epoch_reads += 1
        if since is None:
            return self.epoch, []
        return self.epoch, [(t, at) for t, at in self.changes.items() if at > since]

    def change(self, tenant: str) -> None:
        """A key of ``tenant`` changed (``""``: a TRUNCATE, every tenant), as the triggers say."""
        self.epoch += 1
        self.changes[tenant] = self.epoch


def _seal(keys: TenantKeys, tenant: str = "t1", scope: str = "dlq") -> bytes:
    return keys.encrypt_field(tenant, scope, "value", "0/1", TS, b"secret")


def test_an_outage_inside_the_grace_keeps_the_keys_read_before_it() -> None:
    clock = _Clock()
    keys = _FlakyStore(clock)
    first = _seal(keys)
    keys.down = True
    clock.now = 45.0  # past the refresh (30 s), inside the grace (60 s)
    assert _seal(keys) == first  # the same key, so the same (deterministic) ciphertext
    assert keys.decrypt_field("t1", "dlq", "value", "0/1", first) == b"secret"
    assert keys.loads == 1


def test_an_outage_past_the_grace_stops_the_seal() -> None:
    clock = _Clock()
    keys = _FlakyStore(clock)
    _seal(keys)
    keys.down = True
    clock.now = 60.0
    with pytest.raises(ConfigError, match="key store unavailable"):
        _seal(keys)


def test_keys_never_read_are_not_invented_during_an_outage() -> None:
    keys = _FlakyStore(_Clock())
    keys.down = True
    with pytest.raises(ConfigError, match="key store unavailable"):
        _seal(keys)


def test_once_the_store_is_back_the_keys_are_checked_again() -> None:
    clock = _Clock()
    keys = _FlakyStore(clock)
    _seal(keys)
    keys.down = True
    clock.now = 40.0
    _seal(keys)  # served from the cache, which keeps its load time
    keys.down = False
    _seal(keys)
    assert (keys.loads, keys.epoch_reads) == (1, 2)  # found unchanged: not read again
    keys.down = True
    clock.now = 95.0  # 55 s after the second read: still inside the grace
    _seal(keys)


KEYS = [(f"t{i}", scope) for i in range(5) for scope in ("dlq", "lake.signals", "redis")]


def test_unchanged_keys_are_checked_with_one_read_a_refresh_not_read_again() -> None:
    clock = _Clock()
    keys = _FlakyStore(clock)
    first = [_seal(keys, *k) for k in KEYS]
    assert (keys.loads, keys.epoch_reads) == (len(KEYS), 1)
    for now in (31.0, 62.0, 93.0):  # each past a refresh
        clock.now = now
        assert [_seal(keys, *k) for k in KEYS] == first
    assert (keys.loads, keys.epoch_reads) == (len(KEYS), 4)


def test_a_tenants_change_reads_its_keys_again_and_no_one_elses() -> None:
    clock = _Clock()
    keys = _FlakyStore(clock)
    for k in KEYS:
        _seal(keys, *k)
    keys.change("t1")  # a rotation of t1
    clock.now = 20.0
    _seal(keys, "t1")
    assert keys.loads == len(KEYS)  # inside the refresh: nothing is asked
    clock.now = 31.0
    for k in KEYS:
        _seal(keys, *k)
    assert (keys.loads, keys.epoch_reads) == (len(KEYS) + 3, 2)  # t1's three scopes
    keys.change("t2")
    keys.change("t1")
    clock.now = 62.0
    for k in KEYS:
        _seal(keys, *k)
    assert (keys.loads, keys.epoch_reads) == (len(KEYS) + 9, 3)
    clock.now = 93.0
    for k in KEYS:
        _seal(keys, *k)
    assert (keys.loads, keys.epoch_reads) == (len(KEYS) + 9, 4)


def test_a_truncate_reads_every_key_again() -> None:
    clock = _Clock()
    keys = _FlakyStore(clock)
    for k in KEYS:
        _seal(keys, *k)
    keys.change("")
    clock.now = 31.0
    for k in KEYS:
        _seal(keys, *k)
    assert (keys.loads, keys.epoch_reads) == (2 * len(KEYS), 2)


def test_keys_stamped_before_a_refresh_are_read_again() -> None:
    # A load in flight across refresh() puts back keys stamped with an epoch from before it;
    # the changes recorded start again at the first epoch read after it, so those keys cannot
    # be judged unchanged.
    clock = _Clock()
    keys = _FlakyStore(clock)
    _seal(keys)
    stale = keys._cache[("t1", "dlq")]
    keys.refresh()
    keys.change("t1")
    keys._cache[("t1", "dlq")] = stale
    clock.now = 31.0
    _seal(keys)
    assert keys.loads == 2


def test_refresh_forgets_the_keys_and_the_epoch() -> None:
    keys = _FlakyStore(_Clock())
    _seal(keys)
    keys.refresh()
    _seal(keys)
    assert (keys.loads, keys.epoch_reads) == (2, 2)
