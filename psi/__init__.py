"""Zero-knowledge deconfliction: private set intersection on the RFC 9497 OPRF.

Coalition partners learn which selectors they share (``full_intersection``) or only how many
(``intersection_cardinality``), and nothing about the rest. The OPRF is RFC 9497's
ristretto255-SHA512 in mode 0x00, on libsodium through a small compiled cffi module
(``psi/_build_sodium.py``) that runs every curve operation in batched native loops.

=====================  ==================================================================
module                 holds
=====================  ==================================================================
``psi.curve``          batched ristretto255 primitives, split across threads
``psi.oprf``           RFC 9497: DeriveKeyPair, Blind, BlindEvaluate, Finalize, Evaluate
``psi.messages``       the versioned, size-checked wire format
``psi.tags``           truncated PRF tags and their false-positive bound
``psi.keys``           per-mode keys, re-keyed per epoch and after N evaluations
``psi.policy``         ``policies/psi.rego``: agreements, geo, minimum batch, rate limit
``psi.evaluator``      the transport-free server
``psi.client``         the client, and its HTTP transport (httpx)
``psi.server``         the Starlette app over HTTP
=====================  ==================================================================
"""

from __future__ import annotations

from psi.client import (
    Cardinality,
    ClientConfig,
    HttpTransport,
    Intersection,
    Outcome,
    PsiClient,
    Transport,
)
from psi.curve import CurveError, GroupBatch
from psi.evaluator import Caller, PsiServer, ServerConfig
from psi.messages import Denial, KeyId, PsiMode
from psi.policy import Agreement, PolicyConfig, PsiPolicy
from psi.selectors import SelectorSet, load_selectors_csv
from psi.tags import TAG_BYTES, false_positive_bound

__all__ = [
    "TAG_BYTES",
    "Agreement",
    "Caller",
    "Cardinality",
    "ClientConfig",
    "CurveError",
    "Denial",
    "GroupBatch",
    "HttpTransport",
    "Intersection",
    "KeyId",
    "Outcome",
    "PolicyConfig",
    "PsiClient",
    "PsiMode",
    "PsiPolicy",
    "PsiServer",
    "SelectorSet",
    "ServerConfig",
    "Transport",
    "false_positive_bound",
    "load_selectors_csv",
]
