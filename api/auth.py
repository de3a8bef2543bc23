"""Authentication: who is calling, from a bearer JWT or an API key.

:meth:`Authenticator.authenticate` turns the request's ``Authorization`` and ``X-API-Key`` headers
into a :class:`Principal` or raises :class:`AuthFailure` with a reason code:

- ``AUTH_MISSING``: neither header (a blank header counts as absent);
- ``AUTH_INVALID``: both headers at once (the caller must say which identity it uses), an
  ``Authorization`` that is not ``Bearer <jwt>``, a malformed token, an algorithm not accepted
  (``none``, any ``HS*``), a ``kid`` no key has, a signature no key verifies, a wrong ``iss`` or
  ``aud``, a missing ``exp``/``iss``/``aud``/``sub``/``tenant_id``, ill-typed scopes; an unknown or
  revoked API key;
- ``AUTH_EXPIRED``: ``exp`` passed, or ``nbf``/``iat`` in the future, beyond the leeway;
- ``STORE_UNAVAILABLE``: an API key could not be checked because its table cannot be read.

A token is verified only with a key whose own algorithm is the token's ``alg`` (see
:mod:`api.jwt_keys`): the header chooses among the keys, never how a key is used, so an ``HS256``
token "signed" with an RSA public key as the HMAC secret finds no key. Verified tokens are
remembered by their SHA-256 until ``exp`` (plus leeway), so a hot client costs a hash and a dict
lookup, not a signature check. Failure details are fixed phrases: no token text, no claim value.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import jwt

from api.api_keys import ApiKeyStore, KeyStoreUnavailable
from api.jwt_keys import (
    JWKS_FILE,
    VerificationKey,
    accepted_algorithms,
    ensure_dev_keys,
    load_verification_keys,
)
from core.errors import IgflowError
from core.reasons import ReasonCode
from core.settings import Settings

__all__ = ["AuthFailure", "Authenticator", "Principal", "scopes_of"]

#: Longer bearer tokens (in characters) are refused unparsed (ours are under 1,000).
MAX_TOKEN_LENGTH = 8192
#: Claims every token must carry (``tenant_id`` is checked besides).
_REQUIRED = ["exp", "iss", "aud", "sub"]
#: The details of AUTH_INVALID: fixed phrases, never token text or claim values.
_BOTH = "send a bearer token or an API key, not both"
_NOT_BEARER = "the Authorization header is not 'Bearer <token>'"
_TOO_LONG = "the token is too long"
_MALFORMED = "malformed token"
_ALGORITHM = "token algorithm not accepted"
_NO_KEY = "no key for this token's kid and algorithm"
_ISSUER = "token issuer not accepted"
_AUDIENCE = "token audience not accepted"
_NO_TENANT = "token lacks the tenant_id claim"
_NO_SUBJECT = "token lacks the sub claim"
_SIGNATURE = "token signature does not verify"
_NO_KEY_STORE = "API keys are not accepted here"
_UNKNOWN_KEY = "unknown or revoked API key"


@dataclasses.dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller."""

    #: JWT ``sub``, or ``apikey:<key_id>``.
    subject: str
    #: JWT claim ``tenant_id``; the API key's tenant.
    tenant_id: str
    #: JWT ``scope`` (space-separated) and ``scp`` (list); the API key's scopes.
    scopes: frozenset[str]
    #: ``"jwt"`` or ``"api_key"``.
    kind: str


