"""Envelope encryption with tenant-scoped keys: the KMS interface and the field cipher.

The hierarchy (``tenancy/keys.py`` keeps it in Postgres):

- a **root key** held by a KMS (:class:`Kms`: :class:`LocalKms` for the local stack, a file of
  32 random bytes with 0600 permissions; ``tenancy/aws_kms.py`` for AWS KMS);
- one **key-encryption key (KEK)** per tenant and version, wrapped by the KMS under an
  encryption context naming the tenant and version;
- **data keys** per (tenant, scope, version), a scope being a store or table (``lake.signals``,
  ``redis``, ``dlq``...) and a version being valid for event times from its ``effective_from``
  (the key's period); each wrapped by the tenant's KEK, the associated data binding tenant,
  scope and version.

A field is encrypted with its data key by :class:`FieldCipher`: AES-256-GCM-SIV (RFC 8452, the
GCM mode that stays safe when a nonce repeats), the nonce synthetic (HMAC-SHA-256 of associated
data and plaintext under a key derived from the data key), so the same field of the same row
encrypts to the same bytes: a replay lands byte-identical files. The associated data binds
tenant, scope, column and row identity (:func:`field_aad`): a ciphertext copied to another
tenant's row, another column or another row fails to decrypt (:class:`DecryptError`).

Ciphertext layout: ``b"igf1"``, the data key version (4 bytes, big-endian), the 12-byte nonce,
then AES-GCM-SIV's ciphertext and tag. The version tells a reader which data key to fetch.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, AESGCMSIV

from core.errors import IgflowError
from core.secret_files import owner_only_secret

__all__ = [
    "KEY_BYTES",
    "DecryptError",
    "FieldCipher",
    "Kms",
    "LocalKms",
    "canonical_context",
    "field_aad",
    "key_version_of",
]

KEY_BYTES = 32
_MAGIC = b"igf1"
_NONCE = 12
_HEADER = len(_MAGIC) + 4 + _NONCE
_LOCAL_MAGIC = b"lkms1"


class DecryptError(IgflowError):
    """A ciphertext that does not decrypt under the key and associated data given: tampered,
    copied from another tenant, column or row, or its key is gone (crypto-shredded)."""


def canonical_context(context: Mapping[str, str]) -> bytes:
    """The bytes an encryption context binds: its canonical JSON (keys sorted, no spaces)."""
    return json.dumps(dict(context), sort_keys=True, separators=(",", ":")).encode()


def field_aad(tenant_id: str, scope: str, column: str, row: str) -> bytes:
    """The associated data of one stored field: tenant, scope (store or table), column and row
    identity, length-prefixed so no two tuples frame alike."""
    out = bytearray()
    for part in (tenant_id, scope, column, row):
        data = part.encode()
        out += len(data).to_bytes(4, "big") + data
    return bytes(out)


def key_version_of(ciphertext: bytes) -> int:
    """The data key version a ciphertext was written under; ``DecryptError`` if it is none of
    ours."""
    if len(ciphertext) < _HEADER + 16 or not ciphertext.startswith(_MAGIC):
        msg = "not an igflow field ciphertext"
        raise DecryptError(msg)
    return int.from_bytes(ciphertext[len(_MAGIC) : len(_MAGIC) + 4], "big")


class FieldCipher:
    """Deterministic authenticated encryption of fields under one data key and version."""

    __slots__ = ("_aead", "_mac", "_siv", "version")

    def __init__(self, data_key: bytes, version: int) -> None:
        if len(data_key) != KEY_BYTES:
            msg = f"a data key has {KEY_BYTES} bytes, got {len(data_key)}"
            raise ValueError(msg)
        self.version = version
        # Two keys from one: the cipher's and the synthetic nonce's (never the same key twice).
        self._aead = AESGCMSIV(hmac.new(data_key, b"igflow field cipher", "sha256").digest())
        self._siv = hmac.new(data_key, b"igflow field nonce", "sha256").digest()
        # A third key, for keyed hashes of fields (redaction): a digest never reveals the cipher
        # key or the nonce key, and the same message under the same data key digests alike.
        self._mac = hmac.new(data_key, b"igflow field mac", "sha256").digest()

    def mac(self, message: bytes) -> bytes:
        """HMAC-SHA-256 of ``message`` under this data key's MAC key (32 bytes)."""
        return hmac.digest(self._mac, message, "sha256")

    def encrypt(self, plaintext: bytes, aad: bytes) -> bytes:
        nonce = hmac.new(self._siv, len(aad).to_bytes(4, "big") + aad + plaintext, "sha256")
        iv = nonce.digest()[:_NONCE]
        head = _MAGIC + self.version.to_bytes(4, "big") + iv
        return head + self._aead.encrypt(iv, plaintext, head + aad)

    def decrypt(self, ciphertext: bytes, aad: bytes) -> bytes:
        if key_version_of(ciphertext) != self.version:
            msg = f"ciphertext of data key version {key_version_of(ciphertext)}, not {self.version}"
            raise DecryptError(msg)
        head, body = ciphertext[:_HEADER], ciphertext[_HEADER:]
        try:
            return self._aead.decrypt(head[-_NONCE:], body, head + aad)
        except InvalidTag as exc:
            msg = "ciphertext does not decrypt here (tampered, or another tenant, column or row)"
            raise DecryptError(msg) from exc


class Kms(Protocol):
    """What holds the root key: wraps and unwraps key material under an encryption context."""

    @property
    def key_id(self) -> str:
        """Which root key wraps (recorded beside each wrapped KEK)."""
        ...

    def wrap(self, key: bytes, context: Mapping[str, str]) -> bytes: ...

    def unwrap(self, blob: bytes, context: Mapping[str, str]) -> bytes:
        """The key; :class:`DecryptError` when ``blob`` was not wrapped here under
        ``context``."""
        ...


class LocalKms:
    """The local stack's KMS: a root key in a file readable by its owner only (0600).

    The file is created (32 random bytes) if missing; one with any group or other permission
    bit is refused (:class:`~core.errors.ConfigError`), as ssh refuses a private key. Wrapping
    is AES-256-GCM with a random nonce, the encryption context as associated data.
    """

    def __init__(self, root_key_file: Path) -> None:
        self._path = root_key_file
        root = self._root_key()
        self._aead = AESGCM(root)
        self._key_id = "local:" + hashlib.sha256(b"igflow kms id" + root).hexdigest()[:16]

    @property
    def key_id(self) -> str:
        return self._key_id

    def _root_key(self) -> bytes:
        return owner_only_secret(self._path, KEY_BYTES, "root key")

    def wrap(self, key: bytes, context: Mapping[str, str]) -> bytes:
        nonce = os.urandom(_NONCE)
        return _LOCAL_MAGIC + nonce + self._aead.encrypt(nonce, key, canonical_context(context))

    def unwrap(self, blob: bytes, context: Mapping[str, str]) -> bytes:
        head = len(_LOCAL_MAGIC)
        if not blob.startswith(_LOCAL_MAGIC) or len(blob) < head + _NONCE + 16:
            msg = "not a key wrapped by the local KMS"
            raise DecryptError(msg)
        nonce, body = blob[head : head + _NONCE], blob[head + _NONCE :]
        try:
            return self._aead.decrypt(nonce, body, canonical_context(context))
        except InvalidTag as exc:
            msg = "the local KMS cannot unwrap this key (another root key, or another context)"
            raise DecryptError(msg) from exc
