"""Settings: defaults, TOML, IGFLOW_* variables, validation and masking."""

from __future__ import annotations

import copy
import dataclasses
import os
import pickle
import re
import traceback
from pathlib import Path

import pytest

from core.errors import ConfigError
from core.settings import (
    NON_SETTING_VARIABLES,
    KafkaSettings,
    LakeSettings,
    PsiSettings,
    RunSettings,
    ScoreSettings,
    Settings,
    StoreSettings,
    ValidateSettings,
    catalog_uri_for,
    mask,
    setting_variables,
)
from igflow.cli import main


def test_defaults_need_no_environment() -> None:
    s = Settings.load({})
    assert s.kafka.topic == "coherence.signals.v1"
    assert s.kafka.dlq_topic == "coherence.signals.dlq"
    assert s.lake.namespace == "coherence"
    assert s.warehouse.startswith("file:///") and s.warehouse.endswith("/.stack/warehouse")


def test_sealing_is_on_by_default_with_an_explicit_opt_out(tmp_path: Path) -> None:
    assert Settings().seal.enabled is True
    assert Settings.load({}).seal.enabled is True
    assert Settings.load({"IGFLOW_SEAL_ENABLED": "false"}).seal.enabled is False
    toml = tmp_path / "igflow.toml"
    toml.write_text("[seal]\nenabled = false\n")
    assert Settings.load({"IGFLOW_CONFIG": str(toml)}).seal.enabled is False


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


# --- issue 13, point 6: settings refuse what they do not understand ---------------------------

REPO = Path(__file__).resolve().parents[2]
SECRET_DSN = "postgresql://igflow:s3cret@db.example:25432/igflow"


def test_an_unknown_variable_is_an_error_naming_the_nearest_one() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.load({"IGFLOW_LAKE_BATCH_MAX_ROWZ": "7"})
    assert str(caught.value) == (
        "unknown setting IGFLOW_LAKE_BATCH_MAX_ROWZ (did you mean IGFLOW_LAKE_BATCH_MAX_ROWS?)"
    )
    with pytest.raises(
        ConfigError, match=r"IGFLOW_NEO4J_PASWORD \(did you mean IGFLOW_NEO4J_PASSWORD"
    ):
        Settings.load({"IGFLOW_NEO4J_PASWORD": "hunter2"})
    with pytest.raises(ConfigError, match="unknown setting igflow_run_workers"):
        Settings.load({"igflow_run_workers": "2"})  # names are upper-case, as everywhere else


def test_the_variables_other_tools_read_are_accepted() -> None:
    env = dict.fromkeys(NON_SETTING_VARIABLES, "1")
    env.update(
        IGFLOW_STACK_DIR="/tmp/stack",
        IGFLOW_STACK_GRAPH="falkordb",
        IGFLOW_STACK_JAVA_HOME="/usr/lib/jvm/java-17-openjdk-amd64",
        IGFLOW_CONFIG="",
    )
    assert {"IGFLOW_STACK_TIMEOUT", "IGFLOW_KAFKA_CONTROLLER_PORT", "IGFLOW_FUZZ_SEED"} <= set(env)
    assert Settings.load(env).stack_dir == "/tmp/stack"


def test_every_igflow_variable_the_project_names_is_a_setting_or_a_listed_one() -> None:
    """dev/, docker-compose.yml, the Makefile, tests, benchmarks and notebooks may only use
    names that Settings.load accepts, or the Settings of a process they start would refuse."""
    accepted = set(setting_variables()) | set(NON_SETTING_VARIABLES)
    name = re.compile(r"IGFLOW_[A-Z0-9_]*[A-Z0-9]")
    suffixes = {".py", ".yml", ".yaml", ".toml", ".ipynb", ".cfg"}
    found: dict[str, str] = {}
    for folder, dirs, files in os.walk(REPO):
        # Not the project's own: git, the venv, the stack's state, caches, build output.
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in {"build", "dist"}]
        for file in files:
            path = Path(folder, file)
            if path.suffix not in suffixes and file not in {"Makefile", "Dockerfile"}:
                continue
            if path == Path(__file__).resolve():
                continue  # this file spells typos on purpose
            for hit in name.findall(path.read_text(encoding="utf-8", errors="replace")):
                found.setdefault(hit, str(path.relative_to(REPO)))
    assert "IGFLOW_STACK_TIMEOUT" in found  # the scan does see dev/
    unknown = {n: where for n, where in found.items() if n not in accepted}
    assert unknown == {}


