"""One frozen settings object, built once at the entry point, that refuses what it does not know.

Sources, later ones winning: built-in defaults, an optional TOML file (``IGFLOW_CONFIG`` or
``--config``), then ``IGFLOW_*`` environment variables. Nothing below the entry point reads the
environment: operators, sinks and the CLI's subcommands receive a :class:`Settings` value.

The sections are pydantic dataclasses and :class:`Settings` is a pydantic-settings
``BaseSettings``: every field is type- and range-checked whenever a value is built, by
:meth:`Settings.load`, by :meth:`Settings.with_changes`, by ``dataclasses.replace`` or by a
direct ``ValidateSettings(max_id_bytes=...)``. A bad value raises :class:`SettingError` (a
:class:`~core.errors.ConfigError`, and a ``ValueError``) naming the setting, where it came from
and the rule it breaks, never a secret's value.

Environment variables (the same names ``docker-compose.yml`` and ``dev/`` use):

=============================  ==============================================================
``IGFLOW_KAFKA_BOOTSTRAP``     Kafka bootstrap servers
``IGFLOW_SCHEMA_REGISTRY_URL`` Confluent-compatible schema registry
``IGFLOW_POSTGRES_DSN``        Postgres (read model, tenant registry)
``IGFLOW_REDIS_URL``           Redis hot store
``IGFLOW_NEO4J_URI``           Bolt graph server (``IGFLOW_NEO4J_USER``/``_PASSWORD``)
``IGFLOW_CATALOG_URI``         SQLAlchemy URI of the Iceberg SQL catalog (Postgres or SQLite);
                               unset, it follows ``IGFLOW_POSTGRES_DSN`` (same server, with the
                               ``postgresql+psycopg2`` driver)
``IGFLOW_WAREHOUSE``           Iceberg warehouse location
``IGFLOW_STACK_DIR``           where the local stack keeps data and logs (``.stack``)
``IGFLOW_TLS_ENABLED``         TLS on every hop, on by default (``tls`` section; ``false`` is the
                               plaintext opt-out): every endpoint in its verified
                               TLS form, the stack's CA unless ``IGFLOW_TLS_CA_FILE``
=============================  ==============================================================

and the ``IGFLOW_<SECTION>_<FIELD>`` form for every other field (``IGFLOW_LAKE_BATCH_MAX_ROWS``).
Any other ``IGFLOW_*`` variable is an error naming the nearest valid one (difflib), except the
few that other parts of the project read, listed in :data:`NON_SETTING_VARIABLES`. Unknown keys
of the TOML file are errors too.

Secrets (DSN and URL passwords, the Neo4j password, the release key, the webhook secret) are
masked in ``repr``/``str``, in :meth:`Settings.as_dict` and in error messages; the attributes
themselves stay plain ``str`` values for the drivers.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import os
import ssl
import tomllib
import warnings
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from pydantic import AfterValidator, ConfigDict, Field, ValidationError
from pydantic.dataclasses import dataclass as pydantic_dataclass
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from core import tls as tls_forms
from core.arrow_pool import POOLS
from core.errors import ConfigError
from core.resources import policies_dir

__all__ = [
    "NON_SETTING_VARIABLES",
    "ApiSettings",
    "DedupeSettings",
    "DriftSettings",
    "EvidenceSettings",
    "KafkaSettings",
    "LakeSettings",
    "ProbeSettings",
    "PsiSettings",
    "QuarantineSettings",
    "ResidencySettings",
    "RetentionSettings",
    "RunSettings",
    "ScoreSettings",
    "SealSettings",
    "SettingError",
    "Settings",
    "SourceSettings",
    "StoreSettings",
    "SwitchSettings",
    "TenancySettings",
    "TlsSettings",
    "TracingSettings",
    "ValidateSettings",
    "catalog_uri_for",
    "mask",
    "setting_variables",
]


class SettingError(ConfigError, ValueError):
    """A setting is unknown, of the wrong type or out of its range.

    A :class:`~core.errors.ConfigError` (fatal at start-up) and, like pydantic's own validation
    errors, a ``ValueError`` (what a bad argument raises in Python).
    """


#: ``IGFLOW_*`` variables that are not application settings but that other parts of the project
#: read: :meth:`Settings.load` accepts them (and ignores them), every other unknown ``IGFLOW_*``
#: variable is an error. Add a name here when a tool starts reading one (a unit test checks that
#: every ``IGFLOW_*`` name in the project's code and configuration is a setting or listed here).
NON_SETTING_VARIABLES: Mapping[str, str] = {
    # dev/config.py: the local service stack (python -m dev, make stack-up)
    "IGFLOW_STACK_TIMEOUT": "dev/: per-service start timeout, seconds",
    "IGFLOW_STACK_GRAPH": "dev/: graph server of the local stack (neo4j or falkordb)",
    "IGFLOW_STACK_JAVA_HOME": "dev/: the JDK that runs Kafka and Neo4j",
    "IGFLOW_KAFKA_CONTROLLER_PORT": "dev/: port of the KRaft controller",
    "IGFLOW_FALKORDB_PORT": "dev/: port of the FalkorDB stand-in",
    "IGFLOW_PROMETHEUS_PORT": (
        "dev/, docker-compose.yml, igflow slo, igflow serve (dashboards): port of Prometheus"
    ),
    # docker-compose.yml: host ports the services are published on
    "IGFLOW_KAFKA_PORT": "docker-compose.yml: published Kafka port",
    "IGFLOW_SCHEMA_REGISTRY_PORT": "docker-compose.yml: published schema registry port",
    "IGFLOW_POSTGRES_PORT": "docker-compose.yml: published Postgres port",
    "IGFLOW_REDIS_PORT": "docker-compose.yml: published Redis port",
    "IGFLOW_NEO4J_BOLT_PORT": "docker-compose.yml: published Neo4j Bolt port",
    "IGFLOW_GRAFANA_PORT": "docker-compose.yml: published Grafana port",
    # tests and notebooks
    "IGFLOW_FUZZ_SEED": "tests/integration: seed of the fuzz tests",
    "IGFLOW_FUZZ_COUNT": "tests/integration/test_hostile_kafka.py: records of the fuzz run",
    "IGFLOW_FUZZ_CASES": "tests/integration/test_api_fuzz.py: requests of the fuzz run",
    "IGFLOW_NOTEBOOK_PLOT": "notebooks/inspect_signals.ipynb: where the plot is written",
    "IGFLOW_DASHBOARD_SCREENSHOTS": (
        "tests/integration/test_dashboard.py: a folder to keep the pages' screenshots in"
    ),
}

#: The settings file; read by :meth:`Settings.load` itself.
_CONFIG_VARIABLE = "IGFLOW_CONFIG"

#: Fields whose values are masked wherever settings are shown (a URL or DSN keeps all but its
#: password; anything else is shown as ``****``).
_SECRET_FIELDS = frozenset(
    {
        "postgres_dsn",
        "redis_url",
        "catalog_uri",
        "neo4j_uri",
        "neo4j_password",
        "schema_registry_url",
        "server_url",
        "release_key",
        "webhook_secret",
    }
)


# --- value rules ------------------------------------------------------------------------------

#: How many of something: at least one.
Count = Annotated[int, Field(ge=1)]
#: How many of something, where none is meaningful.
CountOrZero = Annotated[int, Field(ge=0)]
#: A TCP port; 0 means "none" (metrics) or "any free one" (the API).
Port = Annotated[int, Field(ge=0, le=65535)]
#: A duration that must pass, in the unit its field names (``_seconds``, ``_ms``); finite, as
#: every float here (``allow_inf_nan`` is off).
Duration = Annotated[float, Field(gt=0)]
#: A duration where 0 means "at once" or "off".
DurationOrZero = Annotated[float, Field(ge=0)]
#: A rate (per second): positive.
Rate = Annotated[float, Field(gt=0)]
#: A quantity where 0 is meaningful (a threshold every value passes).
NonNegative = Annotated[float, Field(ge=0)]
#: A share of a whole, 0..1.
Share = Annotated[float, Field(ge=0, le=1)]
#: A probability strictly between 0 and 1 (a significance level).
Probability = Annotated[float, Field(gt=0, lt=1)]
#: Kafka ``retention.ms``: -1 for ever, else milliseconds.
RetentionMs = Annotated[int, Field(ge=-1)]
#: Selectors in one PSI request: ``psi.messages.MAX_BATCH`` (core cannot import psi).
PsiBatch = Annotated[int, Field(ge=1, le=1 << 16)]


def _one_of(*choices: str, fold: bool = False) -> AfterValidator:
    """A string that must be one of ``choices`` (compared upper-cased when ``fold``)."""
    shown = ", ".join(repr(c) for c in choices)

    def check(value: str) -> str:
        if (value.upper() if fold else value) not in choices:
            msg = f"must be one of {shown}"
            raise ValueError(msg)
        return value

    return AfterValidator(check)


def _each_one_of(*choices: str) -> AfterValidator:
    """A comma-separated list whose every item is one of ``choices`` (empty: none)."""
    shown = ", ".join(repr(c) for c in choices)

    def check(value: str) -> str:
        if any(item.strip() not in choices for item in value.split(",") if item.strip()):
            msg = f"must be a comma-separated list of {shown}"
            raise ValueError(msg)
        return value

    return AfterValidator(check)


def _check_http_url(value: str) -> str:
    if value:
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            msg = "must be an http(s) URL or empty"
            raise ValueError(msg)
    return value


HttpUrlOrEmpty = Annotated[str, AfterValidator(_check_http_url)]
PsiMode = Annotated[str, _one_of("full_intersection", "intersection_cardinality")]
ArrowPool = Annotated[str, _one_of(*POOLS)]
ScoreCloseOn = Annotated[str, _one_of("signal", "horizon")]
ApiMode = Annotated[str, _one_of("development", "production")]
LogLevel = Annotated[str, _one_of("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL", fold=True)]
#: sinks/graph.py's COMPAT.
GraphCompat = Annotated[str, _one_of("", "falkordb")]
KmsKind = Annotated[str, _one_of("local", "aws")]
#: librdkafka's ``security.protocol`` values this project speaks (no SASL).
KafkaSecurity = Annotated[str, _one_of("PLAINTEXT", "SSL")]
#: flows/coherence.py's SERVING.
StoreNames = Annotated[str, _each_one_of("redis", "graph", "postgres")]

#: Every section: unknown fields refused, no inf or NaN, values checked when built.
_SECTION_CONFIG = ConfigDict(extra="forbid", allow_inf_nan=False)

_S = TypeVar("_S")


def _refuse_invalid(cls: type[_S]) -> type[_S]:
    """Make a section raise :class:`SettingError` (not pydantic's error, which would show the
    value of a secret) when built with a bad value, and mask its secrets in ``repr``."""
    init = cls.__init__

    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        try:
            init(self, *args, **kwargs)
        except ValidationError as exc:
            section = _SECTION_NAMES.get(type(self), type(self).__name__)
            problem = _describe(exc, (section,), {})
        else:
            return
        # Raised outside the handler: no pydantic error (which shows values) in its context.
        raise SettingError(problem)

    def __repr__(self: Any) -> str:
        shown = ", ".join(
            f"{f.name}={_shown(f.name, getattr(self, f.name))!r}" for f in dataclasses.fields(self)
        )
        return f"{type(self).__qualname__}({shown})"

    cls.__init__ = __init__  # type: ignore[method-assign]
    cls.__repr__ = __repr__  # type: ignore[method-assign]
    return cls


# --- sections ---------------------------------------------------------------------------------


@_refuse_invalid
@pydantic_dataclass(frozen=True, slots=True, config=_SECTION_CONFIG)
class KafkaSettings:
    """Where signals come from and where rejects go."""

    bootstrap: str = "127.0.0.1:19092"
    schema_registry_url: str = "http://127.0.0.1:18081"
    topic: str = "coherence.signals.v1"
    dlq_topic: str = "coherence.signals.dlq"
    #: Subject of the signal value schema (TopicNameStrategy).
    subject: str = "coherence.signals.v1-value"
    #: Messages fetched per source poll.
    batch_size: Count = 1000
    #: Partitions of the topics ``igflow setup`` creates (the unit of parallelism).
    partitions: Count = 4
    #: Replication factor of the topics ``igflow setup`` creates (1 on a one-node broker).
    replication_factor: Count = 1
    #: Largest signal record (key, value and headers) the signal topic accepts: its
    #: ``max.message.bytes`` (Kafka's default). The DLQ topic and its producers allow this plus
    #: ``sinks.dlq.DLQ_HEADROOM_BYTES``, so every record the flow can read can be dead-lettered.
    max_message_bytes: Count = 1_048_588
    #: How long the signal topic keeps records (``retention.ms``; -1: for ever). Replays reach
    #: back this far.
    retention_ms: RetentionMs = 7 * 86_400_000
    #: How long the DLQ topic keeps rejects (``retention.ms``; -1: for ever).
    dlq_retention_ms: RetentionMs = 30 * 86_400_000
    #: How far ahead of the broker's clock a producer's timestamp may be: the topics'
    #: ``message.timestamp.after.max.ms`` (the broker refuses a later one, ``INVALID_TIMESTAMP``).
    #: validate accepts an event time at most ``validate.max_future_skew_seconds`` after the
    #: record's timestamp, so an event time is at most the two together ahead of the broker's
    #: clock: a producer cannot move its tenant's score window further into the future. Kafka 4
    #: defaults to an hour; 5 minutes here, set explicitly so the bound does not follow a broker.
    timestamp_after_max_ms: Count = 300_000
    #: Consumer group whose offsets the flow commits after each durable lake commit, for
    #: monitoring only (``kafka-consumer-groups.sh``, lag exporters); empty: none.
    group_id: str = "igflow-coherence"
    #: ``PLAINTEXT`` or ``SSL`` (librdkafka's ``security.protocol``), and the CA that signs the
    #: brokers' certificates (empty: the system's). ``tls.enabled`` sets both for the stack.
    security_protocol: KafkaSecurity = "PLAINTEXT"
    ssl_ca_location: str = ""

    def client_config(self) -> tls_forms.KafkaConfig:
        """The librdkafka properties every client of these brokers starts from:
        ``bootstrap.servers`` and, with TLS, the protocol and CA."""
        return {
            "bootstrap.servers": self.bootstrap,
            **tls_forms.kafka_client_config(self.security_protocol, self.ssl_ca_location),
        }

    def connection(self) -> tls_forms.KafkaConnection:
        """:meth:`client_config` as an immutable, hashable value (for frozen targets)."""
        return tls_forms.KafkaConnection(self.client_config())

    def registry_config(self) -> dict[str, str]:
        """The schema registry client's configuration: the URL and, for ``https://``, the CA
        (the same one as the brokers')."""
        config = {"url": self.schema_registry_url}
        if self.ssl_ca_location and self.schema_registry_url.startswith("https:"):
            config["ssl.ca.location"] = self.ssl_ca_location
        return config


@_refuse_invalid
@pydantic_dataclass(frozen=True, slots=True, config=_SECTION_CONFIG)
class LakeSettings:
    """The Iceberg lakehouse."""

    catalog_name: str = "igflow"
    catalog_uri: str = "postgresql+psycopg2://igflow:igflow@127.0.0.1:15432/igflow"
    warehouse: str = ""  # empty: ``file://<stack_dir>/warehouse``
    namespace: str = "coherence"
    #: An append is committed when a partition's batch reaches this many rows …
    batch_max_rows: Count = 5000
    #: … or at the next multiple of this many seconds on the epoch clock after its first row
    #: (so at most this long after it; every lane's batch closes at the same instants and goes
    #: in one commit: operators/collect.py), whichever comes first (with more than one worker a
    #: process's workers share the append, which waits up to 0.1 s for them:
    #: sinks/lake_group.py). 0.5 s puts the lake's p95 after the Kafka append under 1 s
    #: (issue 15); 2 s (the default until session 21) costs ~27% less flow CPU at 2,000
    #: events/s, lake only, and writes a quarter of the commits and data files:
    #: DEVELOPERS.md "The lake's commit grid".
    batch_max_seconds: Duration = 0.5
    #: Attempts at a commit that lost an optimistic-concurrency race.
    commit_attempts: Count = 8
    #: Batches of ``batch_max_rows`` rows each table's writer thread may hold queued or
    #: appending; past that the worker waits (backpressure). The collect keeps each batch in its
    #: recovery snapshot until committed (sinks/lake_group.py).
    in_flight: Count = 2
    #: After a commit, when a table keeps more snapshots than this, its appender expires those
    #: older than what the ledger and the history chain need (sinks/ledger_history.py): a
    #: commit's cost grows with the snapshots kept. 0: never (only ``igflow retention apply``).
    snapshots_kept: CountOrZero = 64
    #: Commits between ledger checkpoints, each with a history file (sinks/ledger_format.py).
    checkpoint_every: Count = 32
    #: After a commit, when a table's current snapshot lists more data manifests than this (one
    #: per append), its appender rewrites them into few in a commit of its own
    #: (sinks/lake_manifests.py): a commit's cost grows with the manifests listed. 0: never.
    manifests_kept: CountOrZero = 32


@_refuse_invalid
@pydantic_dataclass(frozen=True, slots=True, config=_SECTION_CONFIG)
class StoreSettings:
    """Serving stores."""

    postgres_dsn: str = "postgresql://igflow:igflow@127.0.0.1:15432/igflow"
    redis_url: str = "redis://127.0.0.1:16379/0"
    neo4j_uri: str = "bolt://127.0.0.1:17687"
    #: Neo4j Community's one user; the local stack and docker-compose.yml set this password.
    neo4j_user: str = "neo4j"
    neo4j_password: str = "igflow-neo4j"
    #: The CA the Bolt server's certificate must chain to (the driver then encrypts and
    #: verifies); empty: the URI's scheme decides (``bolt://`` plain, ``bolt+s://`` system CAs).
    neo4j_ca_file: str = ""
    #: ``falkordb`` when the Bolt server is the FalkorDB stand-in (see sinks/falkordb_compat.py;
    #: it also needs user ``falkordb`` and an empty password); empty for Neo4j.
    graph_compat: GraphCompat = ""
    #: Which serving stores the flow writes (comma-separated; empty: the lake only).
    sinks: StoreNames = "redis,graph,postgres"
    #: Rows per store write.
    batch_size: Count = 1000
    #: Batches of ``batch_size`` each store's writer thread may hold unacknowledged; past that the
    #: worker waits (backpressure). Bounds memory, the recovery snapshot and how far the lake runs
    #: ahead of a paused store (sinks/store_pipeline.py).
    max_in_flight: Count = 4
    #: Writer threads (each its own Bolt connection) of a worker's graph partition, tenants
    #: spread over them (a tenant's items on one, in order): a transaction's server work then
    #: overlaps another's client work (sinks/serving.py). 1: one writer.
    graph_writers: Count = 2
    #: Attempts at one batch write, and the jittered exponential backoff between them.
    retry_attempts: Count = 10
    retry_base_seconds: DurationOrZero = 0.1
    retry_cap_seconds: DurationOrZero = 8.0
    #: Signals kept in each tenant's Redis stream (approximate trim).
    redis_stream_max: Count = 1000
    #: TTL of a tenant's hot score key when its retention tag gives none (``standard-365d``).
    redis_ttl_seconds: Duration = 365 * 86400.0
    #: The API reads Redis as each caller's tenant's ACL user (``tenancy/redis_acl.py``), which
    #: Redis lets read that tenant's keys and channel only; the URL's user must be allowed
    #: ``ACL SETUSER`` (it provisions them). Off: the API reads as the URL's user.
    redis_tenant_acl: bool = True
    #: The secret the tenant users' passwords derive from (0600, created if missing); empty:
    #: ``<stack_dir>/redis/acl.secret``. Every ``igflow serve`` of a deployment needs the same.
    redis_acl_secret_file: str = ""
    #: Scratch names, for ``igflow replay --into NS`` (which sets all three); empty: the real
    #: names. Prepended to every Redis key and channel (``replay:NS:`` gives
    #: ``replay:NS:tenant:<t>:score``) …
    key_prefix: str = ""
    #: … to every graph node label (``replay_NS_`` gives ``replay_NS_Tenant``; letters, digits
    #: and ``_``; edge types stay) …
    graph_label_prefix: str = ""
    #: … and the Postgres schema of the ``coherence_scores`` read model (created ``LIKE`` the
    #: migrated table); empty: the table the migrations create (the DSN's ``search_path``).
    postgres_schema: str = ""

    @property
    def enabled(self) -> frozenset[str]:
        """The serving stores to write."""
        return frozenset(s.strip() for s in self.sinks.split(",") if s.strip())


@_refuse_invalid
@pydantic_dataclass(frozen=True, slots=True, config=_SECTION_CONFIG)
class ValidateSettings:
    """Field and tenant rules of the validate step.

    Event-time bounds are measured against the Kafka record's timestamp (part of the input), not
    the wall clock, so a replay decides exactly as the first run did. A record without a Kafka
    timestamp is checked against nothing but the field rules.
    """

    #: ``ts`` may lie at most this far after the record's Kafka timestamp …
    max_future_skew_seconds: DurationOrZero = 300.0
    #: … and at most this far before it (the retention, ``standard-365d``).
    max_age_seconds: Duration = 365 * 86400.0
    #: How often the tenant registry is re-read from Postgres (wall clock).
    tenant_refresh_seconds: Duration = 30.0
    #: Field size limits of the contract, in UTF-8 bytes (``FIELD_INVALID`` past them, in the
    #: flow and at the API alike): ``tenant_id`` and ``signal_id`` …
    max_id_bytes: Count = 256
    #: … ``type`` …
    max_type_bytes: Count = 128
    #: … ``source`` …
    max_source_bytes: Count = 256
    #: … and ``selectors``: how many, and each one's size.
    max_selectors: Count = 1000
    max_selector_bytes: Count = 256


@_refuse_invalid
@pydantic_dataclass(frozen=True, slots=True, config=_SECTION_CONFIG)
class DriftSettings:
    """Distribution-drift quarantine per (tenant, type)."""

    #: A micro-batch closes at this many values …
    batch_size: Count = 200
    #: Fewest values a sample is judged on (``batch_size`` if that is smaller). 50: below about
    #: ``(bins - 1) / psi_threshold`` (45 at the defaults) values the PSI of an undrifted batch
    #: is expected above the threshold, and the KS's asymptotic critical value is loose. A batch
    #: with fewer is judged through its trailing window when that (its passed batches and this
    #: one) holds this many; otherwise it waits (``small_batch_wait_seconds``).
    min_batch_size: Count = 50
    #: … or when the tenant's event time passes its first value by this many seconds: the short
    #: hold (issue 15: a record's wait in this step, at a busy tenant). 0.5 s of event time holds
    #: about 60 values of a (tenant, type) at 5,000 events/s over 10 tenants and 4 types.
    batch_seconds: Duration = 0.5
    #: A batch too small to be judged when its ``batch_seconds`` are up (fewer than
    #: ``min_batch_size`` values, with its window too) stays open up to this much more event
    #: time, closing as soon as it can be judged; then it passes unjudged. So a sparse type's
    #: drift is still detected (within this much event time) and its records wait at most this
    #: long; a busy type never waits for it.
    small_batch_wait_seconds: DurationOrZero = 300.0
    #: The reference is learned from the first K batches of each (tenant, type) …
    reference_batches: CountOrZero = 5
    #: … and at least this many values (the short hold makes batches small: 5 of them could be
    #: a handful of values at a quiet tenant, a reference too small for the tests to have
    #: power). 1,000: what 5 full batches of 200 gave before the short hold. 0: batches only.
    reference_values: CountOrZero = 1000
    #: … unless a baseline file gives it (JSON ``{tenant|"*": {type|"*": [values]}}``).
    baseline_file: str = ""
    #: Passed batches in the trailing window (besides the current one).
    window_batches: CountOrZero = 5
    #: Equal-mass bins of the reference for the PSI.
    bins: Count = 10
    #: PSI at or above this is significant …
    psi_threshold: NonNegative = 0.2
    #: … and the KS statistic must exceed its critical value at this significance level.
    ks_alpha: Probability = 0.001
    #: A tenant idle this long (wall clock) has its open batches decided (tail mode only).
    idle_flush_seconds: DurationOrZero = 30.0


@_refuse_invalid
@pydantic_dataclass(frozen=True, slots=True, config=_SECTION_CONFIG)
class DedupeSettings:
    """Duplicate suppression on ``(tenant_id, source, signal_id, ts)``."""

    #: Keys are remembered this long in event time (the tenant's newest ``ts`` minus ``ts``).
    ttl_seconds: DurationOrZero = 86400.0


@_refuse_invalid
@pydantic_dataclass(frozen=True, slots=True, config=_SECTION_CONFIG)
class ScoreSettings:
    """The coherence score."""

    window_seconds: Duration = 86400.0
    healthy_at: Share = 0.75
    warn_at: Share = 0.5
    #: At most one change per tenant per tick of this many seconds of event time (ticks aligned
    #: on the Unix epoch): the last change of each tick. 0: every change, one per signal that
    #: changes the score or status. At least 1 µs otherwise. 0.1 s: a change leaves the score
    #: step when its tick ends (plus its drift hold), so the tick is the stores' lag after the
    #: drift decision (issue 15: 1 s put it at 0.45 s p50 / 1.0 s p95, 0.1 s at 0.03 / 0.52 s),
    #: and the API's subscriptions coalesce into 100 ms windows anyway.
    tick_seconds: DurationOrZero = 0.1
    #: What closes a tenant's open tick (its change is then published): ``"signal"``, only its
    #: own next signal at the score step in a later tick (or the end of input); ``"horizon"``,
    #: also the end of each drift release (its last passed record carries the drift step's
    #: event time, which bounds it: at most one change per tick of it), so a release's last
    #: tick no longer waits for the tenant's next release (issue 15: a tenth of the signals
    #: waited 0.5 s after their drift decision with ``"signal"``; ``operators/score.py``).
    #: Decides which changes are published: recorded for replays, and a range landed before
    #: the setting existed replays as ``"signal"``.
    close_on: ScoreCloseOn = "horizon"


@_refuse_invalid
@pydantic_dataclass(frozen=True, slots=True, config=_SECTION_CONFIG)
class QuarantineSettings:
    """Quarantine release."""

    #: Key of the HMAC that marks a released record, so the drift check lets it pass. Change it
    #: in production: whoever knows it can send records past the drift check.
    release_key: str = "igflow-dev-release-key"


@_refuse_invalid
@pydantic_dataclass(frozen=True, slots=True, config=_SECTION_CONFIG)
class SwitchSettings:
    """Kill switches (``igflow switch``, table ``switches``)."""

    #: How often a running flow and every ``igflow serve`` re-read the switches from Postgres
    #: (wall clock): a change takes effect within this many seconds.
    refresh_seconds: Duration = 2.0
    #: After ``igflow switch on`` of a source or tenant, how long to wait before re-sending its
    #: held records: the flow's last holds must reach the quarantine table first (at least
    #: ``refresh_seconds`` + ``lake.batch_max_seconds``; ``--no-wait`` skips it).
    release_delay_seconds: Duration = 6.0


def _check_residency_map(value: str) -> str:
    """``"US=coherence,EU=coherence_eu"``: residency codes (upper-case letters) to names, each
    residency and each name at most once; empty: none."""
    seen: set[str] = set()
    names: set[str] = set()
    for item in (i.strip() for i in value.split(",")):
        if not item:
            continue
        residency, eq, name = (part.strip() for part in item.partition("="))
        if not eq or not residency.isalpha() or not residency.isupper():
            msg = "must be a comma-separated list of RESIDENCY=NAME (RESIDENCY upper-case letters)"
            raise ValueError(msg)
        if residency in seen or (name and name in names):
            msg = f"names residency {residency!r} or its value twice"
            raise ValueError(msg)
        seen.add(residency)
        names.add(name)
    return value


ResidencyMap = Annotated[str, AfterValidator(_check_residency_map)]
SourcesMode = Annotated[str, _one_of("off", "check", "enforce")]


@_refuse_invalid
@pydantic_dataclass(frozen=True, slots=True, config=_SECTION_CONFIG)
class SourceSettings:
    """The source registry (``igflow sources``, table ``source_revisions``)."""

    #: ``off``: the registry is not read (records are neither checked nor stamped);
    #: ``check``: a registered source's records are checked (transport, SLA window, residency)
    #: and stamped with its license and retention, an unregistered source's pass unstamped;
    #: ``enforce``: as ``check``, and an unregistered source's records are refused as
    #: ``SOURCE_UNREGISTERED``.
    mode: SourcesMode = "off"
    #: How often a running flow re-reads the registry from Postgres (wall clock).
    refresh_seconds: Duration = 2.0
    #: A change made with ``igflow sources`` applies to records whose Kafka timestamp is at least
    #: this many seconds after the change, so that every running flow has read it (keep it above
    #: ``refresh_seconds``) and a replay decides exactly as the run did.
    grace_seconds: DurationOrZero = 5.0


@_refuse_invalid
@pydantic_dataclass(frozen=True, slots=True, config=_SECTION_CONFIG)
class ResidencySettings:
    """Residency: where each residency's data lands (``core/residency.py``)."""

    #: Residency -> the lake namespace its data lands in, ``"US=coherence,EU=coherence_eu"``.
    #: A flow whose ``lake.namespace`` is listed serves that residency only: a record of a
    #: tenant of another residency is held as ``RESIDENCY_BLOCKED``. Empty, or a namespace not
    #: listed: no residency gate.
    namespaces: ResidencyMap = ""
    #: Residency -> the serving stores' key prefix (``stores.key_prefix``) of its deployment,
    #: ``"EU=eu:"``; a flow serving a residency listed here must run with that prefix.
    key_prefixes: ResidencyMap = ""


@_refuse_invalid
@pydantic_dataclass(frozen=True, slots=True, config=_SECTION_CONFIG)
class RetentionSettings:
    """Retention enforced (``igflow retention apply|verify|audit``, table ``retention_runs``)."""

    #: Snapshots of a lake table older than this many days (wall clock, at ``apply``) are
    #: expired after the deletes, so time travel cannot bring deleted rows back. The lineage the
    #: ledger needs (back to its last base) and the newest retention snapshot are always kept.
    snapshot_max_age_days: DurationOrZero = 7.0
    #: Lost commit races a lake delete retries (re-reading the table each time) before it fails.
    commit_attempts: Count = 8


@_refuse_invalid
@pydantic_dataclass(frozen=True, slots=True, config=_SECTION_CONFIG)
class TenancySettings:
    """Tenant policy tags."""

    #: The Rego policy bundle; empty: the ``policies/`` folder of this project.
    policies_dir: str = ""


@_refuse_invalid
@pydantic_dataclass(frozen=True, slots=True, config=_SECTION_CONFIG)
class KeySettings:
    """Tenant-scoped encryption keys (``tenancy/keys.py``, ``core/envelope.py``)."""

    #: Which KMS holds the root key: ``local`` (a file) or ``aws`` (AWS KMS through boto3).
    kms: KmsKind = "local"
    #: The local KMS's root key file (0600); empty: ``<stack_dir>/kms/root.key``.
    root_key_file: str = ""
    #: AWS KMS: the key id or ARN, the region, and an endpoint URL (empty: AWS's own).
    aws_key_id: str = ""
    aws_region: str = "us-east-1"
    aws_endpoint_url: HttpUrlOrEmpty = ""
    #: How long a process keeps unwrapped keys before checking the key tables again (one read
    #: of ``key_epoch`` for every tenant; a tenant's keys are read again only if they changed):
    #: also how long an offboarded tenant's keys may live on in a running process.
    refresh_seconds: Duration = 30.0
    #: A rotation's new data keys apply to event times this long after it: longer than
    #: ``refresh_seconds``, so every running process knows them before they are needed.
    rotation_grace_seconds: DurationOrZero = 60.0


@_refuse_invalid
@pydantic_dataclass(frozen=True, slots=True, config=_SECTION_CONFIG)
class SealSettings:
    """Sealing of sensitive fields in the stores (``core/sealing.py``, ``tenancy/sealing.py``)."""

    #: Seal the sensitive fields (PSI selectors, quarantine payloads, DLQ originals of a
    #: tenant) with the tenant's data keys in every store that holds them (on by default; the
    #: key store is the stack's Postgres and KMS). ``IGFLOW_SEAL_ENABLED=false`` is the explicit
    #: opt-out: they land as read, as before this section existed.
    enabled: bool = True


@_refuse_invalid
@pydantic_dataclass(frozen=True, slots=True, config=_SECTION_CONFIG)
class PsiSettings:
    """The psi step: deconfliction with a partner's PSI server (``igflow psi serve``)."""

    #: Base URL of the partner's ``igflow psi serve``; empty: the step is off (signals pass).
    server_url: HttpUrlOrEmpty = ""
    #: ``full_intersection`` (which selectors) or ``intersection_cardinality`` (how many).
    mode: PsiMode = "full_intersection"
    #: Length of the tumbling event-time windows, in seconds.
    window_seconds: Duration = 300.0
    #: Who we are, and where, as sent to the server (its authenticating edge must vouch for it).
    partner_id: str = "partner"
    region: str = "US"
    #: Who the server is, and where, as our policy sees it; ``server_partner_id`` is the row's
    #: ``partner``.
    server_partner_id: str = "server"
    server_region: str = "US"
    #: Residency of the selectors we send; tenants tagged otherwise are not sent.
    residency: str = "US"
    #: ``data.psi`` JSON of our policy; empty: one default agreement with ``server_partner_id``.
    policy_data: str = ""
    #: The CA the partner's ``https://`` certificate must chain to; empty: the system's CAs.
    #: ``tls.enabled`` sets the stack's (a local partner's server uses the stack's certificate).
    ca_file: str = ""
    #: HTTP timeout of one request, and the bounded retries of an unreachable server.
    timeout_seconds: Duration = 5.0
    retry_attempts: Count = 3
    retry_base_seconds: DurationOrZero = 0.2
    retry_cap_seconds: DurationOrZero = 2.0
    #: After the retries fail, windows closing within this many seconds (wall clock) are reported
    #: unavailable without trying, so a down partner costs one window's retries, not each one's.
    unavailable_pause_seconds: DurationOrZero = 30.0
    #: Most selectors in one request (the server's ``max_batch``); larger windows are split.
    max_batch: PsiBatch = 1 << 16  # psi.messages.MAX_BATCH
    #: Threads of the client's curve arithmetic, per worker.
    crypto_threads: Count = 1
    #: Windows asked of the partner at once, per worker, off the worker's thread; and how many
    #: more closed windows may wait for one of them before the worker itself waits (the bound on
    #: memory and on how far results trail their signals). Signals never wait for the partner.
    max_in_flight: Count = 4
    max_queued: CountOrZero = 256
    #: Close an idle tenant's window after this many seconds of wall clock; 0: only by event
    #: time and at end of input (a bounded run uses 0).
    idle_flush_seconds: DurationOrZero = 60.0


@_refuse_invalid
@pydantic_dataclass(frozen=True, slots=True, config=_SECTION_CONFIG)
class ApiSettings:
    """``igflow serve``: the GraphQL and REST API over the materialised stores."""

    host: str = "127.0.0.1"
    port: Port = 8080
    #: ``production``: only allowlisted (persisted) operations run; ``development``: any query,
    #: and Apollo APQ may register new ones in memory.
    mode: ApiMode = "development"
    #: The persisted-query allowlist (JSON: id -> document); empty: ``api/persisted_queries.json``.
    persisted_queries: str = ""
    #: Most cost an operation may have (ariadne's cost validator: 1 per field, lists times their
    #: ``first``/``limit`` argument).
    max_query_cost: Count = 200
    #: Per-tenant token bucket: refill rate (requests/s) and burst size.
    rate_limit_rps: Rate = 1000.0
    rate_limit_burst: Count = 1000
    #: Failed authentications per client address: refill rate (per second) and burst. Past
    #: them, that address's requests are refused (429 ``AUTH_RATE_LIMITED``) before any key or
    #: token is checked, except credentials this process has already verified.
    auth_failure_rps: Rate = 2.0
    auth_failure_burst: Count = 20
    #: How long an API key lookup is remembered while this process listens to Postgres for
    #: key changes (``NOTIFY``, so a revocation applies at once), and while it cannot listen.
    key_cache_seconds: DurationOrZero = 30.0
    key_cache_fallback_seconds: DurationOrZero = 1.0
    #: Prometheus ``/metrics`` is served on its own port (0: not at all), never on ``port``:
    #: its labels name tenants. Keep ``metrics_host`` on loopback unless a firewall guards it.
    metrics_host: str = "127.0.0.1"
    metrics_port: Port = 9465
    #: JWT verification: accepted issuer and audience, the verification keys (a PEM public key,
    #: a JWKS JSON file, or a folder of either), the accepted algorithms and the clock leeway.
    jwt_issuer: str = "igflow-local"
    jwt_audience: str = "igflow-api"
    jwt_keys: str = ""
    jwt_algorithms: str = "RS256,ES256"
    jwt_leeway_seconds: DurationOrZero = 30.0
    #: Where the local stack keeps its signing key (``igflow token`` mints with it); empty:
    #: ``<stack_dir>/api``.
    dev_keys_dir: str = ""
    #: HMAC-SHA256 secret for signed webhook pushes (``X-Igflow-Signature``); empty: signed
    #: pushes are refused.
    webhook_secret: str = ""
    #: Subscription events are coalesced in windows of this many milliseconds.
    coalesce_ms: DurationOrZero = 100.0
    #: How long a publish waits for the broker's acknowledgement.
    publish_timeout_seconds: Duration = 5.0
    #: Largest request body accepted, in bytes; also the largest WebSocket message.
    max_body_bytes: Count = 1 << 20
    #: Most tokens a GraphQL document may have: graphql-core's parser stops there
    #: (``QUERY_TOO_COSTLY``), before any of the work that grows with the text.
    max_query_tokens: Count = 2000
    #: graphql-transport-ws: seconds a socket may stay open before its ``connection_init``
    #: (then it is closed with 4408), and most subscriptions one socket may hold at once.
    ws_init_timeout_seconds: Duration = 5.0
    ws_max_subscriptions: Count = 100
    #: The Prometheus the dashboards (``/dashboard``) read, by its HTTP API; empty: the local
    #: stack's, ``http://127.0.0.1:$IGFLOW_PROMETHEUS_PORT`` (19090).
    prometheus_url: str = ""
    #: How far back the dashboards' plots reach, and the seconds between their points.
    dashboard_range_seconds: Duration = 3600.0
    dashboard_step_seconds: Duration = 30.0


@_refuse_invalid
@pydantic_dataclass(frozen=True, slots=True, config=_SECTION_CONFIG)
class ProbeSettings:
    """``igflow probe``: a canary signal per tenant through the API, the flow and back."""

    #: The API the canaries go through and come back from; empty: ``http://127.0.0.1:<api.port>``.
    api_url: str = ""
    #: Seconds between rounds (one canary per tenant per round).
    interval_seconds: Duration = 60.0
    #: A canary not read back within this many seconds counts as a failure (observed as this
    #: long: keep it above every freshness threshold of the SLO file).
    timeout_seconds: Duration = 120.0
    #: Prometheus ``/metrics`` of the probe (0: none); the stack scrapes 127.0.0.1:9466. Keep the
    #: host on loopback unless a firewall guards it (its labels name tenants).
    metrics_host: str = "127.0.0.1"
    metrics_port: Port = 9466


@_refuse_invalid
@pydantic_dataclass(frozen=True, slots=True, config=_SECTION_CONFIG)
class RunSettings:
    """How the dataflow runs."""

    #: Stop at the end offsets present at start (``False``: keep tailing).
    bounded: bool = True
    workers: Count = 1
    #: Bytewax recovery store; empty disables recovery.
    recovery_dir: str = ""
    snapshot_seconds: Duration = 1.0
    epoch_seconds: Duration = 1.0
    metrics_port: Port = 0
    #: Where the flow's metrics port listens: loopback unless a firewall guards it (its labels
    #: name tenants); docker-compose's flow listens on its container's interfaces.
    metrics_host: str = "127.0.0.1"
    log_level: LogLevel = "INFO"
    #: Rejected records logged one by one, per reason code a second; the rest of that second's
    #: are counted in one line (``core.logs.LineLimit``). Every one is in the DLQ topic, the
    #: lake's ``quarantine`` table and ``igflow_dlq_events_total`` either way. 0: counts only.
    reject_log_per_second: CountOrZero = 10
    #: Tenants with their own ``tenant_id`` metric label, besides those the SLO file names (the
    #: flow's and the API's); later ones share ``(other)`` (:mod:`core.metric_labels`).
    metrics_tenant_cap: Count = 100
    #: The SLO file (tiers and objectives); empty: the one shipped, ``slo/slos.json``.
    slo_file: str = ""
    #: Once the flow is built, its start-up objects are frozen out of the garbage collector's
    #: reach and the oldest generation is collected after this many collections of the middle
    #: one (CPython's default: 10); 0 leaves the collector as it is. Full collections traverse
    #: every record in flight: ~30% of a lake-only run's CPU at the default (:mod:`core.collector`).
    gc_oldest_threshold: CountOrZero = 1000
    #: The allocator of Arrow's buffers in an ``igflow`` command's process (chosen by
    #: ``igflow.cli.main`` before the command runs): pyarrow's default, mimalloc, cost 0.5-1.1
    #: CPU s more in the kernel a 200,000-signal lake-only run and ~150 MB more RSS over
    #: 600,000 than jemalloc (:mod:`core.arrow_pool`).
    #: ``ARROW_DEFAULT_MEMORY_POOL``, when set, wins.
    arrow_memory_pool: ArrowPool = "jemalloc"
    #: After SIGINT or SIGTERM, or once a peer process of the cluster has left, a process that
    #: has not exited within this many seconds exits with status 3 (:mod:`core.shutdown`).
    stop_seconds: Duration = 5.0


@_refuse_invalid
@pydantic_dataclass(frozen=True, slots=True, config=_SECTION_CONFIG)
class EvidenceSettings:
    """The signed evidence bundle of a release (``igflow evidence``, ``make evidence``)."""

    #: The Ed25519 private key that signs bundles (PKCS#8 PEM, 0600, created on first use);
    #: empty: ``<stack_dir>/evidence/signing.key``.
    signing_key_file: str = ""
    #: The public key ``igflow evidence verify`` trusts unless ``--public-key`` names one;
    #: empty: the signing key's own public half (``<signing key>.pub``, written beside it).
    public_key_file: str = ""


@_refuse_invalid
@pydantic_dataclass(frozen=True, slots=True, config=_SECTION_CONFIG)
class TracingSettings:
    """OpenTelemetry traces (:mod:`core.tracing`): exported over OTLP/HTTP."""

    #: The collector's OTLP/HTTP traces URL (``http://host:4318/v1/traces``); empty: tracing is
    #: off and no exporter is started.
    endpoint: HttpUrlOrEmpty = ""
    #: Share of the traces that start here (an API publish without a ``traceparent``, a record
    #: that arrives without one) that are sampled; a trace that arrives with a ``traceparent``
    #: follows its sampled flag. A sampled record costs about ten spans (one per stage and store
    #: write), ~1 ms of CPU on the shared 2-core machine: 0.001 keeps that to ~1 µs a record.
    sample_ratio: Share = 0.001
    #: The ``service.name`` resource attribute; the API adds ``-api``, the flow ``-flow``.
    service_name: str = "igflow"
    #: How long an export may take before the spans are dropped (and counted), seconds.
    export_timeout_seconds: Duration = 10.0


@_refuse_invalid
@pydantic_dataclass(frozen=True, slots=True, config=_SECTION_CONFIG)
class TlsSettings:
    """TLS on every hop (``core/tls.py``): the stack's CA, and the certificate and key of the
    servers this project runs (``igflow serve``, ``igflow psi serve``, the registry).

    When ``enabled``, :meth:`Settings.load` turns every endpoint into its verified TLS form
    (Postgres ``verify-full``, ``rediss://``, Kafka ``SSL``, ``https://`` registry, Bolt with
    the CA as trusted certificate); an endpoint that names its own TLS options keeps them.
    """

    #: On by default (issue 16, point 5); plaintext only by the explicit opt-out
    #: ``IGFLOW_TLS_ENABLED=false`` (or ``enabled = false`` in the ``[tls]`` section).
    enabled: bool = True
    #: The CA that signs the servers' certificates; empty: ``<stack_dir>/tls/ca.pem``, the CA
    #: ``python -m dev start`` makes.
    ca_file: str = ""
    #: Certificate (chain, PEM) and private key (PEM) of the servers we run; empty: the stack's
    #: ``<stack_dir>/tls/server.pem`` and ``server.key``.
    cert_file: str = ""
    key_file: str = ""
    #: The explicit opt-out for our own HTTP servers alone: ``igflow serve`` and ``igflow psi
    #: serve`` speak plain HTTP even when ``enabled`` (behind a TLS-terminating proxy, or to
    #: measure what TLS costs: ``benchmarks/api_tls.py``); the stores' hops stay TLS.
    plaintext_servers: bool = False


@dataclasses.dataclass(frozen=True)
class _Load:
    """What :meth:`Settings.load` hands the sources while it builds a value."""

    #: Accepted ``IGFLOW_*`` settings variables, aliases resolved to ``IGFLOW_<SECTION>_<FIELD>``.
    variables: Mapping[str, str]
    toml: Path | None
    #: Values that follow others (the catalog URI following the Postgres DSN).
    derived: dict[str, Any]
    #: Where each set value came from: a variable's name or a TOML key and its file.
    origins: Mapping[tuple[str, ...], str]


_LOADING: ContextVar[_Load | None] = ContextVar("igflow_settings_load", default=None)


class _EnvironSource(EnvSettingsSource):
    """pydantic-settings' environment source, reading a given mapping rather than os.environ."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {name.lower(): value for name, value in self._environ.items()}


with warnings.catch_warnings():
    # The ``validate`` section shadows pydantic's deprecated ``BaseModel.validate`` classmethod,
    # which nothing here calls; the field is what ``settings.validate`` returns.
    warnings.filterwarnings("ignore", message='Field name "validate"', category=UserWarning)

    class Settings(BaseSettings):
        """Everything the engine needs, read once.

        ``Settings()`` is the built-in defaults (it reads no environment); :meth:`load` adds the
        TOML file and the ``IGFLOW_*`` variables.
        """

        model_config = SettingsConfigDict(
            frozen=True,
            extra="forbid",
            env_prefix="IGFLOW_",
            env_nested_delimiter="_",
            env_nested_max_split=1,
            case_sensitive=False,
        )

        stack_dir: str = ".stack"
        kafka: KafkaSettings = KafkaSettings()
        lake: LakeSettings = LakeSettings()
        stores: StoreSettings = StoreSettings()
        run: RunSettings = RunSettings()
        validate: ValidateSettings = ValidateSettings()  # type: ignore[assignment]
        drift: DriftSettings = DriftSettings()
        dedupe: DedupeSettings = DedupeSettings()
        score: ScoreSettings = ScoreSettings()
        quarantine: QuarantineSettings = QuarantineSettings()
        switches: SwitchSettings = SwitchSettings()
        sources: SourceSettings = SourceSettings()
        residency: ResidencySettings = ResidencySettings()
        retention: RetentionSettings = RetentionSettings()
        tenancy: TenancySettings = TenancySettings()
        psi: PsiSettings = PsiSettings()
        keys: KeySettings = KeySettings()
        seal: SealSettings = SealSettings()
        api: ApiSettings = ApiSettings()
        tracing: TracingSettings = TracingSettings()
        probe: ProbeSettings = ProbeSettings()
        evidence: EvidenceSettings = EvidenceSettings()
        tls: TlsSettings = TlsSettings()

        if not TYPE_CHECKING:  # type checkers keep the signature made from the fields

            def __init__(self, **values: Any) -> None:
                try:
                    super().__init__(**values)
                except ValidationError as exc:
                    load = _LOADING.get()
                    origins = load.origins if load else {}
                    problem = _describe(exc, (), origins, load.toml if load else None)
                else:
                    return
                # Raised outside the handler: no pydantic error (which shows values) in context.
                raise SettingError(problem)

            def __setattr__(self, name: str, value: Any) -> None:
                # As the sections (and the dataclass this was) do: AttributeError, not pydantic's.
                msg = f"cannot assign to field {name!r}"
                raise dataclasses.FrozenInstanceError(msg)

            def __delattr__(self, name: str) -> None:
                msg = f"cannot delete field {name!r}"
                raise dataclasses.FrozenInstanceError(msg)

        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            """Earlier sources win: arguments, then (in :meth:`load`) ``IGFLOW_*`` variables,
            the TOML file and derived values; defaults last."""
            load = _LOADING.get()
            if load is None:
                return (init_settings,)
            sources: list[PydanticBaseSettingsSource] = [
                init_settings,
                _EnvironSource(settings_cls, load.variables),
            ]
            if load.toml is not None:
                sources.append(TomlConfigSettingsSource(settings_cls, toml_file=load.toml))
            if load.derived:
                sources.append(InitSettingsSource(settings_cls, init_kwargs=load.derived))
            return tuple(sources)

        @property
        def warehouse(self) -> str:
            """The warehouse location, defaulting to a folder of the local stack."""
            if self.lake.warehouse:
                return self.lake.warehouse
            return Path(self.stack_dir, "warehouse").resolve().as_uri()

        @property
        def policies_dir(self) -> Path:
            """The Rego policy bundle's folder."""
            if self.tenancy.policies_dir:
                return Path(self.tenancy.policies_dir).resolve()
            return policies_dir()

        @property
        def root_key_file(self) -> Path:
            """The local KMS's root key file, defaulting to a file of the local stack."""
            if self.keys.root_key_file:
                return Path(self.keys.root_key_file)
            return Path(self.stack_dir, "kms", "root.key").resolve()

        @property
        def redis_acl_secret_file(self) -> Path:
            """The tenant Redis users' secret, defaulting to a file of the local stack."""
            if self.stores.redis_acl_secret_file:
                return Path(self.stores.redis_acl_secret_file)
            return Path(self.stack_dir, "redis", "acl.secret").resolve()

        @property
        def evidence_signing_key_file(self) -> Path:
            """The evidence bundle's signing key, defaulting to a file of the local stack."""
            if self.evidence.signing_key_file:
                return Path(self.evidence.signing_key_file)
            return Path(self.stack_dir, "evidence", "signing.key").resolve()

        @property
        def tls_ca_file(self) -> Path:
            """The CA every client verifies servers against (``tls.ca_file``, or the stack's)."""
            return Path(self.tls.ca_file or Path(self.stack_dir, "tls", "ca.pem")).resolve()

        @property
        def tls_cert_file(self) -> Path:
            """The certificate our servers present (``tls.cert_file``, or the stack's)."""
            return Path(self.tls.cert_file or Path(self.stack_dir, "tls", "server.pem")).resolve()

        @property
        def tls_key_file(self) -> Path:
            """The private key of :attr:`tls_cert_file` (``tls.key_file``, or the stack's)."""
            return Path(self.tls.key_file or Path(self.stack_dir, "tls", "server.key")).resolve()

        def with_tls_endpoints(self) -> Settings:
            """These settings with every endpoint in its verified TLS form (``core/tls.py``);
            :meth:`load` applies it when ``tls.enabled``."""
            ca = str(self.tls_ca_file)
            kafka = dataclasses.replace(
                self.kafka,
                security_protocol="SSL",
                ssl_ca_location=self.kafka.ssl_ca_location or ca,
                schema_registry_url=tls_forms.https_url(self.kafka.schema_registry_url),
            )
            stores = dataclasses.replace(
                self.stores,
                postgres_dsn=tls_forms.postgres_dsn(self.stores.postgres_dsn, ca),
                redis_url=tls_forms.redis_url(self.stores.redis_url, ca),
                neo4j_ca_file=self.stores.neo4j_ca_file or ca,
            )
            psi = dataclasses.replace(self.psi, ca_file=self.psi.ca_file or ca)
            lake = self.lake
            if lake.catalog_uri.startswith("postgresql"):
                lake = dataclasses.replace(
                    lake, catalog_uri=tls_forms.postgres_dsn(lake.catalog_uri, ca)
                )
            return self.model_copy(
                update={"kafka": kafka, "stores": stores, "lake": lake, "psi": psi}
            )

        def server_tls(self) -> dict[str, str]:
            """uvicorn's certificate arguments for the servers this project runs (``igflow
            serve``, ``igflow psi serve``): none unless ``tls.enabled``."""
            if not self.tls.enabled or self.tls.plaintext_servers:
                return {}
            return {"ssl_certfile": str(self.tls_cert_file), "ssl_keyfile": str(self.tls_key_file)}

        def client_verify(self) -> ssl.SSLContext | bool:
            """What an HTTPS client of our own servers verifies against (httpx's ``verify``,
            websockets' ``ssl``): a context trusting the CA with ``tls.enabled``, else ``True``
            (the system's CAs). A missing CA file is a :class:`ConfigError` that says how to get
            one (TLS is on by default: the local stack's first start makes it)."""
            if not self.tls.enabled:
                return True
            ca = self.tls_ca_file
            if not ca.is_file():
                msg = (
                    f"TLS is on (tls.enabled) but its CA {ca} does not exist: start the local "
                    "stack (python -m dev start makes it), name the CA with IGFLOW_TLS_CA_FILE, "
                    "or opt out with IGFLOW_TLS_ENABLED=false"
                )
                raise ConfigError(msg)
            return ssl.create_default_context(cafile=str(ca))

        @property
        def catalog_properties(self) -> dict[str, str]:
            """Properties of the pyiceberg SQL catalog."""
            return {"type": "sql", "uri": self.lake.catalog_uri, "warehouse": self.warehouse}

        @classmethod
        def load(
            cls, environ: Mapping[str, str] | None = None, config_file: str | Path | None = None
        ) -> Settings:
            """Build the settings from defaults, an optional TOML file and ``IGFLOW_*``
            variables; :class:`SettingError` for an unknown name or a bad value."""
            env = os.environ if environ is None else environ
            variables, origins = _read_environment(env)
            path = config_file or env.get(_CONFIG_VARIABLE)
            toml: Path | None = None
            data: dict[str, Any] = {}
            if path:
                toml = Path(path)
                data = _read_toml(toml)
                for loc in _leaves(data):
                    origins.setdefault(loc, f"{'.'.join(loc)} in {toml}")
            derived = _follow_postgres(variables, data, origins)
            token = _LOADING.set(_Load(variables, toml, derived, origins))
            try:
                settings = cls()
            finally:
                _LOADING.reset(token)
            return settings.with_tls_endpoints() if settings.tls.enabled else settings

        def with_changes(self, section: str, **changes: Any) -> Settings:
            """A copy with some fields of one section replaced (for CLI flags and tests); the
            changed section is checked like a loaded one."""
            if section not in _SECTIONS:
                msg = f"unknown settings section {section!r}{_hint(section, _SECTIONS)}"
                raise SettingError(msg)
            changed = dataclasses.replace(getattr(self, section), **changes)
            return self.model_copy(update={section: changed})

        def as_dict(self, *, masked: bool = True) -> dict[str, Any]:
            """The effective settings; secrets masked unless ``masked`` is false."""
            out: dict[str, Any] = {"stack_dir": self.stack_dir, "warehouse": self.warehouse}
            for section in _SECTIONS:
                values = dataclasses.asdict(getattr(self, section))
                if masked:
                    values = {k: _shown(k, v) for k, v in values.items()}
                out[section] = values
            return out


def mask(value: str) -> str:
    """Hide the password of a URL or DSN, or the whole value when it is not a URL."""
    parts = urlsplit(value)
    if parts.scheme and parts.password:
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        netloc = f"{parts.username}:****@{host}{port}"
        return urlunsplit(parts._replace(netloc=netloc))
    if parts.scheme:
        return value
    return "****" if value else ""


def _shown(name: str, value: Any) -> Any:
    """``value`` as it may be shown: masked when ``name`` is a secret field."""
    if name in _SECRET_FIELDS and isinstance(value, str):
        try:
            return mask(value)
        except ValueError:  # an unparsable URL (a bad port): show nothing of it
            return "****"
    return value


def catalog_uri_for(dsn: str) -> str | None:
    """The SQLAlchemy URI of the Iceberg catalog in the Postgres of libpq ``dsn``
    (``postgresql://u:p@h:5432/db`` gives ``postgresql+psycopg2://u:p@h:5432/db``); ``None``
    when ``dsn`` is not a ``postgresql://`` URL."""
    parts = urlsplit(dsn)
    if parts.scheme not in {"postgresql", "postgres"}:
        return None
    return urlunsplit(parts._replace(scheme="postgresql+psycopg2"))


#: Every section of :class:`Settings` and its field names, so a new section is configurable by
#: environment and TOML without being listed here.
_SECTIONS: dict[str, frozenset[str]] = {
    name: frozenset(f.name for f in dataclasses.fields(field.annotation))
    for name, field in Settings.model_fields.items()
    if isinstance(field.annotation, type) and dataclasses.is_dataclass(field.annotation)
}
#: Section class -> its name in :class:`Settings` (for messages about a directly built section).
_SECTION_NAMES: dict[type, str] = {
    field.annotation: name  # type: ignore[misc]
    for name, field in Settings.model_fields.items()
    if name in _SECTIONS
}

#: Short, product-wide names shared with docker-compose.yml and dev/.
_ALIASES: dict[str, tuple[str, str]] = {
    "IGFLOW_KAFKA_BOOTSTRAP": ("kafka", "bootstrap"),
    "IGFLOW_SCHEMA_REGISTRY_URL": ("kafka", "schema_registry_url"),
    "IGFLOW_POSTGRES_DSN": ("stores", "postgres_dsn"),
    "IGFLOW_REDIS_URL": ("stores", "redis_url"),
    "IGFLOW_NEO4J_URI": ("stores", "neo4j_uri"),
    "IGFLOW_NEO4J_USER": ("stores", "neo4j_user"),
    "IGFLOW_NEO4J_PASSWORD": ("stores", "neo4j_password"),
    "IGFLOW_CATALOG_URI": ("lake", "catalog_uri"),
    "IGFLOW_WAREHOUSE": ("lake", "warehouse"),
}


def _variable(loc: tuple[str, ...]) -> str:
    """The ``IGFLOW_<SECTION>_<FIELD>`` (or ``IGFLOW_<FIELD>``) name of a setting."""
    return "IGFLOW_" + "_".join(loc).upper()


#: Every variable that sets a setting -> the setting (aliases and canonical names).
_VARIABLES: dict[str, tuple[str, ...]] = {
    _variable(("stack_dir",)): ("stack_dir",),
    **{_variable((s, f)): (s, f) for s, fields in _SECTIONS.items() for f in sorted(fields)},
    **_ALIASES,
}


def setting_variables() -> dict[str, str]:
    """Every ``IGFLOW_*`` variable :meth:`Settings.load` reads -> what it sets
    (``lake.batch_max_rows``); :data:`NON_SETTING_VARIABLES` are the others it accepts."""
    out = {name: ".".join(loc) for name, loc in _VARIABLES.items()}
    out[_CONFIG_VARIABLE] = "the TOML settings file"
    return out


def _hint(name: str, choices: Iterable[str], prefix: str = "") -> str:
    """`` (did you mean <prefix>X?)`` for the nearest X of ``choices``, or nothing."""
    near = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {prefix}{near[0]}?)" if near else ""


