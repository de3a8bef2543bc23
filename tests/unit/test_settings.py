"""Settings: defaults, TOML, IGFLOW_* variables, validation and masking."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import ConfigError
from core.settings import Settings, mask
from igflow.cli import main


def test_defaults_need_no_environment() -> None:
    s = Settings.load({})
    assert s.kafka.topic == "coherence.signals.v1"
    assert s.kafka.dlq_topic == "coherence.signals.dlq"
    assert s.lake.namespace == "coherence"
    assert s.warehouse.startswith("file:///") and s.warehouse.endswith("/.stack/warehouse")


def test_environment_overrides_toml_which_overrides_defaults(tmp_path: Path) -> None:
    toml = tmp_path / "igflow.toml"
    toml.write_text('[kafka]\ntopic = "from-toml"\nbatch_size = 10\n[run]\nworkers = 3\n')
    env = {
        "IGFLOW_CONFIG": str(toml),
        "IGFLOW_KAFKA_TOPIC": "from-env",
        "IGFLOW_KAFKA_BOOTSTRAP": "kafka:9092",
        "IGFLOW_RUN_BOUNDED": "false",
        "IGFLOW_LAKE_BATCH_MAX_SECONDS": "0.5",
    }
    s = Settings.load(env)
    assert s.kafka.topic == "from-env"
    assert s.kafka.batch_size == 10
    assert s.kafka.bootstrap == "kafka:9092"
    assert s.run.workers == 3
    assert s.run.bounded is False
    assert s.lake.batch_max_seconds == 0.5


def test_settings_are_frozen() -> None:
    s = Settings.load({})
    with pytest.raises(AttributeError):
        s.kafka.topic = "x"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"IGFLOW_RUN_WORKERS": "many"}, "run.workers must be int"),
        ({"IGFLOW_RUN_BOUNDED": "perhaps"}, "must be a boolean"),
        ({"IGFLOW_CONFIG": "/nonexistent/igflow.toml"}, "cannot read settings file"),
    ],
)
def test_bad_settings_fail_with_a_clear_error(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        Settings.load(env)


def test_unknown_toml_keys_are_rejected(tmp_path: Path) -> None:
    toml = tmp_path / "igflow.toml"
    toml.write_text("[kafka]\ntopik = 'typo'\n")
    with pytest.raises(ConfigError, match="topik"):
        Settings.load({}, toml)


def test_secrets_are_masked() -> None:
    assert (
        mask("postgresql://igflow:s3cret@db:5432/igflow")
        == "postgresql://igflow:****@db:5432/igflow"
    )
    assert mask("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert mask("hunter2") == "****"
    shown = Settings.load({"IGFLOW_NEO4J_PASSWORD": "hunter2"}).as_dict()
    assert "hunter2" not in str(shown)
    assert "s3cret" not in str(
        Settings.load({"IGFLOW_POSTGRES_DSN": "postgresql://u:s3cret@h/db"}).as_dict()
    )


def test_config_command_prints_masked_settings(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    assert '"topic": "coherence.signals.v1"' in out
    assert "igflow:igflow@" not in out


def test_help_lists_the_subcommands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in ("run", "produce", "setup", "schemas", "lake", "config", "stack"):
        assert command in out
