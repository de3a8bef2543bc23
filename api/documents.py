"""Parsed and validated GraphQL documents, cached by their text, with the operation-cost limit.

Parsing and validating a document is a pure function of its text and the schema (and of the
mode: production adds the introspection ban), and it dominated the cost of a request: on this
machine graphql-core took milliseconds to validate even ``tenantCoherence``, several times the
rest of the request. So each distinct text is parsed and validated once, and its result kept in a
bounded LRU (persisted queries are a handful of texts; ad-hoc texts in development mode evict
each other).

The cost limit is a validation rule of our own, so that it is part of that cached result: an
operation costs one per field it selects, fragments expanded wherever they are spread (a
fragment spread 50 times costs 50 times). The schema has no list fields, so no argument
multiplies a cost and no variable changes it; ariadne's ``cost_validator``, which evaluates
arguments with each request's variables, could not be cached and cost a new rule class per
request.
"""

from __future__ import annotations

import functools
from collections.abc import Collection
from typing import Any

from ariadne.validation.introspection_disabled import IntrospectionDisabledRule
from graphql import (
    ASTValidationRule,
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    parse,
    specified_rules,
    validate,
)
from graphql.utilities.type_info import TypeInfo

__all__ = ["Documents", "operation_cost"]

#: Distinct document texts kept parsed and validated.
CACHE_SIZE = 1024


def operation_cost(
    selections: SelectionSetNode | None,
    fragments: dict[str, FragmentDefinitionNode],
    seen: frozenset[str] = frozenset(),
) -> int:
    """Fields selected under ``selections``, fragments expanded (a cycle counts once; the
    spec's NoFragmentCycles rule refuses such a document anyway)."""
    if selections is None:
        return 0
    cost = 0
    for node in selections.selections:
        if isinstance(node, FieldNode):
            cost += 1 + operation_cost(node.selection_set, fragments, seen)
        elif isinstance(node, InlineFragmentNode):
            cost += operation_cost(node.selection_set, fragments, seen)
        elif isinstance(node, FragmentSpreadNode):
            name = node.name.value
            fragment = fragments.get(name)
            if fragment is not None and name not in seen:
                cost += operation_cost(fragment.selection_set, fragments, seen | {name})
    return cost


def _cost_rule(maximum: int) -> type[ASTValidationRule]:
    class CostLimit(ASTValidationRule):
        def enter_document(self, node: DocumentNode, *_args: Any) -> None:
            fragments = {
                d.name.value: d for d in node.definitions if isinstance(d, FragmentDefinitionNode)
            }
            for definition in node.definitions:
                if isinstance(definition, OperationDefinitionNode):
                    cost = operation_cost(definition.selection_set, fragments)
                    if cost > maximum:
                        self.report_error(
                            GraphQLError(
                                f"The operation costs {cost}; the limit is {maximum}.",
                                definition,
                                extensions={
                                    "cost": {
                                        "requestedQueryCost": cost,
                                        "maximumAvailable": maximum,
                                    }
                                },
                            )
                        )

    return CostLimit


class Documents:
    """The parse-and-validate cache of one schema and mode."""

    def __init__(self, schema: GraphQLSchema, *, max_cost: int, introspection: bool) -> None:
        self._schema = schema
        rules: list[type[ASTValidationRule]] = [*specified_rules, _cost_rule(max_cost)]
        if not introspection:
            rules.append(IntrospectionDisabledRule)
        self._rules = tuple(rules)
        self.prepare = functools.lru_cache(maxsize=CACHE_SIZE)(self._prepare)

    def _prepare(self, text: str) -> tuple[DocumentNode | None, tuple[GraphQLError, ...]]:
        try:
            document = parse(text)
        except GraphQLError as error:
            return None, (error,)
        return document, tuple(validate(self._schema, document, self._rules))

    def parser(self, _context: Any, data: dict[str, Any]) -> DocumentNode:
        """Ariadne's ``query_parser``: the cached document (a syntax error raises)."""
        document, errors = self.prepare(data["query"])
        if document is None:
            raise errors[0]
        return document

    def validator(
        self,
        schema: GraphQLSchema,
        document_ast: DocumentNode,
        rules: Collection[type[ASTValidationRule]] | None = None,
        max_errors: int | None = None,
        type_info: TypeInfo | None = None,
    ) -> list[GraphQLError]:
        """Ariadne's ``query_validator``: the cached verdict on the document's text (our rules,
        whatever ``rules`` ariadne passes)."""
        document = document_ast
        source = document.loc.source.body if document.loc is not None else None
        if source is None:
            return list(validate(self._schema, document, self._rules))
        return list(self.prepare(source)[1])
