"""One frozen settings object, built once at the entry point.

Sources, later ones winning: built-in defaults, an optional TOML file (``IGFLOW_CONFIG`` or
``--config``), then ``IGFLOW_*`` environment variables. Nothing below the entry point reads the
environment: operators, sinks and the CLI's subcommands receive a :class:`Settings` value.

Environment variables (the same names ``docker-compose.yml`` and ``dev/`` use):

=============================  ==============================================================
``IGFLOW_KAFKA_BOOTSTRAP``     Kafka bootstrap servers
``IGFLOW_SCHEMA_REGISTRY_URL`` Confluent-compatible schema registry
``IGFLOW_POSTGRES_DSN``        Postgres (read model, tenant registry)
``IGFLOW_REDIS_URL``           Redis hot store
``IGFLOW_NEO4J_URI``           Bolt graph server (``IGFLOW_NEO4J_USER``/``_PASSWORD``)
``IGFLOW_CATALOG_URI``         SQLAlchemy URI of the Iceberg SQL catalog (Postgres or SQLite)
``IGFLOW_WAREHOUSE``           Iceberg warehouse location
``IGFLOW_STACK_DIR``           where the local stack keeps data and logs (``.stack``)
=============================  ==============================================================

and the ``IGFLOW_<SECTION>_<FIELD>`` form for every other field (``IGFLOW_LAKE_BATCH_MAX_ROWS``).
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_type_hints
from urllib.parse import urlsplit, urlunsplit

from core.errors import ConfigError
from core.resources import policies_dir

__all__ = [
    "ApiSettings",
    "DedupeSettings",
    "DriftSettings",
    "KafkaSettings",
    "LakeSettings",
    "PsiSettings",
    "QuarantineSettings",
    "RunSettings",
    "ScoreSettings",
    "Settings",
    "StoreSettings",
    "TenancySettings",
    "ValidateSettings",
    "mask",
]

_SECRET_FIELDS = frozenset(
    {
        "postgres_dsn",
        "redis_url",
        "catalog_uri",
        "neo4j_password",
        "release_key",
        "webhook_secret",
    }
)


@dataclasses.dataclass(frozen=True, slots=True)
class KafkaSettings:
    """Where signals come from and where rejects go."""

    bootstrap: str = "127.0.0.1:19092"
    schema_registry_url: str = "http://127.0.0.1:18081"
    topic: str = "coherence.signals.v1"
    dlq_topic: str = "coherence.signals.dlq"
    #: Subject of the signal value schema (TopicNameStrategy).
    subject: str = "coherence.signals.v1-value"
    #: Messages fetched per source poll.
    batch_size: int = 1000
    #: Partitions of the topics ``igflow setup`` creates (the unit of parallelism).
    partitions: int = 4
    #: Replication factor of the topics ``igflow setup`` creates (1 on a one-node broker).
    replication_factor: int = 1
    #: Largest signal record (key, value and headers) the signal topic accepts: its
    #: ``max.message.bytes`` (Kafka's default). The DLQ topic and its producers allow this plus
    #: ``sinks.dlq.DLQ_HEADROOM_BYTES``, so every record the flow can read can be dead-lettered.
    max_message_bytes: int = 1_048_588
    #: How long the signal topic keeps records (``retention.ms``; -1: for ever). Replays reach
    #: back this far.
    retention_ms: int = 7 * 86_400_000
    #: How long the DLQ topic keeps rejects (``retention.ms``; -1: for ever).
    dlq_retention_ms: int = 30 * 86_400_000
    #: Consumer group whose offsets the flow commits after each durable lake commit, for
    #: monitoring only (``kafka-consumer-groups.sh``, lag exporters); empty: none.
    group_id: str = "igflow-coherence"


@dataclasses.dataclass(frozen=True, slots=True)
class LakeSettings:
    """The Iceberg lakehouse."""

    catalog_name: str = "igflow"
    catalog_uri: str = "postgresql+psycopg2://igflow:igflow@127.0.0.1:15432/igflow"
    warehouse: str = ""  # empty: ``file://<stack_dir>/warehouse``
    namespace: str = "coherence"
    #: An append is committed when a partition's batch reaches this many rows …
    batch_max_rows: int = 5000
    #: … or this many seconds after its first row, whichever comes first.
    batch_max_seconds: float = 2.0
    #: Attempts at a commit that lost an optimistic-concurrency race.
    commit_attempts: int = 8


@dataclasses.dataclass(frozen=True, slots=True)
class StoreSettings:
    """Serving stores."""

    postgres_dsn: str = "postgresql://igflow:igflow@127.0.0.1:15432/igflow"
    redis_url: str = "redis://127.0.0.1:16379/0"
    neo4j_uri: str = "bolt://127.0.0.1:17687"
    #: Neo4j Community's one user; the local stack and docker-compose.yml set this password.
    neo4j_user: str = "neo4j"
    neo4j_password: str = "igflow-neo4j"
    #: ``falkordb`` when the Bolt server is the FalkorDB stand-in (see sinks/falkordb_compat.py;
    #: it also needs user ``falkordb`` and an empty password); empty for Neo4j.
    graph_compat: str = ""
    #: Which serving stores the flow writes (comma-separated; empty: the lake only).
    sinks: str = "redis,graph,postgres"
    #: Rows per store write.
    batch_size: int = 1000
    #: Attempts at one batch write, and the jittered exponential backoff between them.
    retry_attempts: int = 10
    retry_base_seconds: float = 0.1
    retry_cap_seconds: float = 8.0
    #: Signals kept in each tenant's Redis stream (approximate trim).
    redis_stream_max: int = 1000
    #: TTL of a tenant's hot score key when its retention tag gives none (``standard-365d``).
    redis_ttl_seconds: float = 365 * 86400.0
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


@dataclasses.dataclass(frozen=True, slots=True)
class ValidateSettings:
    """Field and tenant rules of the validate step.

    Event-time bounds are measured against the Kafka record's timestamp (part of the input), not
    the wall clock, so a replay decides exactly as the first run did. A record without a Kafka
    timestamp is checked against nothing but the field rules.
    """

    #: ``ts`` may lie at most this far after the record's Kafka timestamp …
    max_future_skew_seconds: float = 300.0
    #: … and at most this far before it (the retention, ``standard-365d``).
    max_age_seconds: float = 365 * 86400.0
    #: How often the tenant registry is re-read from Postgres (wall clock).
    tenant_refresh_seconds: float = 30.0
    #: Field size limits of the contract, in UTF-8 bytes (``FIELD_INVALID`` past them, in the
    #: flow and at the API alike): ``tenant_id`` and ``signal_id`` …
    max_id_bytes: int = 256
    #: … ``type`` …
    max_type_bytes: int = 128
    #: … ``source`` …
    max_source_bytes: int = 256
    #: … and ``selectors``: how many, and each one's size.
    max_selectors: int = 1000
    max_selector_bytes: int = 256


@dataclasses.dataclass(frozen=True, slots=True)
class DriftSettings:
    """Distribution-drift quarantine per (tenant, type)."""

    #: A micro-batch closes at this many values …
    batch_size: int = 200
    #: Fewest values a batch is judged on (``batch_size`` if that is smaller). 50: below about
    #: ``(bins - 1) / psi_threshold`` (45 at the defaults) values the PSI of an undrifted batch
    #: is expected above the threshold, and the KS's asymptotic critical value is loose. A batch
    #: too small when its time is up waits ``batch_seconds`` more, then passes unjudged.
    min_batch_size: int = 50
    #: … or when the tenant's event time passes its first value by this many seconds: drift is
    #: detected within this much event time (the "N minutes" of the design).
    batch_seconds: float = 300.0
    #: The reference is learned from the first K batches of each (tenant, type) …
    reference_batches: int = 5
    #: … unless a baseline file gives it (JSON ``{tenant|"*": {type|"*": [values]}}``).
    baseline_file: str = ""
    #: Passed batches in the trailing window (besides the current one).
    window_batches: int = 5
    #: Equal-mass bins of the reference for the PSI.
    bins: int = 10
    #: PSI at or above this is significant …
    psi_threshold: float = 0.2
    #: … and the KS statistic must exceed its critical value at this significance level.
    ks_alpha: float = 0.001
    #: A tenant idle this long (wall clock) has its open batches decided (tail mode only).
    idle_flush_seconds: float = 30.0


@dataclasses.dataclass(frozen=True, slots=True)
class DedupeSettings:
    """Duplicate suppression on ``(tenant_id, source, signal_id, ts)``."""

    #: Keys are remembered this long in event time (the tenant's newest ``ts`` minus ``ts``).
    ttl_seconds: float = 86400.0


@dataclasses.dataclass(frozen=True, slots=True)
class ScoreSettings:
    """The coherence score."""

    window_seconds: float = 86400.0
    healthy_at: float = 0.75
    warn_at: float = 0.5


@dataclasses.dataclass(frozen=True, slots=True)
class QuarantineSettings:
    """Quarantine release."""

    #: Key of the HMAC that marks a released record, so the drift check lets it pass. Change it
    #: in production: whoever knows it can send records past the drift check.
    release_key: str = "igflow-dev-release-key"


@dataclasses.dataclass(frozen=True, slots=True)
class TenancySettings:
    """Tenant policy tags."""

    #: The Rego policy bundle; empty: the ``policies/`` folder of this project.
    policies_dir: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class PsiSettings:
    """The psi step: deconfliction with a partner's PSI server (``igflow psi serve``)."""

    #: Base URL of the partner's ``igflow psi serve``; empty: the step is off (signals pass).
    server_url: str = ""
    #: ``full_intersection`` (which selectors) or ``intersection_cardinality`` (how many).
    mode: str = "full_intersection"
    #: Length of the tumbling event-time windows, in seconds.
    window_seconds: float = 300.0
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
    #: HTTP timeout of one request, and the bounded retries of an unreachable server.
    timeout_seconds: float = 5.0
    retry_attempts: int = 3
    retry_base_seconds: float = 0.2
    retry_cap_seconds: float = 2.0
    #: After the retries fail, windows closing within this many seconds (wall clock) are reported
    #: unavailable without trying, so a down partner costs one window's retries, not each one's.
    unavailable_pause_seconds: float = 30.0
    #: Most selectors in one request (the server's ``max_batch``); larger windows are split.
    max_batch: int = 1 << 16  # psi.messages.MAX_BATCH
    #: Threads of the client's curve arithmetic, per worker.
    crypto_threads: int = 1
    #: Close an idle tenant's window after this many seconds of wall clock; 0: only by event
    #: time and at end of input (a bounded run uses 0).
    idle_flush_seconds: float = 60.0


