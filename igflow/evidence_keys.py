"""The Ed25519 key that signs evidence bundles (:mod:`igflow.evidence`).

The private key is a PKCS#8 PEM file readable by its owner only (0600), created on first use at
``evidence.signing_key_file`` (default ``<stack_dir>/evidence/signing.key``); a key file that
group or others may read is refused, as ssh refuses one. Its public half is written beside it
(``signing.key.pub``, SubjectPublicKeyInfo PEM): that file, not anything inside a bundle, is what
a verifier trusts. A key is named in a manifest by its key id, ``ed25519:`` and the first 16 hex
digits of the SHA-256 of the raw 32-byte public key.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import stat
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from core.errors import ConfigError

__all__ = ["key_id", "load_public_key", "load_signing_key", "public_key_path", "public_pem"]


def key_id(public: Ed25519PublicKey) -> str:
    """The id a manifest names its signing key by (``ed25519:<16 hex digits>``)."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed25519:" + hashlib.sha256(raw).hexdigest()[:16]


def public_pem(public: Ed25519PublicKey) -> bytes:
    """``public`` as SubjectPublicKeyInfo PEM (what ``openssl pkey -pubout`` prints)."""
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def public_key_path(signing_key_file: Path) -> Path:
    """Where the public half of ``signing_key_file`` is exported (``<file>.pub``)."""
    return signing_key_file.with_name(signing_key_file.name + ".pub")


def _create(path: Path) -> None:
    """Write a new key to ``path`` unless it exists (atomic: a concurrent creator wins whole)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
            out.flush()
            os.fsync(out.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        tmp.unlink()


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    """The signing key in ``path``, created there first if missing; its public half is
    (re)written to :func:`public_key_path`. :class:`ConfigError` for a key file others may
    read, or one that is not an Ed25519 private key."""
    try:
        if not path.exists():
            _create(path)
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            msg = f"signing key {path} has mode {mode:04o}: it must be readable by its owner only"
            raise ConfigError(msg)
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        msg = f"cannot read the evidence signing key {path}: {exc}"
        raise ConfigError(msg) from exc
    if not isinstance(key, Ed25519PrivateKey):
        msg = f"evidence signing key {path} is not an Ed25519 private key"
        raise ConfigError(msg)
    pem = public_pem(key.public_key())
    exported = public_key_path(path)
    try:
        if not exported.exists() or exported.read_bytes() != pem:
            tmp = exported.with_name(f".{exported.name}.{secrets.token_hex(6)}.tmp")
            tmp.write_bytes(pem)
            os.replace(tmp, exported)
    except OSError as exc:
        msg = f"cannot export the evidence public key to {exported}: {exc}"
        raise ConfigError(msg) from exc
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """The Ed25519 public key in PEM file ``path``; :class:`ConfigError` otherwise."""
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError, TypeError) as exc:
        msg = f"cannot read the evidence public key {path}: {exc}"
        raise ConfigError(msg) from exc
    if not isinstance(key, Ed25519PublicKey):
        msg = f"evidence public key {path} is not an Ed25519 public key"
        raise ConfigError(msg)
    return key
