"""JWT keys: the public keys tokens are verified with, and the local stack's signing keys.

Verification keys (``api.jwt_keys``) come from a PEM file (a public key or a certificate), a JWKS
JSON file, or a folder of either (its ``*.pem`` and ``*.json`` files; PEM files holding a private
key are passed over, so the dev keys folder itself may be named). Each key verifies exactly one
algorithm, fixed by its type and never by the token: an RSA key ``RS256`` (or the ``RS*``/``PS*``
its JWK ``alg`` names), an EC key the ``ES*`` of its curve (P-256: ``ES256``). Symmetric (``oct``)
keys and the ``HS*``/``none`` algorithms are refused at load, so no token can pick HMAC with a
public key as its secret.

The local stack signs with its own keys, kept in :func:`dev_keys_dir` (``<stack_dir>/api``, or
``api.dev_keys_dir``): ``rs256.key.pem`` and ``es256.key.pem`` (private, mode 0600) and
``jwks.json`` (their public halves, each with ``kid`` its RFC 7638 thumbprint, ``alg`` and
``use: sig``). :func:`ensure_dev_keys` creates what is missing (``igflow setup`` calls it, and so
does :func:`mint_token`); when ``api.jwt_keys`` is empty the API verifies against ``jwks.json``.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import secrets
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from core.errors import ConfigError
from core.settings import Settings

__all__ = [
    "DEV_PRIVATE_KEYS",
    "JWKS_FILE",
    "SUPPORTED_ALGORITHMS",
    "PublicKey",
    "VerificationKey",
    "accepted_algorithms",
    "dev_keys_dir",
    "ensure_dev_keys",
    "load_verification_keys",
    "mint_token",
    "sign",
]

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey

#: Asymmetric algorithms a key may verify. HMAC and ``none`` are absent on purpose.
SUPPORTED_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"}
)
_RSA_ALGORITHMS = frozenset(a for a in SUPPORTED_ALGORITHMS if a[:2] in {"RS", "PS"})
_CURVE_ALGORITHM = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
_CURVE_NAME = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}

#: The local stack's private signing keys, by the one algorithm each signs, and the JWKS of their
#: public halves, inside :func:`dev_keys_dir`.
DEV_PRIVATE_KEYS = {"RS256": "rs256.key.pem", "ES256": "es256.key.pem"}
JWKS_FILE = "jwks.json"


@dataclasses.dataclass(frozen=True, slots=True)
class VerificationKey:
    """One public key and the one algorithm it verifies."""

    key: PublicKey
    algorithm: str
    #: The JWK's ``kid``; ``None`` for a PEM key, which is then tried for any token's ``kid``.
    kid: str | None
    #: The file it came from (for messages).
    source: str


def accepted_algorithms(spec: str) -> frozenset[str]:
    """The algorithms of a comma-separated ``api.jwt_algorithms``; ``ConfigError`` for an empty
    list or one naming anything outside :data:`SUPPORTED_ALGORITHMS` (``HS256``, ``none``)."""
    algorithms = frozenset(a.strip() for a in spec.split(",") if a.strip())
    bad = sorted(algorithms - SUPPORTED_ALGORITHMS)
    if bad or not algorithms:
        msg = (
            f"api.jwt_algorithms must name some of {sorted(SUPPORTED_ALGORITHMS)}"
            f" (asymmetric only), got {spec!r}"
        )
        raise ConfigError(msg)
    return algorithms


def _algorithm_of(key: PublicKey, declared: str | None, source: str) -> str:
    """The one algorithm ``key`` verifies: its type's, or the compatible one its JWK declares."""
    if isinstance(key, rsa.RSAPublicKey):
        if declared is None:
            return "RS256"
        if declared in _RSA_ALGORITHMS:
            return declared
    else:
        curve = _CURVE_ALGORITHM.get(key.curve.name)
        if curve is None:
            msg = f"JWT key in {source}: unsupported curve {key.curve.name}"
            raise ConfigError(msg)
        if declared in (None, curve):
            return curve
    msg = f"JWT key in {source}: algorithm {declared!r} does not fit a {type(key).__name__}"
    raise ConfigError(msg)


