"""core.catalog.parse_config_once: pyiceberg's Config reads the same settings as without it,
follows the file when it changes, and parses each version of it once."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from pyiceberg.utils.config import Config

from core.catalog import parse_config_once


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in list(os.environ):
        if name.upper().startswith("PYICEBERG_"):
            monkeypatch.delenv(name)
    folder = tmp_path / "pyiceberg"
    folder.mkdir()
    monkeypatch.setenv("PYICEBERG_HOME", str(folder))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    return folder


def _write(folder: Path, uri: str, mtime_ns: int) -> None:
    path = folder / ".pyiceberg.yaml"
    path.write_text(f"catalog:\n  lake:\n    type: sql\n    uri: {uri}\n")
    os.utime(path, ns=(mtime_ns, mtime_ns))


def _config() -> dict[str, Any]:
    return dict(Config().config)


def test_the_same_settings_parsed_once_per_version_of_the_file(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write(home, "sqlite:///a.db", 1_000_000_000)
    parse_config_once()
    parse_config_once()  # idempotent: wraps once
    wrapped = Config.__dict__["_from_configuration_files"]
    cached = wrapped.__func__
    # What pyiceberg itself reads, without the wrapper (other tests may have installed it).
    Config._from_configuration_files = staticmethod(cached.parse)  # type: ignore[method-assign]
    try:
        before = _config()
    finally:
        Config._from_configuration_files = wrapped  # type: ignore[method-assign]
    parses: list[int] = []
    parse = cached.parse
    monkeypatch.setattr(cached, "parse", lambda: parses.append(1) or parse())

    assert _config() == before
    assert before["catalog"]["lake"]["uri"] == "sqlite:///a.db"
    for _ in range(5):
        assert _config() == before
    assert len(parses) == 1

    # The environment still amends each Config, and never the remembered file's settings.
    monkeypatch.setenv("PYICEBERG_CATALOG__LAKE__URI", "sqlite:///env.db")
    assert _config()["catalog"]["lake"]["uri"] == "sqlite:///env.db"
    monkeypatch.delenv("PYICEBERG_CATALOG__LAKE__URI")
    assert _config() == before

    # A changed file is read again; a removed one is gone.
    _write(home, "sqlite:///bb.db", 2_000_000_000)
    assert _config()["catalog"]["lake"]["uri"] == "sqlite:///bb.db"
    assert len(parses) == 2
    (home / ".pyiceberg.yaml").unlink()
    assert "catalog" not in _config()
