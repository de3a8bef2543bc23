"""The PSI policy: ``policies/psi.rego`` evaluated with regopy, plus the agreements it reads.

Both sides ask :meth:`PsiPolicy.decide` before any evaluation: the server about the calling
partner, the client about the server it is about to send selectors to. A denial carries exactly
one :class:`~core.reasons.ReasonCode` (``POLICY_GEO_BLOCK``, ``THRESHOLD_NOT_MET`` or
``RATE_LIMITED``); the policy never sees a selector, only counts.

``policy_version`` is the SHA-256 of the Rego source and the data document, for provenance.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from core.errors import ConfigError, SchemaError
from core.reasons import ReasonCode
from core.rego import CompiledQuery
from core.resources import policies_dir
from psi.messages import PsiMode

__all__ = [
    "DEFAULT_POLICY_PATH",
    "Agreement",
    "Decision",
    "PolicyConfig",
    "PolicyInput",
    "PsiPolicy",
    "policy_config",
]

#: The policy in the repository's ``policies/`` folder.
DEFAULT_POLICY_PATH = policies_dir() / "psi.rego"
_QUERY = "decision := data.igflow.psi.decision"
_REASONS = {
    r.value: r
    for r in (ReasonCode.POLICY_GEO_BLOCK, ReasonCode.THRESHOLD_NOT_MET, ReasonCode.RATE_LIMITED)
}


@dataclasses.dataclass(frozen=True, slots=True)
class Agreement:
    """What one partner may do: modes, regions it may be in, minimum batch, requests per window."""

    partner_id: str
    modes: frozenset[PsiMode] = frozenset(PsiMode)
    regions: frozenset[str] = frozenset({"US"})
    min_batch: int = 100
    max_requests: int = 60


@dataclasses.dataclass(frozen=True, slots=True)
class PolicyConfig:
    """The data document: agreements, a global minimum batch, residency to regions, window."""

    agreements: tuple[Agreement, ...] = ()
    min_batch: int = 1
    residency_allows: Mapping[str, frozenset[str]] = dataclasses.field(
        default_factory=lambda: {"US": frozenset({"US"})}
    )
    #: Length of the rate-limit window, in seconds.
    window_seconds: float = 60.0

    def document(self) -> dict[str, Any]:
        """The ``data.psi`` JSON document the Rego policy reads."""
        return {
            "agreements": {
                a.partner_id: {
                    "modes": sorted(m.value for m in a.modes),
                    "regions": sorted(a.regions),
                    "min_batch": a.min_batch,
                    "max_requests": a.max_requests,
                }
                for a in self.agreements
            },
            "min_batch": self.min_batch,
            "residency_allows": {k: sorted(v) for k, v in sorted(self.residency_allows.items())},
        }


@dataclasses.dataclass(frozen=True, slots=True)
class PolicyInput:
    """One question to the policy (see the input documented in ``policies/psi.rego``)."""

    role: Literal["server", "client"]
    action: Literal["table", "evaluate"]
    partner_id: str
    partner_region: str
    residency: str
    mode: PsiMode
    batch_size: int = 0
    recent_requests: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class Decision:
    """The policy's answer: allowed, or the one reason why not."""

    reason: ReasonCode | None
    policy_version: str

    @property
    def allowed(self) -> bool:
        return self.reason is None


class PsiPolicy:
    """A loaded, compiled policy; :meth:`decide` is thread-safe (one interpreter, one lock)."""

    def __init__(self, source: str, config: PolicyConfig) -> None:
        document = json.dumps({"psi": config.document()}, sort_keys=True)
        self.config = config
        self.policy_version = hashlib.sha256(
            source.encode() + b"\0" + document.encode()
        ).hexdigest()
        self._query = CompiledQuery("PSI", "psi", source, _QUERY, document)
        probe = PolicyInput("server", "table", "", "", "", PsiMode.FULL_INTERSECTION)
        self.decide(probe)  # fail at start-up, not on the first request

    @classmethod
    def load(cls, config: PolicyConfig, path: Path = DEFAULT_POLICY_PATH) -> PsiPolicy:
        """Read the Rego source at ``path``; ``SchemaError`` if missing or unusable."""
        try:
            source = path.read_text(encoding="utf-8")
        except OSError as exc:
            msg = f"PSI policy missing: {path}"
            raise SchemaError(msg) from exc
        return cls(source, config)

    def decide(self, question: PolicyInput) -> Decision:
        """Evaluate the policy; ``SchemaError`` if it gives no well-formed decision."""
        term = dataclasses.asdict(question)
        term["mode"] = question.mode.value
        result = self._query.evaluate(term)
        if not isinstance(result, dict) or not isinstance(result.get("allow"), bool):
            msg = "PSI policy gave no decision"
            raise SchemaError(msg)
        if result["allow"]:
            return Decision(None, self.policy_version)
        reason = _REASONS.get(result.get("reason", ""))
        if reason is None:
            msg = "PSI policy gave an unknown reason"
            raise SchemaError(msg)
        return Decision(reason, self.policy_version)


def policy_config(path: Path) -> PolicyConfig:
    """The :class:`~psi.policy.PolicyConfig` whose ``document()`` (``data.psi``) is the JSON file
    at ``path``, lists in any order. ``ConfigError`` for anything else: a missing or unknown key,
    a mistyped value, an unknown mode, an unreadable file."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        fields = ("modes", "regions", "min_batch", "max_requests")
        specs = [(p, *(a[f] for f in fields)) for p, a in doc["agreements"].items()]
        config = PolicyConfig(
            tuple(
                Agreement(p, frozenset(map(PsiMode, m)), frozenset(r), int(b), int(n))
                for p, m, r, b, n in specs
            ),
            min_batch=int(doc["min_batch"]),
            residency_allows={k: frozenset(v) for k, v in doc["residency_allows"].items()},
        )
        # The round trip rejects what the conversions above let through: "US" for ["US"],
        # "5" for 5, an unknown key.
        if config.document() != _sorted_lists(doc):
            msg = "not the shape PolicyConfig.document() writes"
            raise ValueError(msg)
    except (AttributeError, KeyError, OSError, TypeError, ValueError) as exc:
        msg = f"bad PSI policy data {path} (see policies/psi.rego): {exc!r}"
        raise ConfigError(msg) from exc
    return config


def _sorted_lists(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _sorted_lists(v) for k, v in value.items()}
    return sorted(set(value)) if isinstance(value, list) else value
