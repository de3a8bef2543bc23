"""Where a replay lands besides its scratch namespace: scratch names in the serving stores.

A replay into the serving stores writes the same keys, nodes and rows as the flow, under names
derived from its namespace ``NS`` (:func:`scratch_stores`): Redis keys and channels
``replay:NS:tenant:<t>:…`` (``stores.key_prefix``), graph labels ``replay_NS_Tenant`` and so on
(``stores.graph_label_prefix``), Postgres ``replay_NS.coherence_scores``
(``stores.postgres_schema``). Each store's guard (a ``seq`` or offset mark, like the lake's
ledger) would skip what a scratch copy already holds, so :func:`check_scratch` refuses a
namespace with tables and scratch stores holding anything, before anything is created.
"""

from __future__ import annotations

import re

from pyiceberg.catalog import Catalog

from core.catalog import catalog
from core.errors import ConfigError
from core.settings import Settings, StoreSettings

__all__ = ["check_scratch", "check_scratch_name", "scratch_names", "scratch_stores"]

#: What ``--into`` may be when it also names scratch keys, labels and a schema.
_SCRATCH_NAME = re.compile(r"[A-Za-z0-9_]{1,40}")


def check_scratch_name(into: str) -> None:
    """:class:`ConfigError` unless ``into`` can name scratch keys, labels and a schema."""
    if _SCRATCH_NAME.fullmatch(into) is None:
        msg = (
            f"--into {into!r} also names the scratch Redis keys, graph labels and Postgres "
            "schema: use letters, digits and _ (at most 40), or pass --lake-only"
        )
        raise ConfigError(msg)


def scratch_stores(settings: Settings, into: str) -> Settings:
    """``settings`` writing the serving stores under scratch names derived from ``into``.

    Redis keys and channels ``replay:<into>:tenant:<t>:…``, graph labels ``replay_<into>_Tenant``
    and so on, Postgres ``replay_<into>.coherence_scores``; serving-store dead letters to the
    topic ``<dlq_topic>.replay.<into>``. ``into`` must be letters, digits and ``_`` (at most 40):
    it becomes part of a label and a schema name (:class:`ConfigError` otherwise).
    """
    check_scratch_name(into)
    return settings.with_changes(
        "stores",
        key_prefix=f"replay:{into}:",
        graph_label_prefix=f"replay_{into}_",
        postgres_schema=f"replay_{into}",
    ).with_changes("kafka", dlq_topic=f"{settings.kafka.dlq_topic}.replay.{into}")


def scratch_names(stores: StoreSettings) -> dict[str, str]:
    """The serving stores ``stores`` enables, and the scratch name each writes under."""
    names = {
        "redis": stores.key_prefix,
        "graph": stores.graph_label_prefix,
        "postgres": f"{stores.postgres_schema}.coherence_scores",
    }
    return {store: name for store, name in names.items() if store in stores.enabled}


def check_scratch(
    settings: Settings, into: str, stores: StoreSettings, cat: Catalog | None = None
) -> None:
    """Refuse the flow's own namespace (of ``settings``), and scratch ``stores`` that hold
    anything already (their guards would skip what is there: the ledger, the seq and offset
    marks). ``cat``: the catalog of ``settings``, if already made."""
    if into == settings.lake.namespace:
        msg = f"--into {into} is the flow's own namespace; replay needs a scratch namespace"
        raise ConfigError(msg)
    cat = cat or catalog(settings)
    if cat.namespace_exists(into) and cat.list_tables(into):
        msg = f"namespace {into} already has tables; replay needs a new (or empty) namespace"
        raise ConfigError(msg)
    # Each store's client is imported only when the store is enabled: a --lake-only replay
    # imports none of them (the graph's driver alone brought neo4j and pandas, ~0.3 CPU s).
    held: list[str] = []
    if "redis" in stores.enabled:
        from sinks.redis import prefix_in_use

        if prefix_in_use(stores.redis_url, stores.key_prefix):
            held.append(f"Redis keys {stores.key_prefix}*")
    if "graph" in stores.enabled:
        from sinks.graph import GraphWriter

        graph = GraphWriter.for_stores(stores)
        if any(graph.counts().values()):
            held.append(f"graph labels {stores.graph_label_prefix}*")
    if "postgres" in stores.enabled:
        from sinks.postgres import scratch_rows

        if scratch_rows(stores.postgres_dsn, stores.postgres_schema):
            held.append(f"Postgres {stores.postgres_schema}.coherence_scores")
    if held:
        msg = (
            f"the scratch stores of {into} already hold data ({', '.join(held)}); replay needs "
            "empty ones: pick another --into, or clear them"
        )
        raise ConfigError(msg)
