"""api.auth and api.jwt_keys: bearer JWTs verified against the local stack's keys.

Every refusal names its reason code; no detail repeats the token. The forged tokens (``alg:
none``, HS256 keyed with the RSA public key) are built by hand, since PyJWT refuses to make them.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import stat
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from api.auth import Authenticator, AuthFailure, Principal
from api.jwt_keys import (
    DEV_PRIVATE_KEYS,
    JWKS_FILE,
    accepted_algorithms,
    dev_keys_dir,
    ensure_dev_keys,
    load_verification_keys,
    mint_token,
    sign,
)
from core.errors import ConfigError
from core.reasons import ReasonCode
from core.settings import Settings
from igflow.cli import main

READ, WRITE = "coherence:read", "coherence:write"


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """A stack folder of its own, with fresh local keys (made once: RSA key generation is slow)."""
    settings = Settings(stack_dir=str(tmp_path_factory.mktemp("stack")))
    ensure_dev_keys(settings)
    return settings


@pytest.fixture
def auth(settings: Settings) -> Authenticator:
    return Authenticator.from_settings(settings)


def claims(settings: Settings, **changes: Any) -> dict[str, Any]:
    """Well-formed claims for tenant-00, valid for an hour; ``None`` drops a claim."""
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": settings.api.jwt_issuer,
        "aud": settings.api.jwt_audience,
        "sub": "producer-1",
        "tenant_id": "tenant-00",
        "scope": READ,
        "iat": now,
        "exp": now + 3600,
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    """A compact JWS with whatever header, and whatever bytes as its signature."""
    head = b64(json.dumps(header).encode()) + "." + b64(json.dumps(payload).encode())
    return head + "." + b64(signature)


def rsa_kid(settings: Settings) -> str:
    document = json.loads((dev_keys_dir(settings) / JWKS_FILE).read_text())
    kid: str = next(k["kid"] for k in document["keys"] if k["kty"] == "RSA")
    return kid


def authenticate(auth: Authenticator, authorization: str | None, api_key: str | None = None) -> Any:
    return asyncio.run(auth.authenticate(authorization, api_key))


def refused(
    auth: Authenticator, authorization: str | None, api_key: str | None = None
) -> AuthFailure:
    with pytest.raises(AuthFailure) as caught:
        authenticate(auth, authorization, api_key)
    failure = caught.value
    # Never the credential itself in what the API answers or logs.
    for secret in filter(None, (authorization, api_key)):
        token = secret.removeprefix("Bearer ")
        if len(token) >= 12:
            assert token not in failure.detail and token not in str(failure)
    return failure


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
def test_a_valid_token_gives_its_principal(
    settings: Settings, auth: Authenticator, alg: str
) -> None:
    token = sign(settings, claims(settings, scope=f"{READ} {WRITE}"), alg)
    principal = authenticate(auth, f"Bearer {token}")
    assert principal == Principal("producer-1", "tenant-00", frozenset({READ, WRITE}), "jwt")


def test_scp_as_a_list_and_scope_as_a_string_are_both_read(
    settings: Settings, auth: Authenticator
) -> None:
    token = sign(settings, claims(settings, scope=READ, scp=[WRITE, "extra"]))
    assert authenticate(auth, f"bearer {token}").scopes == {READ, WRITE, "extra"}
    no_scope = sign(settings, claims(settings, scope=None))
    assert authenticate(auth, f"Bearer {no_scope}").scopes == frozenset()
    bad = sign(settings, claims(settings, scp={"read": True}))
    assert refused(auth, f"Bearer {bad}").reason is ReasonCode.AUTH_INVALID


def test_mint_token_makes_a_token_the_api_accepts(settings: Settings, auth: Authenticator) -> None:
    for alg in ("RS256", "ES256"):
        token = mint_token(settings, "tenant-07", [WRITE, READ], ttl_seconds=60, alg=alg)
        principal = authenticate(auth, f"Bearer {token}")
        assert principal == Principal("dev:tenant-07", "tenant-07", frozenset({READ, WRITE}), "jwt")
        header = jwt.get_unverified_header(token)
        assert header["alg"] == alg and header["kid"]
    with pytest.raises(ConfigError):
        mint_token(settings, "tenant-07", [READ], ttl_seconds=0)
    with pytest.raises(ConfigError):
        mint_token(settings, "tenant-07", [READ], alg="HS256")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"exp": -120}, ReasonCode.AUTH_EXPIRED),  # past the 30 s leeway
        ({"nbf": 120}, ReasonCode.AUTH_EXPIRED),  # not yet valid
        ({"iat": 3600, "exp": 7200}, ReasonCode.AUTH_EXPIRED),  # issued in the future
        ({"iss": "someone-else"}, ReasonCode.AUTH_INVALID),
        ({"aud": "another-api"}, ReasonCode.AUTH_INVALID),
        ({"tenant_id": None}, ReasonCode.AUTH_INVALID),
        ({"tenant_id": ""}, ReasonCode.AUTH_INVALID),
        ({"tenant_id": 7}, ReasonCode.AUTH_INVALID),
        ({"sub": None}, ReasonCode.AUTH_INVALID),
        ({"exp": None}, ReasonCode.AUTH_INVALID),
        ({"iss": None}, ReasonCode.AUTH_INVALID),
        ({"aud": None}, ReasonCode.AUTH_INVALID),
    ],
    ids=[
        "expired",
        "nbf-future",
        "iat-future",
        "wrong-issuer",
        "wrong-audience",
        "no-tenant",
        "blank-tenant",
        "tenant-not-string",
        "no-sub",
        "no-exp",
        "no-iss",
        "no-aud",
    ],
)
def test_bad_claims_are_refused_with_their_reason(
    settings: Settings, auth: Authenticator, change: dict[str, Any], reason: ReasonCode
) -> None:
    now = int(time.time())
    timed = {"exp", "nbf", "iat"}
    values = {k: (now + v if k in timed and v is not None else v) for k, v in change.items()}
    for alg in ("RS256", "ES256"):
        token = sign(settings, claims(settings, **values), alg)
        assert refused(auth, f"Bearer {token}").reason is reason


def test_the_leeway_admits_a_token_just_expired(settings: Settings, auth: Authenticator) -> None:
    token = sign(settings, claims(settings, exp=int(time.time()) - 10))  # leeway is 30 s
    assert authenticate(auth, f"Bearer {token}").tenant_id == "tenant-00"


def test_a_signature_by_another_key_is_refused(settings: Settings, auth: Authenticator) -> None:
    other_rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other_ec = ec.generate_private_key(ec.SECP256R1())
    body = claims(settings)
    for alg, key in (("RS256", other_rsa), ("ES256", other_ec)):
        with_our_kid = jwt.encode(body, key, alg, headers={"kid": rsa_kid(settings)})
        without_kid = jwt.encode(body, key, alg)
        for token in (with_our_kid, without_kid):
            assert refused(auth, f"Bearer {token}").reason is ReasonCode.AUTH_INVALID
    # Our own token with one signature byte changed.
    token = sign(settings, body)
    head, payload, signature = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=="))
    raw[10] ^= 1
    tampered = f"{head}.{payload}.{b64(bytes(raw))}"
    assert refused(auth, f"Bearer {tampered}").reason is ReasonCode.AUTH_INVALID


def test_a_payload_changed_under_a_valid_signature_is_refused(
    settings: Settings, auth: Authenticator
) -> None:
    head, _payload, signature = sign(settings, claims(settings)).split(".")
    forged = b64(json.dumps(claims(settings, tenant_id="tenant-01")).encode())
    assert refused(auth, f"Bearer {head}.{forged}.{signature}").reason is ReasonCode.AUTH_INVALID


@pytest.mark.parametrize("alg", ["none", "None", "NONE", ""])
def test_alg_none_is_refused(settings: Settings, auth: Authenticator, alg: str) -> None:
    body = claims(settings)
    for token in (
        forge({"alg": alg, "typ": "JWT"}, body),
        forge({"alg": alg, "typ": "JWT", "kid": rsa_kid(settings)}, body),
        forge({"alg": alg}, body, b"junk"),  # a junk signature, too
    ):
        assert refused(auth, f"Bearer {token}").reason is ReasonCode.AUTH_INVALID


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
def test_hmac_keyed_with_the_rsa_public_key_is_refused(
    settings: Settings, auth: Authenticator, alg: str
) -> None:
    """Algorithm confusion: a verifier that let the token pick the algorithm would check this
    HMAC with the RSA public key (which anyone has) as the secret, and accept it."""
    public = serialization.load_pem_private_key(
        (dev_keys_dir(settings) / DEV_PRIVATE_KEYS["RS256"]).read_bytes(), None
    ).public_key()
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    for pem in (
        public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1),
    ):
        for header in ({"alg": alg, "typ": "JWT"}, {"alg": alg, "kid": rsa_kid(settings)}):
            unsigned = forge(header, claims(settings)).rsplit(".", 1)[0]
            mac = hmac.new(pem, unsigned.encode(), digest).digest()
            token = f"{unsigned}.{b64(mac)}"
            assert refused(auth, f"Bearer {token}").reason is ReasonCode.AUTH_INVALID


def test_an_rsa_key_never_verifies_an_es256_header(settings: Settings, auth: Authenticator) -> None:
    token = sign(settings, claims(settings), "RS256")
    _head, payload, signature = token.split(".")
    header = b64(json.dumps({"alg": "ES256", "kid": rsa_kid(settings)}).encode())
    assert refused(auth, f"Bearer {header}.{payload}.{signature}").reason is ReasonCode.AUTH_INVALID


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer not-a-jwt",
        "Bearer a.b.c",
        "Bearer ...",
        "Bearer eyJhbGciOiJSUzI1NiJ9.e30",
        "Bearer " + "a" * 9000,
        "Basic dXNlcjpwYXNz",
        "Bearer",
        "Token abc.def.ghi",
    ],
)
def test_malformed_credentials_are_invalid(auth: Authenticator, authorization: str) -> None:
    assert refused(auth, authorization).reason is ReasonCode.AUTH_INVALID


def test_an_unknown_kid_is_invalid(settings: Settings, auth: Authenticator) -> None:
    key = serialization.load_pem_private_key(
        (dev_keys_dir(settings) / DEV_PRIVATE_KEYS["RS256"]).read_bytes(), None
    )
    token = jwt.encode(claims(settings), key, "RS256", headers={"kid": "no-such-key"})
    assert refused(auth, f"Bearer {token}").reason is ReasonCode.AUTH_INVALID


@pytest.mark.parametrize(("authorization", "api_key"), [(None, None), ("", ""), ("  ", None)])
def test_no_credentials_is_missing(
    auth: Authenticator, authorization: str | None, api_key: str | None
) -> None:
    assert refused(auth, authorization, api_key).reason is ReasonCode.AUTH_MISSING


def test_a_token_and_an_api_key_together_are_refused(
    settings: Settings, auth: Authenticator
) -> None:
    token = sign(settings, claims(settings))
    assert refused(auth, f"Bearer {token}", "igk_x_y").reason is ReasonCode.AUTH_INVALID


def test_without_a_key_store_api_keys_are_invalid(settings: Settings) -> None:
    keys = load_verification_keys(dev_keys_dir(settings) / JWKS_FILE)
    bare = Authenticator(keys, issuer="igflow-local", audience="igflow-api")
    assert refused(bare, None, "igk_0123_secret").reason is ReasonCode.AUTH_INVALID


def test_a_verified_token_is_served_from_the_cache(settings: Settings, auth: Authenticator) -> None:
    token = sign(settings, claims(settings))
    first = authenticate(auth, f"Bearer {token}")
    assert auth.cache_hits == 0
    for _ in range(20_000):
        assert auth.verify_token(token) is first
    # Each one a hash and a dict lookup, not an RSA verification: counted, not timed (what it
    # costs is the API benchmark's figure).
    assert auth.cache_hits == 20_000
    # Another token with the same claims is verified on its own.
    assert authenticate(auth, f"Bearer {sign(settings, claims(settings), 'ES256')}") == first
    assert auth.cache_hits == 20_000


def test_a_cached_token_still_expires(settings: Settings) -> None:
    keys = load_verification_keys(dev_keys_dir(settings) / JWKS_FILE)
    strict = Authenticator(keys, issuer="igflow-local", audience="igflow-api", leeway_seconds=0)
    exp = int(time.time()) + 1
    token = sign(settings, claims(settings, exp=exp, iat=exp - 1))
    assert strict.verify_token(token).tenant_id == "tenant-00"
    time.sleep(max(0.0, exp - time.time()) + 0.05)
    assert refused(strict, f"Bearer {token}").reason is ReasonCode.AUTH_EXPIRED
    assert strict.cache_hits == 0


def test_only_the_configured_algorithms_verify(settings: Settings) -> None:
    rs_only = Authenticator.from_settings(settings.with_changes("api", jwt_algorithms="RS256"))
    assert authenticate(rs_only, f"Bearer {sign(settings, claims(settings))}").kind == "jwt"
    es_token = sign(settings, claims(settings), "ES256")
    assert refused(rs_only, f"Bearer {es_token}").reason is ReasonCode.AUTH_INVALID


@pytest.mark.parametrize("spec", ["HS256", "RS256,HS256", "none", "", "RS256,foo"])
def test_symmetric_or_unknown_algorithms_are_a_config_error(spec: str) -> None:
    with pytest.raises(ConfigError, match="asymmetric only"):
        accepted_algorithms(spec)


def test_dev_keys_are_private_stable_and_published(settings: Settings) -> None:
    folder = dev_keys_dir(settings)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert set(before) == {*DEV_PRIVATE_KEYS.values(), JWKS_FILE}
    for name in DEV_PRIVATE_KEYS.values():
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600
    os.chmod(folder / DEV_PRIVATE_KEYS["ES256"], 0o644)
    assert ensure_dev_keys(settings) == folder
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # kept, not replaced
    assert stat.S_IMODE((folder / DEV_PRIVATE_KEYS["ES256"]).stat().st_mode) == 0o600
    jwks = json.loads(before[JWKS_FILE])
    assert sorted(k["alg"] for k in jwks["keys"]) == ["ES256", "RS256"]
    assert all("d" not in k and k["use"] == "sig" and k["kid"] for k in jwks["keys"])


def test_dev_keys_dir_setting_wins(tmp_path: Path) -> None:
    settings = Settings(stack_dir=str(tmp_path / "stack")).with_changes(
        "api", dev_keys_dir=str(tmp_path / "keys")
    )
    assert ensure_dev_keys(settings) == (tmp_path / "keys").resolve()
    assert (tmp_path / "keys" / JWKS_FILE).is_file()
    assert not (tmp_path / "stack").exists()


def test_verification_keys_from_a_pem_file_or_a_folder(settings: Settings, tmp_path: Path) -> None:
    private = serialization.load_pem_private_key(
        (dev_keys_dir(settings) / DEV_PRIVATE_KEYS["RS256"]).read_bytes(), None
    )
    pem = tmp_path / "public.pem"
    pem.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    (key,) = load_verification_keys(pem)
    assert key.algorithm == "RS256" and key.kid is None
    # A PEM key has no kid, so it is tried whatever kid the token names.
    from_pem = Authenticator.from_settings(settings.with_changes("api", jwt_keys=str(pem)))
    token = sign(settings, claims(settings))
    assert authenticate(from_pem, f"Bearer {token}").tenant_id == "tenant-00"
    es_token = sign(settings, claims(settings), "ES256")
    assert refused(from_pem, f"Bearer {es_token}").reason is ReasonCode.AUTH_INVALID
    # The dev folder itself: its private PEMs are passed over, its JWKS is read.
    folder_keys = load_verification_keys(dev_keys_dir(settings))
    assert sorted(k.algorithm for k in folder_keys) == ["ES256", "RS256"]
    with pytest.raises(ConfigError, match="private key"):
        load_verification_keys(dev_keys_dir(settings) / DEV_PRIVATE_KEYS["RS256"])


@pytest.mark.parametrize(
    ("jwk", "message"),
    [
        ({"kty": "oct", "k": "c2VjcmV0"}, "not RSA or EC"),
        ({"kty": "RSA", "n": "AQAB", "e": "AQAB", "d": "AQAB"}, "private key material"),
        ({"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}, "not a valid EC JWK"),
    ],
    ids=["symmetric", "private", "garbage"],
)
def test_unusable_jwks_are_a_config_error(
    tmp_path: Path, jwk: dict[str, str], message: str
) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [jwk]}))
    with pytest.raises(ConfigError, match=message):
        load_verification_keys(path)


def test_a_jwk_alg_that_does_not_fit_its_key_is_a_config_error(
    settings: Settings, tmp_path: Path
) -> None:
    jwks = json.loads((dev_keys_dir(settings) / JWKS_FILE).read_text())
    rsa_jwk = next(k for k in jwks["keys"] if k["kty"] == "RSA")
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [{**rsa_jwk, "alg": "HS256"}]}))
    with pytest.raises(ConfigError, match="does not fit"):
        load_verification_keys(path)
    path.write_text(json.dumps({"keys": [{**rsa_jwk, "use": "enc"}]}))
    with pytest.raises(ConfigError, match="no JWT key"):
        load_verification_keys(path)


def test_igflow_token_prints_a_token(
    settings: Settings, auth: Authenticator, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    monkeypatch.setenv("IGFLOW_STACK_DIR", settings.stack_dir)
    code = main(
        ["token", "--tenant", "tenant-03", "--scope", READ, "--alg", "ES256", "--ttl", "90"]
    )
    out = capsys.readouterr().out.strip()
    assert code == 0
    principal = authenticate(auth, f"Bearer {out}")
    assert principal == Principal("dev:tenant-03", "tenant-03", frozenset({READ}), "jwt")
    payload = jwt.decode(out, options={"verify_signature": False})
    assert payload["exp"] - payload["iat"] == 90
    assert main(["token", "--tenant", "tenant-03", "--scope", READ, "--ttl", "0"]) == 2