@dataclasses.dataclass(frozen=True, slots=True)
class ApiSettings:
    """``igflow serve``: the GraphQL and REST API over the materialised stores."""

    host: str = "127.0.0.1"
    port: int = 8080
    #: ``production``: only allowlisted (persisted) operations run; ``development``: any query,
    #: and Apollo APQ may register new ones in memory.
    mode: str = "development"
    #: The persisted-query allowlist (JSON: id -> document); empty: ``api/persisted_queries.json``.
    persisted_queries: str = ""
    #: Most cost an operation may have (ariadne's cost validator: 1 per field, lists times their
    #: ``first``/``limit`` argument).
    max_query_cost: int = 200
    #: Per-tenant token bucket: refill rate (requests/s) and burst size.
    rate_limit_rps: float = 1000.0
    rate_limit_burst: int = 1000
    #: Failed authentications per client address: refill rate (per second) and burst. Past
    #: them, that address's requests are refused (429 ``AUTH_RATE_LIMITED``) before any key or
    #: token is checked, except credentials this process has already verified.
    auth_failure_rps: float = 2.0
    auth_failure_burst: int = 20
    #: How long an API key lookup is remembered while this process listens to Postgres for
    #: key changes (``NOTIFY``, so a revocation applies at once), and while it cannot listen.
    key_cache_seconds: float = 30.0
    key_cache_fallback_seconds: float = 1.0
    #: Prometheus ``/metrics`` is served on its own port (0: not at all), never on ``port``:
    #: its labels name tenants. Keep ``metrics_host`` on loopback unless a firewall guards it.
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9465
    #: JWT verification: accepted issuer and audience, the verification keys (a PEM public key,
    #: a JWKS JSON file, or a folder of either), the accepted algorithms and the clock leeway.
    jwt_issuer: str = "igflow-local"
    jwt_audience: str = "igflow-api"
    jwt_keys: str = ""
    jwt_algorithms: str = "RS256,ES256"
    jwt_leeway_seconds: float = 30.0
    #: Where the local stack keeps its signing key (``igflow token`` mints with it); empty:
    #: ``<stack_dir>/api``.
    dev_keys_dir: str = ""
    #: HMAC-SHA256 secret for signed webhook pushes (``X-Igflow-Signature``); empty: signed
    #: pushes are refused.
    webhook_secret: str = ""
    #: Subscription events are coalesced in windows of this many milliseconds.
    coalesce_ms: float = 100.0
    #: How long a publish waits for the broker's acknowledgement.
    publish_timeout_seconds: float = 5.0
    #: Largest request body accepted, in bytes; also the largest WebSocket message.
    max_body_bytes: int = 1 << 20
    #: Most tokens a GraphQL document may have: graphql-core's parser stops there
    #: (``QUERY_TOO_COSTLY``), before any of the work that grows with the text.
    max_query_tokens: int = 2000
    #: graphql-transport-ws: seconds a socket may stay open before its ``connection_init``
    #: (then it is closed with 4408), and most subscriptions one socket may hold at once.
    ws_init_timeout_seconds: float = 5.0
    ws_max_subscriptions: int = 100


