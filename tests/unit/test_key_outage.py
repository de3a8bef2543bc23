"""TenantKeys when its Postgres is unreachable: keys read less than the rotation grace ago keep
sealing; older ones, or none, raise "key store unavailable" (tenancy/keys.py)."""

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
        self.cipher = FieldCipher(os.urandom(32), 1)

    def _load(self, tenant_id: str, scope: str) -> list[tuple[datetime, FieldCipher]]:
        if self.down:
            msg = "key store unavailable: connection refused"
            raise ConfigError(msg)
        self.loads += 1
        return [(datetime(1970, 1, 1, tzinfo=UTC), self.cipher)]


def _seal(keys: TenantKeys) -> bytes:
    return keys.encrypt_field("t1", "dlq", "value", "0/1", TS, b"secret")


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


def test_once_the_store_is_back_the_keys_are_read_again() -> None:
    clock = _Clock()
    keys = _FlakyStore(clock)
    _seal(keys)
    keys.down = True
    clock.now = 40.0
    _seal(keys)  # served from the cache, which keeps its load time
    keys.down = False
    _seal(keys)
    assert keys.loads == 2
    keys.down = True
    clock.now = 95.0  # 55 s after the second read: still inside the grace
    _seal(keys)
