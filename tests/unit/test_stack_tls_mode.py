"""A service of the local stack already running in the other TLS mode is refused with a message
that says to restart (TLS became the default: a stack started plaintext before would otherwise
time out in a TLS readiness probe)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from dev import stack
from dev.config import StackConfig
from dev.errors import StackError
from dev.service import Port, Service


class _Sleeper(Service):
    """A fake service: a process that sleeps in its working directory, ready at once."""

    name = "sleeper"

    def ports(self, cfg: StackConfig) -> list[Port]:
        return []

    def command(self, cfg: StackConfig) -> list[str]:
        return ["sleep", "60"]

    def is_ready(self, cfg: StackConfig) -> bool:
        return True


def test_a_service_running_in_the_other_tls_mode_asks_for_a_restart(tmp_path: Path) -> None:
    plain = dataclasses.replace(StackConfig.from_env({}), state_dir=tmp_path, tls=False)
    secure = dataclasses.replace(plain, tls=True)
    svc = _Sleeper()
    lines: list[str] = []
    stack.start(plain, [svc], report=lines.append)
    try:
        assert stack.running_tls_mode(plain, svc) == "off"
        stack.start(plain, [svc], report=lines.append)
        assert "already running" in lines[-1]
        with pytest.raises(StackError) as err:
            stack.start(secure, [svc], report=lines.append)
        message = str(err.value)
        assert "sleeper" in message and "running with TLS off" in message
        assert "IGFLOW_TLS_ENABLED asks for TLS on" in message
        assert "python -m dev stop && python -m dev start" in message
        assert "IGFLOW_TLS_ENABLED=false is the plaintext opt-out" in message
    finally:
        stack.stop(plain, [svc], report=lines.append)
    assert not stack.tls_mode_file(plain, svc).exists()
    # Restarted in the wanted mode, it is recorded so.
    stack.start(secure, [svc], report=lines.append)
    try:
        assert stack.running_tls_mode(secure, svc) == "on"
    finally:
        stack.stop(secure, [svc], report=lines.append)


def test_a_service_started_before_the_mode_was_recorded_ran_plaintext(tmp_path: Path) -> None:
    cfg = dataclasses.replace(StackConfig.from_env({}), state_dir=tmp_path, tls=True)
    svc = _Sleeper()
    stack.start(cfg, [svc], report=lambda _line: None)
    try:
        stack.tls_mode_file(cfg, svc).unlink()  # as a stack started by an earlier release
        with pytest.raises(StackError, match="running with TLS off"):
            stack.start(cfg, [svc], report=lambda _line: None)
    finally:
        stack.stop(cfg, [svc], report=lambda _line: None)