@dataclasses.dataclass(frozen=True, slots=True)
class RunSettings:
    """How the dataflow runs."""

    #: Stop at the end offsets present at start (``False``: keep tailing).
    bounded: bool = True
    workers: int = 1
    #: Bytewax recovery store; empty disables recovery.
    recovery_dir: str = ""
    snapshot_seconds: float = 1.0
    epoch_seconds: float = 1.0
    metrics_port: int = 0
    log_level: str = "INFO"


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    """Everything the engine needs, read once."""

    stack_dir: str = ".stack"
    kafka: KafkaSettings = KafkaSettings()
    lake: LakeSettings = LakeSettings()
    stores: StoreSettings = StoreSettings()
    run: RunSettings = RunSettings()
    validate: ValidateSettings = ValidateSettings()
    drift: DriftSettings = DriftSettings()
    dedupe: DedupeSettings = DedupeSettings()
    score: ScoreSettings = ScoreSettings()
    quarantine: QuarantineSettings = QuarantineSettings()
    tenancy: TenancySettings = TenancySettings()
    psi: PsiSettings = PsiSettings()
    api: ApiSettings = ApiSettings()

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
    def catalog_properties(self) -> dict[str, str]:
        """Properties of the pyiceberg SQL catalog."""
        return {"type": "sql", "uri": self.lake.catalog_uri, "warehouse": self.warehouse}

    @classmethod
    def load(
        cls, environ: Mapping[str, str] | None = None, config_file: str | Path | None = None
    ) -> Settings:
        """Build the settings from defaults, an optional TOML file and ``IGFLOW_*`` variables."""
        env = dict(os.environ if environ is None else environ)
        data: dict[str, Any] = {}
        path = config_file or env.get("IGFLOW_CONFIG")
        if path:
            try:
                data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
            except (OSError, tomllib.TOMLDecodeError) as exc:
                msg = f"cannot read settings file {path}: {exc}"
                raise ConfigError(msg) from exc
        for name, (section, field) in _ALIASES.items():
            if name in env:
                data.setdefault(section, {})[field] = env[name]
        for key, raw in env.items():
            if not key.startswith("IGFLOW_") or key in _ALIASES or key == "IGFLOW_CONFIG":
                continue
            rest = key.removeprefix("IGFLOW_").lower()
            if rest == "stack_dir":
                data["stack_dir"] = raw
                continue
            section, _, field = rest.partition("_")
            if section in _SECTIONS and field in _SECTIONS[section]:
                data.setdefault(section, {})[field] = raw
        settings: Settings = _build(cls, data, "")
        return settings

    def with_changes(self, section: str, **changes: Any) -> Settings:
        """A copy with some fields of one section replaced (for CLI flags and tests)."""
        current = getattr(self, section)
        return dataclasses.replace(self, **{section: dataclasses.replace(current, **changes)})

    def as_dict(self, *, masked: bool = True) -> dict[str, Any]:
        """The effective settings; secrets masked unless ``masked`` is false."""
        out: dict[str, Any] = {"stack_dir": self.stack_dir, "warehouse": self.warehouse}
        for section in _SECTIONS:
            values = dataclasses.asdict(getattr(self, section))
            if masked:
                values = {k: mask(v) if k in _SECRET_FIELDS else v for k, v in values.items()}
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