@pytest.mark.parametrize(
    ("env", "fragments"),
    [
        (
            {"IGFLOW_LAKE_BATCH_MAX_ROWS": "-3"},
            ["lake.batch_max_rows must be >= 1", "IGFLOW_LAKE_BATCH_MAX_ROWS"],
        ),
        ({"IGFLOW_API_PORT": "70000"}, ["api.port must be <= 65535", "IGFLOW_API_PORT"]),
        ({"IGFLOW_RUN_METRICS_PORT": "-1"}, ["run.metrics_port must be >= 0"]),
        ({"IGFLOW_API_MODE": "staging"}, ["api.mode must be one of", "'production'"]),
        ({"IGFLOW_PSI_MODE": "everything"}, ["psi.mode must be one of"]),
        ({"IGFLOW_RUN_LOG_LEVEL": "LOUD"}, ["run.log_level must be one of"]),
        ({"IGFLOW_STORES_SINKS": "redis,kafka"}, ["stores.sinks must be a comma-separated"]),
        ({"IGFLOW_STORES_GRAPH_COMPAT": "memgraph"}, ["stores.graph_compat must be one of"]),
        ({"IGFLOW_DRIFT_KS_ALPHA": "1.5"}, ["drift.ks_alpha must be < 1"]),
        ({"IGFLOW_SCORE_HEALTHY_AT": "2"}, ["score.healthy_at must be <= 1"]),
        ({"IGFLOW_LAKE_BATCH_MAX_SECONDS": "0"}, ["lake.batch_max_seconds must be > 0"]),
        ({"IGFLOW_LAKE_BATCH_MAX_SECONDS": "inf"}, ["lake.batch_max_seconds must be a finite"]),
        ({"IGFLOW_KAFKA_RETENTION_MS": "-2"}, ["kafka.retention_ms must be >= -1"]),
        ({"IGFLOW_PSI_MAX_BATCH": str(1 << 20)}, ["psi.max_batch must be <= 65536"]),
        ({"IGFLOW_PSI_SERVER_URL": "partner:8765"}, ["psi.server_url must be an http(s) URL"]),
    ],
)
def test_values_are_range_checked_at_load(env: dict[str, str], fragments: list[str]) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.load(env)
    for fragment in fragments:
        assert fragment in str(caught.value)


def test_the_edges_of_the_ranges_are_accepted() -> None:
    s = Settings.load(
        {
            "IGFLOW_API_PORT": "65535",
            "IGFLOW_RUN_METRICS_PORT": "0",
            "IGFLOW_DRIFT_IDLE_FLUSH_SECONDS": "0",
            "IGFLOW_KAFKA_RETENTION_MS": "-1",
            "IGFLOW_RUN_LOG_LEVEL": "warning",
            "IGFLOW_STORES_SINKS": "",
            "IGFLOW_STORES_GRAPH_COMPAT": "falkordb",
        }
    )
    assert (s.api.port, s.run.metrics_port, s.kafka.retention_ms) == (65535, 0, -1)
    assert s.stores.enabled == frozenset()


def test_directly_built_sections_are_checked_too() -> None:
    with pytest.raises(ConfigError, match=r"validate\.max_id_bytes must be >= 1"):
        ValidateSettings(max_id_bytes=0)
    with pytest.raises(ConfigError, match=r"lake\.batch_max_rows must be >= 1, got -3"):
        dataclasses.replace(LakeSettings(), batch_max_rows=-3)
    with pytest.raises(ConfigError, match=r"api\.port must be <= 65535"):
        Settings().with_changes("api", port=70000)
    with pytest.raises(
        ConfigError, match=r"unknown setting run\.wokers \(did you mean run\.workers"
    ):
        Settings().with_changes("run", wokers=2)
    with pytest.raises(ConfigError, match="stack_dir must be str"):
        Settings(stack_dir=3)  # type: ignore[arg-type]
    # A bad value is also a ValueError, as pydantic's and Python's own are.
    with pytest.raises(ValueError, match="window_seconds"):
        ScoreSettings(window_seconds=0)
    assert ValidateSettings(max_id_bytes=7).max_id_bytes == 7


