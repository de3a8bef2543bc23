"""Integration tests of the local service stack (``python -m dev``).

The session fixture starts whatever part of the stack is not running yet and stops only
that part again at the end, so a stack brought up by ``make`` is left as it was.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dev import stack
from dev.config import StackConfig
from dev.errors import StackError
from dev.services import BY_NAME, SERVICES, Port, Service

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def cfg() -> Iterator[StackConfig]:
    config = StackConfig.from_env(os.environ)
    started_here = [s for s in SERVICES if stack.our_pid(config, s) is None]
    stack.start(config, SERVICES, report=lambda _line: None)
    yield config
    stack.stop(config, started_here, report=lambda _line: None)


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_status_reports_all_ready(cfg: StackConfig) -> None:
    rows = stack.status(cfg, SERVICES)
    assert [(r.name, r.state) for r in rows] == [(s.name, "ready") for s in SERVICES]
    assert all(r.pid is not None for r in rows)


def test_start_again_is_a_noop(cfg: StackConfig) -> None:
    before = {s.name: stack.our_pid(cfg, s) for s in SERVICES}
    lines: list[str] = []
    began = time.monotonic()
    stack.start(cfg, SERVICES, report=lines.append)
    assert time.monotonic() - began < 10
    assert {s.name: stack.our_pid(cfg, s) for s in SERVICES} == before
    assert len(lines) == len(SERVICES)
    assert all("already running" in line for line in lines)


@pytest.mark.parametrize(
    ("service", "field", "env_var"),
    [
        ("redis", "redis_port", "IGFLOW_REDIS_URL"),
        ("kafka", "kafka_port", "IGFLOW_KAFKA_BOOTSTRAP"),
    ],
)
def test_port_taken_error_names_service_port_and_env_var(
    cfg: StackConfig, tmp_path: Path, taken_port: int, service: str, field: str, env_var: str
) -> None:
    overrides: dict[str, Any] = {"state_dir": tmp_path, field: taken_port}
    other = dataclasses.replace(cfg, **overrides)
    with pytest.raises(StackError) as err:
        stack.start(other, [BY_NAME[service]], report=lambda _line: None)
    message = str(err.value)
    assert message.startswith(f"{service}: port {taken_port} is already in use")
    assert env_var in message
    assert [r.state for r in stack.status(other, [BY_NAME[service]])] == ["port taken"]


class _Crashing(Service):
    """A fake service that writes some output and exits at once."""

    name = "crashing"

    def ports(self, cfg: StackConfig) -> list[Port]:
        return []

    def command(self, cfg: StackConfig) -> list[str]:
        return ["sh", "-c", "for i in $(seq 1 25); do echo line $i; done; exit 3"]

    def is_ready(self, cfg: StackConfig) -> bool:
        return False


def test_exit_during_start_up_reports_log_tail(cfg: StackConfig, tmp_path: Path) -> None:
    other = dataclasses.replace(cfg, state_dir=tmp_path)
    with pytest.raises(StackError) as err:
        stack.start(other, [_Crashing()], report=lambda _line: None)
    message = str(err.value)
    assert message.startswith("crashing exited during start-up with exit code 3")
    assert "line 25" in message
    assert "line 6\n" in message
    assert "line 5\n" not in message
    assert not (tmp_path / "run" / "crashing.pid").exists()