def _from_jwk(jwk: Mapping[str, Any], source: str) -> VerificationKey | None:
    """A verification key from one JWK; ``None`` for a key meant for encryption."""
    if jwk.get("use", "sig") != "sig":
        return None
    kty = jwk.get("kty")
    if "d" in jwk:
        msg = f"JWT key in {source} holds private key material: publish only the public key"
        raise ConfigError(msg)
    text = json.dumps(dict(jwk))
    key: Any
    try:
        if kty == "RSA":
            key = RSAAlgorithm.from_jwk(text)
        elif kty == "EC":
            key = ECAlgorithm.from_jwk(text)
        else:
            msg = f"JWT key in {source}: key type {kty!r} is not RSA or EC"
            raise ConfigError(msg)
    except jwt.InvalidKeyError as exc:
        msg = f"JWT key in {source} is not a valid {kty} JWK: {exc}"
        raise ConfigError(msg) from exc
    kid = jwk.get("kid")
    declared = jwk.get("alg")
    if not isinstance(kid, str | None) or not isinstance(declared, str | None):
        msg = f"JWT key in {source}: kid and alg must be strings"
        raise ConfigError(msg)
    return VerificationKey(key, _algorithm_of(key, declared, source), kid, source)


def _read_jwks(path: Path) -> list[VerificationKey]:
    try:
        document = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        msg = f"cannot read JWKS {path}: {exc}"
        raise ConfigError(msg) from exc
    entries: object = None
    if isinstance(document, dict):
        entries = [document] if "kty" in document else document.get("keys")
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        msg = f"{path} is neither a JWKS ({{'keys': [...]}}) nor a JWK"
        raise ConfigError(msg)
    return [k for k in (_from_jwk(e, str(path)) for e in entries) if k is not None]


def _read_pem(path: Path, *, skip_private: bool) -> list[VerificationKey]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        msg = f"cannot read JWT key {path}: {exc}"
        raise ConfigError(msg) from exc
    if b"PRIVATE KEY-----" in data:
        if skip_private:
            return []
        msg = f"{path} holds a private key: give the API the public key"
        raise ConfigError(msg)
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            key: Any = x509.load_pem_x509_certificate(data).public_key()
        else:
            key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        msg = f"{path} is not a PEM public key or certificate: {exc}"
        raise ConfigError(msg) from exc
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        msg = f"JWT key {path} is a {type(key).__name__}, not RSA or EC"
        raise ConfigError(msg)
    return [VerificationKey(key, _algorithm_of(key, None, str(path)), None, str(path))]


def _read_file(path: Path, *, in_folder: bool) -> list[VerificationKey]:
    if path.suffix == ".json":
        return _read_jwks(path)
    return _read_pem(path, skip_private=in_folder)


def load_verification_keys(
    location: Path, algorithms: Iterable[str] = SUPPORTED_ALGORITHMS
) -> tuple[VerificationKey, ...]:
    """The keys at ``location`` (a PEM or JWKS file, or a folder of them) that verify one of
    ``algorithms``; ``ConfigError`` if there is none, or a file is unusable."""
    wanted = frozenset(algorithms)
    if location.is_dir():
        files = sorted(p for p in location.iterdir() if p.suffix in {".pem", ".json"})
        keys = [k for p in files if p.is_file() for k in _read_file(p, in_folder=True)]
    elif location.is_file():
        keys = _read_file(location, in_folder=False)
    else:
        msg = f"JWT keys not found: {location}"
        raise ConfigError(msg)
    usable = tuple(k for k in keys if k.algorithm in wanted)
    if not usable:
        msg = f"no JWT key in {location} verifies any of {sorted(wanted)}"
        raise ConfigError(msg)
    return usable


def dev_keys_dir(settings: Settings) -> Path:
    """Where the local stack keeps its signing keys (absolute)."""
    folder = settings.api.dev_keys_dir or str(Path(settings.stack_dir) / "api")
    return Path(folder).resolve()