def test_unknown_toml_keys_name_the_nearest_one(tmp_path: Path) -> None:
    toml = tmp_path / "igflow.toml"
    toml.write_text("[lake]\nbatch_max_rowz = 7\n")
    with pytest.raises(ConfigError) as caught:
        Settings.load({}, toml)
    assert str(caught.value) == (
        f"unknown setting lake.batch_max_rowz in {toml} (did you mean lake.batch_max_rows?)"
    )
    toml.write_text("[kafak]\ntopic = 'x'\n")
    with pytest.raises(ConfigError, match=r"unknown setting kafak in .* \(did you mean kafka\?\)"):
        Settings.load({}, toml)
    toml.write_text("kafka = 3\n")
    with pytest.raises(ConfigError, match="setting kafka must be a table"):
        Settings.load({}, toml)


def test_toml_values_are_range_checked_naming_the_key_and_file(tmp_path: Path) -> None:
    toml = tmp_path / "igflow.toml"
    toml.write_text("[api]\nport = 70000\n")
    with pytest.raises(ConfigError) as caught:
        Settings.load({"IGFLOW_CONFIG": str(toml)})
    assert f"api.port must be <= 65535, got 70000 (from api.port in {toml})" in str(caught.value)
    # The environment wins over the file, so a bad file value it replaces is no error.
    assert Settings.load({"IGFLOW_CONFIG": str(toml), "IGFLOW_API_PORT": "8081"}).api.port == 8081


def _everything_shown(settings: Settings) -> str:
    return "\n".join(
        (repr(settings), str(settings), str(settings.as_dict()), repr(settings.stores))
    )


def test_secrets_never_appear_in_repr_str_or_as_dict() -> None:
    env = {
        "IGFLOW_POSTGRES_DSN": SECRET_DSN,
        "IGFLOW_REDIS_URL": "redis://:s3cret@127.0.0.1:26379/0",
        "IGFLOW_NEO4J_PASSWORD": "s3cret",
        "IGFLOW_QUARANTINE_RELEASE_KEY": "s3cret",
        "IGFLOW_API_WEBHOOK_SECRET": "s3cret",
        "IGFLOW_TLS_ENABLED": "false",  # the DSN as given (TLS adds its options to it)
    }
    s = Settings.load(env)
    assert "s3cret" not in _everything_shown(s)
    assert "postgresql://igflow:****@db.example:25432/igflow" in repr(s)
    assert "s3cret" not in repr(StoreSettings(postgres_dsn=SECRET_DSN))
    # The values themselves stay usable by the drivers.
    assert s.stores.postgres_dsn == SECRET_DSN and type(s.stores.postgres_dsn) is str
    assert s.lake.catalog_uri == "postgresql+psycopg2://igflow:s3cret@db.example:25432/igflow"
    assert s.as_dict(masked=False)["stores"]["postgres_dsn"] == SECRET_DSN