#: Every section of :class:`Settings` (a field whose default is a settings dataclass) and its
#: field names, so a new section is configurable by environment without being listed here.
_SECTIONS: dict[str, frozenset[str]] = {
    f.name: frozenset(g.name for g in dataclasses.fields(f.default))
    for f in dataclasses.fields(Settings)
    if dataclasses.is_dataclass(f.default)
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


def _build(cls: type[Any], data: Mapping[str, Any], where: str) -> Any:
    hints = get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - known
    if unknown:
        msg = f"unknown setting(s) {sorted(unknown)} in [{where or 'top level'}]"
        raise ConfigError(msg)
    for name, raw in data.items():
        kind = hints[name]
        label = f"{where}.{name}" if where else name
        if dataclasses.is_dataclass(kind):
            if not isinstance(raw, Mapping):
                msg = f"setting {label} must be a table"
                raise ConfigError(msg)
            kwargs[name] = _build(kind, raw, label)  # type: ignore[arg-type]
        else:
            kwargs[name] = _coerce(kind, raw, label)
    return cls(**kwargs)


def _coerce(kind: Any, raw: Any, label: str) -> Any:
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in {"1", "true", "yes", "on"}:
            return True
        if text in {"0", "false", "no", "off"}:
            return False
        msg = f"setting {label} must be a boolean, got {raw!r}"
        raise ConfigError(msg)
    try:
        return kind(raw)
    except (TypeError, ValueError) as exc:
        msg = f"setting {label} must be {kind.__name__}, got {raw!r}"
        raise ConfigError(msg) from exc