def _b64(number: int, size: int = 0) -> str:
    """Base64url without padding of ``number``, big-endian in ``size`` bytes (0: the fewest)."""
    raw = number.to_bytes(size or (number.bit_length() + 7) // 8 or 1, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _public_jwk(key: PublicKey, algorithm: str) -> dict[str, str]:
    """The JWK of ``key`` with ``kid`` its RFC 7638 thumbprint (a function of the key alone)."""
    if isinstance(key, rsa.RSAPublicKey):
        numbers = key.public_numbers()
        members = {"e": _b64(numbers.e), "kty": "RSA", "n": _b64(numbers.n)}
    else:
        point = key.public_numbers()
        size = (key.curve.key_size + 7) // 8
        members = {
            "crv": _CURVE_NAME[key.curve.name],
            "kty": "EC",
            "x": _b64(point.x, size),
            "y": _b64(point.y, size),
        }
    canonical = json.dumps(members, sort_keys=True, separators=(",", ":")).encode()
    kid = base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=").decode()
    return {**members, "kid": kid, "alg": algorithm, "use": "sig"}


def _new_private_key(algorithm: str) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
    if algorithm == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def _publish_once(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` holding ``data`` unless it exists; atomic, so a concurrent creator and a
    reader see either nothing or the whole file, and the first creator wins."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        with contextlib.suppress(FileExistsError):  # someone else created it first
            os.link(tmp, path)
    finally:
        tmp.unlink()


@functools.lru_cache(maxsize=8)
def _private_key(path: str, mtime_ns: int) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
    """The private key in ``path`` (cached per modification time: parsing RSA costs ~1 ms)."""
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        msg = f"cannot read signing key {path}: {exc}"
        raise ConfigError(msg) from exc
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        msg = f"signing key {path} is not RSA or EC"
        raise ConfigError(msg)
    return key


def _load_private(path: Path) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
    try:
        mtime_ns = path.stat().st_mtime_ns
    except OSError as exc:
        msg = f"cannot read signing key {path}: {exc}"
        raise ConfigError(msg) from exc
    return _private_key(str(path), mtime_ns)


def ensure_dev_keys(settings: Settings) -> Path:
    """Create the local signing keys and their JWKS where missing; returns :func:`dev_keys_dir`.

    Idempotent and safe to run from several processes at once: existing keys are kept (and
    their files set back to mode 0600 if they were opened up), ``jwks.json`` is rewritten
    atomically only when it does not match them.
    """
    folder = dev_keys_dir(settings)
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        jwks = []
        for algorithm, name in sorted(DEV_PRIVATE_KEYS.items()):
            path = folder / name
            if not path.exists():
                pem = _new_private_key(algorithm).private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
                _publish_once(path, pem, 0o600)
            if path.stat().st_mode & 0o077:
                path.chmod(0o600)
            jwks.append(_public_jwk(_load_private(path).public_key(), algorithm))
        document = (json.dumps({"keys": jwks}, indent=2, sort_keys=True) + "\n").encode()
        target = folder / JWKS_FILE
        if not target.exists() or target.read_bytes() != document:
            tmp = folder / f".{JWKS_FILE}.{secrets.token_hex(6)}.tmp"
            tmp.write_bytes(document)
            os.replace(tmp, target)
    except OSError as exc:
        msg = f"cannot create the local JWT keys in {folder}: {exc}"
        raise ConfigError(msg) from exc
    return folder


def sign(settings: Settings, claims: Mapping[str, Any], alg: str = "RS256") -> str:
    """``claims`` as a JWT signed with the local ``alg`` key (header ``kid``: its thumbprint).

    The claims are taken as given (tests use this to make expired or otherwise wrong tokens).
    ``ConfigError`` for an algorithm without a local key.
    """
    if alg not in DEV_PRIVATE_KEYS:
        msg = f"no local signing key for {alg!r}; choose one of {sorted(DEV_PRIVATE_KEYS)}"
        raise ConfigError(msg)
    folder = ensure_dev_keys(settings)
    key = _load_private(folder / DEV_PRIVATE_KEYS[alg])
    kid = _public_jwk(key.public_key(), alg)["kid"]
    return jwt.encode(dict(claims), key, algorithm=alg, headers={"kid": kid, "typ": "JWT"})


def mint_token(
    settings: Settings,
    tenant_id: str,
    scopes: Iterable[str],
    ttl_seconds: int = 3600,
    alg: str = "RS256",
    *,
    subject: str | None = None,
) -> str:
    """A token for ``tenant_id`` with ``scopes`` (the OAuth2 ``scope`` claim), valid from now
    for ``ttl_seconds``, issued and addressed as ``settings.api`` expects, signed with the local
    ``alg`` key. ``sub`` is ``subject`` or ``dev:<tenant_id>``."""
    if not tenant_id:
        msg = "a token needs a tenant"
        raise ConfigError(msg)
    if ttl_seconds <= 0:
        msg = f"ttl_seconds must be positive, got {ttl_seconds}"
        raise ConfigError(msg)
    now = int(time.time())
    claims = {
        "iss": settings.api.jwt_issuer,
        "aud": settings.api.jwt_audience,
        "sub": subject or f"dev:{tenant_id}",
        "tenant_id": tenant_id,
        "scope": " ".join(sorted(set(scopes))),
        "iat": now,
        "nbf": now,
        "exp": now + ttl_seconds,
        "jti": secrets.token_hex(8),
    }
    return sign(settings, claims, alg)