@pytest.mark.parametrize(
    "env",
    [
        # another setting is bad: the error does not dump the rest
        {"IGFLOW_POSTGRES_DSN": SECRET_DSN, "IGFLOW_LAKE_BATCH_MAX_ROWS": "-3"},
        # the secret's own variable is misspelt
        {"IGFLOW_POSTGRES_DNS": SECRET_DSN},
        # the catalog cannot follow a DSN that is not a URL
        {"IGFLOW_POSTGRES_DSN": "host=db password=s3cret dbname=igflow"},
        # a secret field of the wrong shape
        {"IGFLOW_PSI_SERVER_URL": "ftp://u:s3cret@partner"},
    ],
)
def test_secrets_never_appear_in_errors_or_tracebacks(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.load(env)
    shown = "".join(traceback.format_exception(caught.value))
    assert "s3cret" not in shown
    assert caught.value.__context__ is None  # no pydantic error, which prints input values


def test_a_directly_built_section_with_a_bad_secret_does_not_show_it() -> None:
    with pytest.raises(ConfigError) as caught:
        PsiSettings(server_url="ftp://u:s3cret@partner")
    assert "s3cret" not in str(caught.value)
    assert caught.value.__context__ is None and caught.value.__cause__ is None


def test_the_catalog_follows_the_postgres_dsn_unless_set_on_its_own(tmp_path: Path) -> None:
    plain = {"IGFLOW_TLS_ENABLED": "false"}  # the URIs as given (TLS adds its options to both)
    default = Settings.load(plain)
    assert default.lake.catalog_uri == "postgresql+psycopg2://igflow:igflow@127.0.0.1:15432/igflow"
    assert default.lake.catalog_uri == catalog_uri_for(default.stores.postgres_dsn)
    moved = Settings.load(
        {**plain, "IGFLOW_POSTGRES_DSN": "postgresql://igflow:igflow@127.0.0.1:25432/igflow"}
    )
    assert moved.lake.catalog_uri == "postgresql+psycopg2://igflow:igflow@127.0.0.1:25432/igflow"
    assert moved.catalog_properties["uri"] == moved.lake.catalog_uri
    own = Settings.load(
        {
            **plain,
            "IGFLOW_POSTGRES_DSN": "postgresql://igflow:igflow@127.0.0.1:25432/igflow",
            "IGFLOW_CATALOG_URI": "sqlite:////tmp/catalog.db",
        }
    )
    assert own.lake.catalog_uri == "sqlite:////tmp/catalog.db"
    toml = tmp_path / "igflow.toml"
    toml.write_text("[stores]\npostgres_dsn = 'postgres://a:b@pg:5433/lake?sslmode=require'\n")
    from_file = Settings.load(plain, toml)
    assert from_file.lake.catalog_uri == "postgresql+psycopg2://a:b@pg:5433/lake?sslmode=require"


def test_settings_and_sections_survive_pickle_and_deepcopy() -> None:
    s = Settings.load({"IGFLOW_POSTGRES_DSN": SECRET_DSN, "IGFLOW_RUN_WORKERS": "3"})
    for value in (s, s.kafka, s.lake, s.stores, s.validate, s.drift, s.psi, s.api, s.run):
        for copied in (pickle.loads(pickle.dumps(value)), copy.deepcopy(value)):
            assert copied == value
            assert hash(copied) == hash(value)
            assert type(copied) is type(value)
    assert s == Settings.load({"IGFLOW_POSTGRES_DSN": SECRET_DSN, "IGFLOW_RUN_WORKERS": "3"})
    assert s != Settings.load({})
    with pytest.raises(AttributeError):
        s.stack_dir = "x"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        s.kafka = KafkaSettings()  # type: ignore[misc]


def test_sections_stay_dataclasses_for_their_callers() -> None:
    names = [f.name for f in dataclasses.fields(ValidateSettings)]
    assert names[:2] == ["max_future_skew_seconds", "max_age_seconds"]
    assert dataclasses.asdict(RunSettings())["workers"] == 1
    changed = Settings().with_changes("lake", batch_max_rows=7)
    assert changed.lake.batch_max_rows == 7 and changed.lake == LakeSettings(batch_max_rows=7)
    assert set(setting_variables()) >= {"IGFLOW_LAKE_BATCH_MAX_ROWS", "IGFLOW_POSTGRES_DSN"}


def test_load_reads_os_environ_and_settings_alone_read_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("IGFLOW_RUN_WORKERS", "5")
    monkeypatch.setenv("IGFLOW_PSI_POLICY_DATA", '{"agreements": []}')
    loaded = Settings.load()
    assert loaded.run.workers == 5
    assert loaded.psi.policy_data == '{"agreements": []}'  # JSON text stays text
    assert Settings().run.workers == 1  # the defaults, whatever the environment
    monkeypatch.setenv("IGFLOW_RUN_WORKRES", "5")
    with pytest.raises(ConfigError, match="did you mean IGFLOW_RUN_WORKERS"):
        Settings.load()
