"""Parsed and validated GraphQL documents, cached by their text, with the size and cost limits.

Parsing and validating a document is a pure function of its text and the schema (and of the
mode: production adds the introspection ban), and it dominated the cost of a request: on this
machine graphql-core took milliseconds to validate even ``tenantCoherence``, several times the
rest of the request. So each distinct text is parsed and validated once, and its result kept in a
bounded LRU (persisted queries are a handful of texts; ad-hoc texts in development mode evict
each other).

A hostile text must not hold the event loop, so the work on one is bounded, cheapest check first:

1. **tokens**: graphql-core's parser stops after ``max_tokens`` tokens (``QUERY_TOO_COSTLY``);
   a document nested past the interpreter's recursion limit is ``BAD_REQUEST``;
2. **cost**, before any validation rule runs: each operation and each fragment costs one per
   field it selects, fragments expanded wherever they are spread (a fragment spread 50 times
   costs 50 times). Each fragment is costed once (memoized), and counting stops as soon as a
   definition passes the limit, so the work is linear in the text even for nested spreads whose
   expansion is astronomical. The schema has no list fields, so no argument multiplies a cost
   and no variable changes it (ariadne's ``cost_validator``, which evaluates arguments with each
   request's variables, could not be cached and cost a new rule class per request);
3. **validation** by graphql-core's rules, only for a document within both limits. Some rules are
   quadratic in the fields of a selection set (OverlappingFieldsCanBeMerged: 200 same-named
   fields took 226 ms here), so a text not yet cached is prepared on a worker thread
   (:meth:`Documents.prepare_async`), never on the event loop; cached texts are answered inline.
"""

from __future__ import annotations

import asyncio
import collections
import gc
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ariadne.validation.introspection_disabled import IntrospectionDisabledRule
from graphql import (
    ASTValidationRule,
    DocumentNode,
    ExecutableDefinitionNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLSchema,
    InlineFragmentNode,
    SelectionSetNode,
    parse,
    specified_rules,
    validate,
)
from graphql.utilities.type_info import TypeInfo

from core.reasons import ReasonCode

__all__ = ["Documents", "Prepared", "costliest_definition"]

#: Distinct document texts kept parsed and validated, and their total length in characters.
#: Every cached syntax tree is walked by each full garbage collection (about 7 objects a token):
#: 1,024 hostile 4 KB texts made the collections of the whole process last 100-400 ms here, so
#: the cache is bounded by size too (the persisted queries are ~120 characters each).
CACHE_SIZE = 1024
CACHE_CHARS = 64 * 1024

#: A text's verdict: its document (``None`` if it does not parse) and its errors.
Prepared = tuple[DocumentNode | None, tuple[GraphQLError, ...]]

#: graphql-core's message when ``max_tokens`` stops the parser.
_TOKEN_LIMIT_MESSAGE = "Document contains more than"


class _Costs:
    """The cost of each definition of one document, counted until it passes ``maximum``."""

    def __init__(self, document: DocumentNode, maximum: int) -> None:
        self._maximum = maximum
        self._fragments = {
            d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
        }
        #: Fragment name -> its cost (capped at ``maximum + 1``); ``0`` while being costed, so a
        #: cycle (which the spec's NoFragmentCycles rule refuses) counts once.
        self._memo: dict[str, int] = {}

    def of(self, selections: SelectionSetNode | None) -> int:
        """Fields selected under ``selections``, fragments expanded; ``maximum + 1`` as soon as
        the count passes ``maximum``."""
        if selections is None:
            return 0
        over = self._maximum + 1
        cost = 0
        for node in selections.selections:
            if isinstance(node, FieldNode):
                cost += 1 + self.of(node.selection_set)
            elif isinstance(node, InlineFragmentNode):
                cost += self.of(node.selection_set)
            elif isinstance(node, FragmentSpreadNode):
                cost += self._fragment(node.name.value)
            if cost >= over:
                return over
        return cost

    def _fragment(self, name: str) -> int:
        known = self._memo.get(name)
        if known is not None:
            return known
        fragment = self._fragments.get(name)
        if fragment is None:  # unknown: KnownFragmentNames refuses it
            return 0
        self._memo[name] = 0
        cost = self.of(fragment.selection_set)
        self._memo[name] = cost
        return cost


def costliest_definition(document: DocumentNode, maximum: int) -> ExecutableDefinitionNode | None:
    """The first operation or fragment of ``document`` that costs more than ``maximum``."""
    costs = _Costs(document, maximum)
    for definition in document.definitions:
        if (
            isinstance(definition, ExecutableDefinitionNode)
            and costs.of(definition.selection_set) > maximum
        ):
            return definition
    return None


