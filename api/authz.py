"""Authorization: may this principal do this action on this tenant? ``policies/graphql.rego``.

Every resolver and REST handler asks :meth:`Authorizer.decide` before it touches a store. The
policy sees only the principal's tenant and scopes, the action and the tenant named; its answer
is a pure function of those and of the compiled policy, so it is cached (bounded LRU): at
~1,000 requests/s a request costs a dict lookup, not a Rego evaluation (~0.4 ms).

``policy_version`` is the version of the whole policy bundle (every ``*.rego`` and ``*.json`` of
the folder, :func:`operators.tenancy.policy_bundle_version`), computed from the same bytes that are
compiled, and stamped on every decision for provenance.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

from api.auth import Principal
from core.errors import SchemaError
from core.reasons import ReasonCode
from core.rego import CompiledQuery, bundle_digest, read_bundle
from core.settings import Settings

# The tenancy step's bundle reading, shared so both stamp the same version for the same bytes.

__all__ = ["ACTIONS", "CACHE_SIZE", "POLICY_FILE", "Authorizer", "Decision"]

#: The policy, inside the policy folder.
POLICY_FILE = "graphql.rego"
#: The actions the policy grants, and the scope each needs (documentation: the policy decides).
ACTIONS = {"read": "coherence:read", "write": "coherence:write", "platform": "platform:read"}
#: Distinct questions one :class:`Authorizer` remembers (least recently used ones go first).
CACHE_SIZE = 100_000

_QUERY = "decision := data.igflow.graphql.decision"
_REASONS = {r.value: r for r in (ReasonCode.TENANT_FORBIDDEN, ReasonCode.SCOPE_MISSING)}


@dataclasses.dataclass(frozen=True, slots=True)
class Decision:
    """The policy's answer: allowed, or the one reason why not."""

    allow: bool
    #: ``None`` when allowed; ``TENANT_FORBIDDEN`` or ``SCOPE_MISSING`` when denied.
    reason: ReasonCode | None
    #: The policy bundle's version.
    policy_version: str = ""


class Authorizer:
    """The compiled ``graphql.rego``; :meth:`decide` is thread-safe (one interpreter, one lock,
    and a thread-safe cache in front of them)."""

    def __init__(self, source: str, version: str, cache_size: int = CACHE_SIZE) -> None:
        """Compile ``source`` (Rego, package ``igflow.graphql``) and probe it; ``version`` names
        the bundle it came from. ``SchemaError`` if it does not compile or decides nothing."""
        self.policy_version = version
        self._query = CompiledQuery("GraphQL", "graphql", source, _QUERY)
        self._cached = functools.lru_cache(maxsize=cache_size)(self._evaluate)
        # Fail at start-up, not on the first request.
        self._evaluate("", frozenset(), "read", "")

    @classmethod
    def load(cls, policies_dir: Path, cache_size: int = CACHE_SIZE) -> Authorizer:
        """Load ``graphql.rego`` from ``policies_dir``; ``SchemaError`` if missing or unusable."""
        files = read_bundle(policies_dir)
        if POLICY_FILE not in files:
            msg = f"GraphQL policy missing: {policies_dir / POLICY_FILE}"
            raise SchemaError(msg)
        try:
            source = files[POLICY_FILE].decode("utf-8")
        except UnicodeDecodeError as exc:
            msg = f"GraphQL policy is not UTF-8: {policies_dir / POLICY_FILE}"
            raise SchemaError(msg) from exc
        return cls(source, bundle_digest(files), cache_size)

    @classmethod
    def from_settings(cls, settings: Settings) -> Authorizer:
        """:meth:`load` from ``settings.policies_dir``."""
        return cls.load(settings.policies_dir)

    def decide(self, principal: Principal, action: str, tenant_id: str) -> Decision:
        """May ``principal`` do ``action`` (``"read"``/``"write"``) on ``tenant_id``'s data, or
        ``"platform"`` (every tenant's dashboard rollup; ``tenant_id`` ``""``)?

        ``SchemaError`` if the policy gives no well-formed decision (a policy bug).
        """
        decision: Decision = self._cached(principal.tenant_id, principal.scopes, action, tenant_id)
        return decision

    def _evaluate(
        self, caller_tenant: str, scopes: frozenset[str], action: str, tenant_id: str
    ) -> Decision:
        term = {
            "principal": {"tenant_id": caller_tenant, "scopes": sorted(scopes)},
            "action": action,
            "tenant_id": tenant_id,
        }
        result = self._query.evaluate(term)
        if not isinstance(result, dict) or not isinstance(result.get("allow"), bool):
            msg = "GraphQL policy gave no decision"
            raise SchemaError(msg)
        if result["allow"]:
            return Decision(True, None, self.policy_version)
        reason = _REASONS.get(result.get("reason", ""))
        if reason is None:
            msg = "GraphQL policy denied without a known reason"
            raise SchemaError(msg)
        return Decision(False, reason, self.policy_version)
