"""Where the local stack keeps its state when IGFLOW_STACK_DIR is unset: the checkout's
``.stack`` in a checkout, the current directory's ``.stack`` when installed from a wheel."""

from __future__ import annotations

from pathlib import Path

import pytest

from dev import config
from dev.config import StackConfig

REPO = Path(__file__).resolve().parents[2]


def test_in_the_checkout_the_state_is_the_checkouts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert config.REPO_ROOT == REPO
    assert StackConfig.from_env({}).state_dir == REPO / ".stack"


def test_installed_the_state_is_the_current_directorys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(config, "REPO_ROOT", None)
    cfg = StackConfig.from_env({})
    assert cfg.state_dir == tmp_path.resolve() / ".stack"
    assert cfg.repo_root is None


def test_igflow_stack_dir_wins(tmp_path: Path) -> None:
    cfg = StackConfig.from_env({"IGFLOW_STACK_DIR": str(tmp_path / "s")})
    assert cfg.state_dir == tmp_path.resolve() / "s"