def _read_environment(
    environ: Mapping[str, str],
) -> tuple[dict[str, str], dict[tuple[str, ...], str]]:
    """The settings variables of ``environ`` (aliases resolved, the canonical name winning) and
    the variable each setting came from; :class:`SettingError` for unknown ``IGFLOW_*`` names."""
    accepted = {*_VARIABLES, *NON_SETTING_VARIABLES, _CONFIG_VARIABLE}
    unknown = sorted(k for k in environ if k.upper().startswith("IGFLOW_") and k not in accepted)
    if unknown:
        msg = "; ".join(f"unknown setting {k}{_hint(k.upper(), accepted)}" for k in unknown)
        raise SettingError(msg)
    variables: dict[str, str] = {}
    origins: dict[tuple[str, ...], str] = {}
    for name, loc in _VARIABLES.items():
        canonical = _variable(loc)
        if name in environ and (name == canonical or canonical not in environ):
            variables[canonical] = environ[name]
            origins[loc] = name
    return variables, origins


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        msg = f"cannot read settings file {path}: {exc}"
        raise ConfigError(msg) from exc


def _leaves(data: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for key, value in data.items():
        if isinstance(value, Mapping) and not prefix:
            out.extend(_leaves(value, (key,)))
        out.append((*prefix, key))
    return out


def _follow_postgres(
    variables: Mapping[str, str],
    toml: Mapping[str, Any],
    origins: dict[tuple[str, ...], str],
) -> dict[str, Any]:
    """The catalog URI derived from the Postgres DSN when the DSN is set and the URI is not."""
    dsn_at, uri_at = ("stores", "postgres_dsn"), ("lake", "catalog_uri")
    if uri_at in origins or dsn_at not in origins:
        return {}
    dsn = variables.get(_variable(dsn_at), toml.get("stores", {}).get("postgres_dsn"))
    if not isinstance(dsn, str):
        return {}  # a TOML value of the wrong type: its own error follows
    uri = catalog_uri_for(dsn)
    if uri is None:
        msg = (
            f"setting lake.catalog_uri cannot follow stores.postgres_dsn "
            f"(from {origins[dsn_at]}): it is not a postgresql:// URL; set IGFLOW_CATALOG_URI"
        )
        raise SettingError(msg)
    origins[uri_at] = f"derived from {origins[dsn_at]}"
    return {"lake": {"catalog_uri": uri}}


_TYPE_RULES = {
    "int_parsing": "must be int",
    "int_type": "must be int",
    "int_from_float": "must be int",
    "float_parsing": "must be float",
    "float_type": "must be float",
    "bool_parsing": "must be a boolean",
    "bool_type": "must be a boolean",
    "string_type": "must be str",
    "finite_number": "must be a finite number",
    "dataclass_type": "must be a table",
    "dataclass_args_type": "must be a table",
    "model_type": "must be a table",
    "dict_type": "must be a table",
}
_BOUND_RULES = {
    "greater_than_equal": ">=",
    "greater_than": ">",
    "less_than_equal": "<=",
    "less_than": "<",
}


def _describe(
    exc: ValidationError,
    prefix: tuple[str, ...],
    origins: Mapping[tuple[str, ...], str],
    toml: Path | None = None,
) -> str:
    """One line per problem of ``exc``, naming the setting, its source and the rule broken, and
    the offending value unless the setting is a secret."""
    problems = []
    for error in exc.errors():
        loc = prefix + tuple(str(part) for part in error["loc"])
        dotted = ".".join(loc)
        kind = error["type"]
        if kind in {"extra_forbidden", "unexpected_keyword_argument"}:
            parent = loc[:-1]
            names = _SECTIONS.get(parent[0], ()) if parent else Settings.model_fields
            hint = _hint(loc[-1], names, "".join(f"{p}." for p in parent))
            where = f" in {toml}" if toml is not None and not prefix else ""
            problems.append(f"unknown setting {dotted}{where}{hint}")
            continue
        ctx = error.get("ctx", {})
        if kind in _BOUND_RULES:
            bound = next(iter(ctx.values()))
            rule = f"must be {_BOUND_RULES[kind]} {bound}"
        elif kind == "value_error":
            rule = str(ctx.get("error", error["msg"]))
        else:
            rule = _TYPE_RULES.get(kind, error["msg"])
        secret = loc[-1] in _SECRET_FIELDS
        got = "" if secret or "input" not in error else f", got {error['input']!r}"
        origin = origins.get(loc)
        source = f" (from {origin})" if origin else ""
        problems.append(f"setting {dotted} {rule}{got}{source}")
    return "; ".join(problems)