class Documents:
    """The parse-and-validate cache of one schema and mode."""

    def __init__(
        self,
        schema: GraphQLSchema,
        *,
        max_cost: int,
        introspection: bool,
        max_tokens: int = 2000,
    ) -> None:
        self._schema = schema
        self._max_cost = max_cost
        self._max_tokens = max_tokens
        rules: list[type[ASTValidationRule]] = list(specified_rules)
        if not introspection:
            rules.append(IntrospectionDisabledRule)
        self._rules = tuple(rules)
        # Read and written on the event loop's thread only (the worker computes, the loop
        # stores), so the verdict prepare_async just stored is still there when ariadne's
        # parser and validator ask for it, with no await in between.
        self._cache: collections.OrderedDict[str, Prepared] = collections.OrderedDict()
        self._chars = 0
        # One thread: documents queue behind each other there, not in front of the event loop,
        # and never take the default executor's threads from the stores' and broker's calls.
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="igflow-graphql-documents")

    def cached(self, text: str) -> Prepared | None:
        """The verdict on ``text`` if it is cached (and then the most recently used)."""
        prepared = self._cache.get(text)
        if prepared is not None:
            self._cache.move_to_end(text)
        return prepared

    def prepare(self, text: str) -> Prepared:
        """The verdict on ``text``, computed here if it is not cached."""
        prepared = self.cached(text)
        if prepared is None:
            prepared = self._prepare(text)
            self._remember(text, prepared)
        return prepared

    def _remember(self, text: str, prepared: Prepared) -> None:
        """Cache ``text``'s verdict; older entries leave until the cache is within its bounds,
        but the newest always stays (the request that made it is about to use it)."""
        self._cache[text] = prepared
        self._chars += len(text)
        while len(self._cache) > 1 and (len(self._cache) > CACHE_SIZE or self._chars > CACHE_CHARS):
            old, _verdict = self._cache.popitem(last=False)
            self._chars -= len(old)

    async def prepare_async(self, text: str) -> Prepared:
        """:meth:`prepare` off the event loop for a text that is not cached yet."""
        prepared = self.cached(text)
        if prepared is not None:
            return prepared
        loop = asyncio.get_running_loop()
        prepared = await loop.run_in_executor(self._worker, self._prepare_collected, text)
        if text not in self._cache:  # another request may have stored it meanwhile
            self._remember(text, prepared)
        return self._cache[text]

    def _prepare_collected(self, text: str) -> Prepared:
        """:meth:`prepare` with the cyclic garbage it makes freed young.

        graphql-core's OverlappingFieldsCanBeMerged leaves ~16,000 objects in reference cycles
        per validation of 100 same-named fields. Collected as they aged, they made gen-2
        collections of 100-400 ms here, each holding the GIL, and so the event loop. With the
        collector paused while the document is prepared, they are all still in the youngest
        generation afterwards, and one collection of it frees them (6-16 ms here).
        """
        if not gc.isenabled():
            return self._prepare(text)
        gc.disable()
        try:
            return self._prepare(text)
        finally:
            # Collected before the collector is on again: enabled first, the next allocation
            # on the event loop's thread could start that collection there instead.
            gc.collect(0)
            gc.enable()

    def close(self) -> None:
        self._worker.shutdown(wait=False, cancel_futures=True)

    def _prepare(self, text: str) -> Prepared:
        try:
            document = parse(text, max_tokens=self._max_tokens)
        except GraphQLError as error:
            if _TOKEN_LIMIT_MESSAGE in error.message:
                return None, (
                    GraphQLError(
                        f"The document has more than {self._max_tokens} tokens, the limit.",
                        extensions={"code": ReasonCode.QUERY_TOO_COSTLY.value},
                    ),
                )
            # Without its traceback: kept in the cache, its frames would keep the parser and
            # every token it read alive.
            return None, (error.with_traceback(None),)
        except RecursionError:
            return None, (_too_deep(),)
        _unlink_tokens(document)
        try:
            return document, self._verdict(document)
        except RecursionError:
            return None, (_too_deep(),)

    def _verdict(self, document: DocumentNode) -> tuple[GraphQLError, ...]:
        costly = costliest_definition(document, self._max_cost)
        if costly is not None:
            kind = "fragment" if isinstance(costly, FragmentDefinitionNode) else "operation"
            return (
                GraphQLError(
                    f"The {kind} costs more than {self._max_cost}, the limit.",
                    costly,
                    extensions={
                        "code": ReasonCode.QUERY_TOO_COSTLY.value,
                        "cost": {"maximumAvailable": self._max_cost},
                    },
                ),
            )
        return tuple(validate(self._schema, document, self._rules))

    def parser(self, _context: Any, data: dict[str, Any]) -> DocumentNode:
        """Ariadne's ``query_parser``: the cached document (a syntax error raises)."""
        document, errors = self.prepare(data["query"])
        if document is None:
            # A copy: raising the cached error itself would chain each request's traceback
            # (its frames and their locals, the request's body among them) onto it for good.
            error = errors[0]
            raise GraphQLError(
                error.message,
                error.nodes,
                error.source,
                error.positions,
                error.path,
                extensions=error.extensions,
            )
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
            return list(self._verdict(document))
        return list(self.prepare(source)[1])


def _unlink_tokens(document: DocumentNode) -> None:
    """Drop the lexer's back links: a syntax tree's tokens are a doubly linked list, a reference
    cycle that only the cyclic collector frees, on whichever thread it runs (an evicted tree's
    tokens showed up as gen-1 collections of 58 ms and more on the event loop). Singly linked,
    they go as soon as the tree does. Nothing reads ``prev`` once the parser is done."""
    token = document.loc.start_token if document.loc is not None else None
    while token is not None:
        token.prev = None
        token = token.next


def _too_deep() -> GraphQLError:
    return GraphQLError(
        "The document nests too deeply.", extensions={"code": ReasonCode.BAD_REQUEST.value}
    )