class AuthFailure(IgflowError):
    """A request whose credentials are missing or do not verify.

    ``reason`` is the code to answer with; ``detail`` a fixed, non-sensitive phrase.
    """

    def __init__(self, reason: ReasonCode, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


def _invalid(detail: str) -> AuthFailure:
    return AuthFailure(ReasonCode.AUTH_INVALID, detail)


def scopes_of(claims: Mapping[str, Any]) -> frozenset[str]:
    """The scopes a token grants: its ``scope`` (OAuth2, space-separated) and ``scp`` (a list,
    or a space-separated string) together. ``AUTH_INVALID`` for any other type."""
    found: set[str] = set()
    for name in ("scope", "scp"):
        value = claims.get(name)
        if value is None:
            continue
        if isinstance(value, str):
            found.update(value.split())
        elif isinstance(value, list) and all(isinstance(s, str) for s in value):
            found.update(s for s in value if s)
        else:
            msg = f"claim {name} is neither a string nor a list of strings"
            raise _invalid(msg)
    return frozenset(found)


class Authenticator:
    """Verifies bearer JWTs against fixed keys, and API keys against an :class:`ApiKeyStore`.

    Use from one event loop; :meth:`close` releases the key store's connection.
    """

    def __init__(
        self,
        keys: Iterable[VerificationKey],
        *,
        issuer: str,
        audience: str,
        algorithms: Iterable[str] = ("RS256", "ES256"),
        leeway_seconds: float = 30.0,
        api_keys: ApiKeyStore | None = None,
        token_cache_size: int = 100_000,
    ) -> None:
        """``keys`` verify tokens, each only with its own algorithm, and only if that is one of
        ``algorithms``; ``api_keys`` ``None`` refuses every API key."""
        self._algorithms = accepted_algorithms(",".join(algorithms))
        self._keys = tuple(k for k in keys if k.algorithm in self._algorithms)
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway_seconds
        self._api_keys = api_keys
        self._cache_size = token_cache_size
        #: SHA-256 of a verified token -> (its principal, the time.time() it stops being valid)
        self._tokens: dict[bytes, tuple[Principal, float]] = {}
        self.cache_hits = 0

    @classmethod
    def from_settings(
        cls, settings: Settings, api_keys: ApiKeyStore | None = None
    ) -> Authenticator:
        """Keys from ``api.jwt_keys``, or, when it is empty, the local stack's JWKS (created if
        missing); API keys from ``api_keys``, by default an :class:`ApiKeyStore` over
        ``stores.postgres_dsn``. ``ConfigError`` for unusable keys or algorithms."""
        api = settings.api
        algorithms = accepted_algorithms(api.jwt_algorithms)
        location = Path(api.jwt_keys) if api.jwt_keys else ensure_dev_keys(settings) / JWKS_FILE
        return cls(
            load_verification_keys(location, algorithms),
            issuer=api.jwt_issuer,
            audience=api.jwt_audience,
            algorithms=algorithms,
            leeway_seconds=api.jwt_leeway_seconds,
            api_keys=api_keys
            or ApiKeyStore(
                settings.stores.postgres_dsn,
                cache_ttl_seconds=api.key_cache_seconds,
                fallback_ttl_seconds=api.key_cache_fallback_seconds,
            ),
        )

    async def authenticate(self, authorization: str | None, api_key: str | None) -> Principal:
        """The caller of a request with these ``Authorization`` and ``X-API-Key`` header values;
        :class:`AuthFailure` (see the module docstring for the reasons)."""
        authorization = (authorization or "").strip()
        api_key = (api_key or "").strip()
        if authorization and api_key:
            raise _invalid(_BOTH)
        if authorization:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise _invalid(_NOT_BEARER)
            return self.verify_token(token.strip())
        if api_key:
            return await self._api_key(api_key)
        raise AuthFailure(ReasonCode.AUTH_MISSING, "no bearer token and no API key")

    def known(self, authorization: str | None, api_key: str | None) -> bool:
        """Whether these header values are credentials this process has verified and still
        trusts: a cache lookup only (a hash and a dict), no signature check, no query."""
        authorization = (authorization or "").strip()
        api_key = (api_key or "").strip()
        if authorization and not api_key:
            scheme, _, token = authorization.partition(" ")
            token = token.strip()
            if scheme.lower() != "bearer" or not token or len(token) > MAX_TOKEN_LENGTH:
                return False
            digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
            cached = self._tokens.get(digest)
            return cached is not None and time.time() < cached[1]
        if api_key and not authorization and self._api_keys is not None:
            return self._api_keys.cached(api_key) is not None
        return False

    def verify_token(self, token: str) -> Principal:
        """The principal of a bearer JWT; :class:`AuthFailure` if it does not verify."""
        if len(token) > MAX_TOKEN_LENGTH:
            raise _invalid(_TOO_LONG)
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        cached = self._tokens.get(digest)
        if cached is not None:
            if time.time() < cached[1]:
                self.cache_hits += 1
                return cached[0]
            del self._tokens[digest]  # expired: the full check below says so
        claims = self._decode(token)
        principal = Principal(
            subject=claims["sub"],
            tenant_id=claims["tenant_id"],
            scopes=scopes_of(claims),
            kind="jwt",
        )
        while len(self._tokens) >= self._cache_size:
            self._tokens.pop(next(iter(self._tokens)))  # the oldest entry
        # PyJWT accepts a token while exp > now - leeway; the cache keeps it exactly as long.
        self._tokens[digest] = (principal, int(claims["exp"]) + self._leeway)
        return principal

    def _candidates(self, token: str) -> list[VerificationKey]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise _invalid(_MALFORMED) from None
        alg, kid = header.get("alg"), header.get("kid")
        if not isinstance(alg, str) or alg not in self._algorithms:
            raise _invalid(_ALGORITHM)
        if not isinstance(kid, str | None):
            raise _invalid(_MALFORMED)
        keys = [
            k
            for k in self._keys
            if k.algorithm == alg and (kid is None or k.kid is None or k.kid == kid)
        ]
        if not keys:
            raise _invalid(_NO_KEY)
        return keys

    def _decode(self, token: str) -> dict[str, Any]:
        for key in self._candidates(token):
            try:
                claims: dict[str, Any] = jwt.decode(
                    token,
                    key.key,
                    algorithms=[key.algorithm],
                    audience=self._audience,
                    issuer=self._issuer,
                    leeway=self._leeway,
                    options={"require": _REQUIRED},
                )
            except jwt.InvalidSignatureError:
                continue  # another key with this kid (or a PEM key without one) may verify it
            except jwt.ExpiredSignatureError:
                raise AuthFailure(ReasonCode.AUTH_EXPIRED, "token expired") from None
            except jwt.ImmatureSignatureError:
                raise AuthFailure(ReasonCode.AUTH_EXPIRED, "token not yet valid") from None
            except jwt.InvalidIssuerError:
                raise _invalid(_ISSUER) from None
            except jwt.InvalidAudienceError:
                raise _invalid(_AUDIENCE) from None
            except jwt.MissingRequiredClaimError as exc:
                msg = f"token lacks the {exc.claim} claim"
                raise _invalid(msg) from None
            except jwt.PyJWTError:
                raise _invalid(_MALFORMED) from None
            tenant, subject = claims.get("tenant_id"), claims.get("sub")
            if not isinstance(tenant, str) or not tenant:
                raise _invalid(_NO_TENANT)
            if not isinstance(subject, str) or not subject:
                raise _invalid(_NO_SUBJECT)
            return claims
        raise _invalid(_SIGNATURE)

    async def _api_key(self, api_key: str) -> Principal:
        if self._api_keys is None:
            raise _invalid(_NO_KEY_STORE)
        try:
            record = await self._api_keys.lookup(api_key)
        except KeyStoreUnavailable:
            raise AuthFailure(
                ReasonCode.STORE_UNAVAILABLE, "API keys cannot be checked now"
            ) from None
        if record is None:
            raise _invalid(_UNKNOWN_KEY)
        return Principal(
            subject=f"apikey:{record.key_id}",
            tenant_id=record.tenant_id,
            scopes=record.scopes,
            kind="api_key",
        )

    def start(self) -> None:
        """Hear API key changes from now on (call in the serving event loop): a revoked key is
        refused at once, not when its cached answer expires."""
        if self._api_keys is not None:
            self._api_keys.start_listening()

    async def close(self) -> None:
        """Release the API key store's connections."""
        if self._api_keys is not None:
            await self._api_keys.close()
