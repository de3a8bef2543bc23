"""An honest in-memory tenant key store for tests that run the flow without Postgres.

:class:`MemoryKeys` keeps :class:`~tenancy.keys.TenantKeys`' contract: the same cipher and the
same associated data, one random data key per (tenant, scope) made on first use, and
crypto-shredding as deletion. ``memory_sealer()`` is the flow's ``sealer`` edge over it (sealing
is on by default): unit tests seal like the real flow and open what they read with the same
helpers an analyst uses (``igflow.lake_reader.open_sealed``, ``igflow.dlq_reader``).
"""

from __future__ import annotations

import os
from datetime import datetime

from core.envelope import DecryptError, FieldCipher, field_aad, key_version_of
from tenancy.keys import KeysDestroyed
from tenancy.sealing import Sealer

__all__ = ["MemoryKeys", "memory_sealer"]


class MemoryKeys:
    """Tenant data keys in memory: :class:`~tenancy.keys.TenantKeys`' contract without
    Postgres (one version per tenant and scope, made on first use; offboarding deletes)."""

    def __init__(self) -> None:
        self._keys: dict[tuple[str, str], FieldCipher] = {}
        self._gone: set[str] = set()

    def _cipher(self, tenant_id: str, scope: str, *, create: bool) -> FieldCipher:
        if tenant_id in self._gone:
            msg = f"{tenant_id} was offboarded"
            raise KeysDestroyed(msg)
        key = (tenant_id, scope)
        if key not in self._keys:
            if not create:
                msg = f"no key for {tenant_id} in {scope}"
                raise DecryptError(msg)
            self._keys[key] = FieldCipher(os.urandom(32), 1)
        return self._keys[key]

    def encrypt_field(
        self, tenant_id: str, scope: str, column: str, row: str, ts: datetime, plaintext: bytes
    ) -> bytes:
        cipher = self._cipher(tenant_id, scope, create=True)
        return cipher.encrypt(plaintext, field_aad(tenant_id, scope, column, row))

    def decrypt_field(
        self, tenant_id: str, scope: str, column: str, row: str, ciphertext: bytes
    ) -> bytes:
        cipher = self._cipher(tenant_id, scope, create=False)
        if key_version_of(ciphertext) != cipher.version:
            msg = "unknown version"
            raise DecryptError(msg)
        return cipher.decrypt(ciphertext, field_aad(tenant_id, scope, column, row))

    def offboard(self, tenant_id: str) -> None:
        self._gone.add(tenant_id)
        self._keys = {k: v for k, v in self._keys.items() if k[0] != tenant_id}


def memory_sealer() -> Sealer:
    """A sealer over a fresh :class:`MemoryKeys`."""
    return Sealer(MemoryKeys())
