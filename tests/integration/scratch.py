"""What an integration test creates on the shared local stack, dropped when the test ends.

Tests share one stack for the whole session, so each works under names of its own (a random
tag) and registers them here: Kafka topics and consumer groups, Iceberg namespaces (their
tables purged: metadata and files; namespaces named ``<ns>_...`` after them too), registry
subjects, tenants (their registry row and every
serving-store entry: Redis ``tenant:<id>:*`` keys, graph nodes, ``coherence_scores`` rows, keys),
Redis key prefixes, graph label prefixes and Postgres schemas. :meth:`Scratch.drop` removes
them all and raises if any could not be removed, so a leak fails the test that caused it.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterable

import httpx
import psycopg
import redis
from confluent_kafka.admin import AdminClient
from psycopg import sql
from pyiceberg.exceptions import NoSuchNamespaceError

from core.catalog import catalog
from core.settings import Settings
from sinks.dlq import dlq_marks_topic
from sinks.graph import GraphWriter
from tenancy.redis_acl import acl_username
from tenancy.registry import upsert_tenant

__all__ = ["Scratch"]

_TIMEOUT_S = 30.0


class Scratch:
    """The names one test created; see the module docstring."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.topics: set[str] = set()
        self.groups: set[str] = set()
        self.namespaces: set[str] = set()
        self.subjects: set[str] = set()
        self.tenants: set[str] = set()
        self.tenant_prefixes: set[str] = set()
        self.redis_prefixes: set[str] = set()
        self.graph_label_prefixes: set[str] = set()
        self.postgres_schemas: set[str] = set()

    def topics_of(self, settings: Settings) -> Settings:
        """Register the signal and DLQ topics ``settings`` names (and the DLQ's marks topic);
        returns it."""
        dlq = settings.kafka.dlq_topic
        self.topics |= {settings.kafka.topic, dlq, dlq_marks_topic(dlq)}
        return settings

    def lake_of(self, settings: Settings) -> Settings:
        """Register the Iceberg namespace ``settings`` names (it must be this test's own, never
        the stack's); returns it."""
        self.namespaces.add(settings.lake.namespace)
        return settings

    def tenant(self, prefix: str) -> str:
        """A new tenant ``<prefix>-<random>``, registered (active, any source) and dropped with
        the rest."""
        tenant_id = f"{prefix}-{uuid.uuid4().hex[:8]}"
        self.tenants.add(tenant_id)
        upsert_tenant(self._settings.stores.postgres_dsn, tenant_id)
        return tenant_id

    def replay_into(self, namespace: str) -> None:
        """Register what ``igflow replay --into NAMESPACE`` creates (replay/scratch.py names)."""
        self.namespaces.add(namespace)
        self.redis_prefixes.add(f"replay:{namespace}:")
        self.graph_label_prefixes.add(f"replay_{namespace}_")
        self.postgres_schemas.add(f"replay_{namespace}")

    def drop(self) -> None:
        """Remove everything registered; ``RuntimeError`` naming what could not be removed."""
        failures: list[str] = []
        steps: list[tuple[str, Callable[[], None]]] = [
            ("kafka topics", self._drop_topics),
            ("kafka groups", self._drop_groups),
            ("iceberg namespaces", self._drop_namespaces),
            ("registry subjects", self._drop_subjects),
            ("postgres", self._drop_postgres),
            ("redis", self._drop_redis),
            ("graph", self._drop_graph),
        ]
        for what, step in steps:
            try:
                step()
            except Exception as exc:  # every kind of leftover is reported, then the rest goes on
                failures.append(f"{what}: {exc!r}")
        if failures:
            msg = "could not drop this test's scratch names: " + "; ".join(failures)
            raise RuntimeError(msg)

    def _admin(self) -> AdminClient:
        return AdminClient(self._settings.kafka.client_config())

    def _drop_topics(self) -> None:
        if not self.topics:
            return
        admin = self._admin()
        existing = set(admin.list_topics(timeout=_TIMEOUT_S).topics)
        doomed = sorted(self.topics & existing)
        if doomed:
            for future in admin.delete_topics(doomed, operation_timeout=_TIMEOUT_S).values():
                future.result(timeout=_TIMEOUT_S)

    def _drop_groups(self) -> None:
        if not self.groups:
            return
        admin = self._admin()
        listed = admin.list_consumer_groups(request_timeout=_TIMEOUT_S).result(_TIMEOUT_S)
        existing = {g.group_id for g in listed.valid}
        doomed = sorted(self.groups & existing)
        if doomed:
            futures = admin.delete_consumer_groups(doomed, request_timeout=_TIMEOUT_S)
            for future in futures.values():
                future.result(timeout=_TIMEOUT_S)

    def _drop_namespaces(self) -> None:
        """The registered namespaces and those named after them (``<ns>_replay``, ``<ns>_p2``:
        a test's replays and second runs)."""
        if not self.namespaces:
            return
        cat = catalog(self._settings)
        names = {".".join(n) for n in cat.list_namespaces()}
        doomed = {n for n in names for ns in self.namespaces if n == ns or n.startswith(f"{ns}_")}
        for namespace in sorted(doomed):
            try:
                tables = cat.list_tables(namespace)
            except NoSuchNamespaceError:
                continue
            for identifier in tables:
                cat.purge_table(identifier)
            with contextlib.suppress(NoSuchNamespaceError):
                cat.drop_namespace(namespace)

    def _drop_subjects(self) -> None:
        url = self._settings.kafka.schema_registry_url.rstrip("/")
        with httpx.Client(timeout=_TIMEOUT_S, verify=self._settings.client_verify()) as client:
            for subject in sorted(self.subjects):
                for query in ("", "?permanent=true"):  # soft delete first, as Confluent asks
                    answer = client.delete(f"{url}/subjects/{subject}{query}")
                    if answer.status_code not in (200, 404):
                        answer.raise_for_status()

    def _drop_postgres(self) -> None:
        if not (self.tenants or self.tenant_prefixes or self.postgres_schemas):
            return
        patterns = [f"{p}%" for p in sorted(self.tenant_prefixes)]
        with psycopg.connect(self._settings.stores.postgres_dsn, autocommit=True) as conn:
            # Data keys before the KEKs they reference; the key audit of a test's tenants too,
            # and the record of their key changes (which the deletes above it just moved).
            tables = ("tenant_data_keys", "tenant_keks", "key_audit", "tenant_key_epochs")
            for table in (*tables, "coherence_scores", "api_keys", "tenants"):
                conn.execute(
                    sql.SQL(
                        "DELETE FROM {} WHERE tenant_id = ANY(%s) OR tenant_id LIKE ANY(%s)"
                    ).format(sql.Identifier(table)),
                    (sorted(self.tenants), patterns),
                )
            for schema in sorted(self.postgres_schemas):
                conn.execute(
                    sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
                )

    def _drop_redis(self) -> None:
        patterns = [f"tenant:{t}:*" for t in sorted(self.tenants)]
        patterns += [f"tenant:{p}*" for p in sorted(self.tenant_prefixes)]
        patterns += [f"{p}*" for p in sorted(self.redis_prefixes)]
        if not patterns:
            return
        client = redis.Redis.from_url(self._settings.stores.redis_url)
        try:
            for pattern in patterns:
                _delete_keys(client, client.scan_iter(match=pattern, count=1000))
            if self.tenants:  # the API's tenant users (tenancy/redis_acl.py)
                client.acl_deluser(*(acl_username(t) for t in sorted(self.tenants)))
        finally:
            client.close()

    def _drop_graph(self) -> None:
        stores = self._settings.stores
        if self.tenants or self.tenant_prefixes:
            writer = GraphWriter.for_stores(stores, label_prefix="")
            for prefix in sorted(self.tenant_prefixes | self.tenants):
                writer.delete_tenants(prefix)
        for label_prefix in sorted(self.graph_label_prefixes):
            GraphWriter.for_stores(stores, label_prefix=label_prefix).drop_scratch()


def _delete_keys(client: redis.Redis, keys: Iterable[bytes]) -> None:
    chunk: list[bytes] = []
    for key in keys:
        chunk.append(key)
        if len(chunk) == 500:
            client.unlink(*chunk)
            chunk.clear()
    if chunk:
        client.unlink(*chunk)
