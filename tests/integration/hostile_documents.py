"""GraphQL documents built to make a server work hard (issue 12, point 7), for the API's tests
and for ``benchmarks/api.py``'s hostile-documents section."""

from __future__ import annotations

__all__ = ["aliases", "conflicting_fields", "nested_fragments", "nested_selections"]


def nested_fragments(levels: int, fan: int = 10) -> str:
    """Each fragment spreads the one below ``fan`` times: ``fan ** levels`` fields once expanded
    (7 levels: a 654-byte document that took 4.5-7.7 s to cost)."""
    text = 'fragment F0 on Query { tenantCoherence(tenantId: "t") { score } }\n'
    for i in range(1, levels + 1):
        text += f"fragment F{i} on Query {{{f' ...F{i - 1}' * fan} }}\n"
    return f"query {{ ...F{levels} }}\n{text}"


def aliases(count: int) -> str:
    """``count`` aliased fields (50,000: 868 KB, 3.1 s before the token limit)."""
    return "{ " + " ".join(f"a{i}: __typename" for i in range(count)) + " }"


def conflicting_fields(count: int) -> str:
    """``count`` same-named fields with different arguments: within the cost limit (2 each) for
    ``count`` up to 100, and quadratic work for the spec's OverlappingFieldsCanBeMerged rule."""
    fields = " ".join(f'tenantCoherence(tenantId: "{i}") {{ score }}' for i in range(count))
    return "{ " + fields + " }"


def nested_selections(depth: int) -> str:
    """Selections nested ``depth`` deep (graphql-core refuses deep ones while parsing)."""
    return "{" + "tenantCoherence(tenantId: $t) {" * depth + "score" + "}" * (depth + 1)
