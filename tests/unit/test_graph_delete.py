"""What :meth:`GraphWriter.delete_tenants` and :meth:`~GraphWriter.drop_scratch` send, against an
in-memory graph of the sink's model that answers their ``DETACH DELETE`` chunks: each transaction
takes at most two edges a deleted node along, whatever a tenant's number of signals.

Deleting the ``Tenant`` nodes first took every ``EMITS`` edge of their signals in one transaction
(a scratch graph of 200,000 signals over ten tenants: 200,000 edges, past Neo4j's transaction
memory at the stack's heap), so no large scratch graph was ever dropped."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sinks import graph
from sinks.graph import GraphWriter
from sinks.graph_model import NODE_LABELS

_MATCH = re.compile(r"MATCH \(n:(\w+)\)")


class _Graph:
    """Tenants, each with ``signals`` signals (a provenance each) and a score node."""

    def __init__(self, prefix: str, tenants: Sequence[int]) -> None:
        self.prefix = prefix
        self.nodes: dict[str, set[str]] = {label: set() for label in NODE_LABELS}
        self.edges: set[tuple[str, str]] = set()
        for t, signals in enumerate(tenants):
            tenant = f"t{t}"
            self._node("Tenant", tenant)
            self._node("CoherenceScore", f"c{t}")
            self.edges.add((tenant, f"c{t}"))
            for i in range(signals):
                self._node("Signal", f"s{t}.{i}")
                self._node("Provenance", f"p{t}.{i}")
                self.edges |= {(tenant, f"s{t}.{i}"), (f"s{t}.{i}", f"p{t}.{i}")}
        self.transactions: list[tuple[int, int]] = []  # (nodes, edges) each deleted

    def _node(self, label: str, name: str) -> None:
        self.nodes[label].add(name)

    def send(
        self, write: bool, statements: Sequence[tuple[str, dict[str, Any]]]
    ) -> list[list[dict[str, Any]]]:
        assert write
        out = []
        nodes = edges = 0
        for query, params in statements:
            assert "DETACH DELETE n" in query, query
            label = _MATCH.search(query)
            assert label is not None, query
            name = label[1].removeprefix(self.prefix)
            chunk = sorted(self.nodes[name])[: params["limit"]]
            self.nodes[name] -= set(chunk)
            gone = {e for e in self.edges if e[0] in chunk or e[1] in chunk}
            self.edges -= gone
            nodes += len(chunk)
            edges += len(gone)
            out.append([{"c": len(chunk)}])
        self.transactions.append((nodes, edges))
        return out


def test_the_delete_order_holds_every_label_once() -> None:
    assert sorted(graph._DELETE_ORDER) == sorted(NODE_LABELS)


@settings(max_examples=40, deadline=None)
@given(
    tenants=st.lists(st.integers(min_value=0, max_value=60), min_size=1, max_size=4),
    chunk=st.integers(min_value=1, max_value=25),
    scratch=st.booleans(),
)
def test_a_delete_takes_at_most_two_edges_a_node(
    tenants: list[int], chunk: int, scratch: bool
) -> None:
    prefix = "replay_x_" if scratch else ""
    model = _Graph(prefix, tenants)
    writer = GraphWriter("bolt://127.0.0.1:9", "neo4j", "unused", label_prefix=prefix)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(graph, "_DELETE_CHUNK", chunk)
        patch.setattr(writer, "_send", model.send)
        patch.setattr(writer, "_schema", lambda _statement: None)  # the indexes: not modelled
        deleted = writer.drop_scratch() if scratch else writer.delete_tenants("t")
    assert deleted == sum(2 * n + 2 for n in tenants)
    assert not any(model.nodes.values())
    assert not model.edges
    for nodes, edges in model.transactions:
        assert nodes <= chunk
        assert edges <= 2 * nodes, model.transactions
