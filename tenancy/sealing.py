"""Sealing sensitive fields for the stores, and opening them again, with tenant data keys.

:class:`Sealer` is the one place the sinks, the releases and the analyst's helper go through:
it picks the tenant's data key for the record's *event time* (:class:`~tenancy.keys.TenantKeys`),
binds tenant, scope, column and row into the associated data (:func:`core.envelope.field_aad`)
and knows the two encodings a store uses (bytes, and text for list elements). Which columns are
sealed, and their row identities, are in :mod:`core.sealing`.

A tenant that was offboarded has no key and never gets one again: :meth:`Sealer.seal` then
answers ``None`` (the caller withholds the value: keeping it in the clear would undo the
shredding), and :meth:`Sealer.open` raises :class:`~tenancy.keys.KeysDestroyed`.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Protocol

from core.envelope import DecryptError
from core.sealing import SEALED_TEXT_PREFIX, is_sealed, is_sealed_text
from core.settings import Settings
from tenancy.keys import KeysDestroyed, tenant_keys

__all__ = ["FieldKeys", "Sealer", "event_time_of_ms", "sealer_of"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class FieldKeys(Protocol):
    """What sealing needs of a key store (:class:`~tenancy.keys.TenantKeys` is one)."""

    def encrypt_field(
        self, tenant_id: str, scope: str, column: str, row: str, ts: datetime, plaintext: bytes
    ) -> bytes: ...

    def decrypt_field(
        self, tenant_id: str, scope: str, column: str, row: str, ciphertext: bytes
    ) -> bytes: ...


def event_time_of_ms(timestamp_ms: int | None) -> datetime:
    """A Kafka timestamp (ms) as the event time that picks a data key (the epoch if none)."""
    if timestamp_ms is None or timestamp_ms < 0:
        return _EPOCH
    return datetime.fromtimestamp(timestamp_ms / 1000, UTC)


class Sealer:
    """Seals and opens stored fields of one tenant at a time with that tenant's data keys."""

    __slots__ = ("keys",)

    def __init__(self, keys: FieldKeys) -> None:
        self.keys = keys

    def seal(
        self, tenant_id: str, scope: str, column: str, row: str, ts: datetime, plaintext: bytes
    ) -> bytes | None:
        """``plaintext`` sealed under the tenant's data key for event time ``ts``; ``None``
        when the tenant was offboarded (its keys are destroyed: withhold the value)."""
        try:
            return self.keys.encrypt_field(tenant_id, scope, column, row, ts, plaintext)
        except KeysDestroyed:
            return None

    def open(self, tenant_id: str, scope: str, column: str, row: str, value: bytes) -> bytes:
        """The plaintext of a stored value: opened if sealed, as is if it never was.
        :class:`~core.envelope.DecryptError` when it does not open there (another tenant, row
        or column), :class:`~tenancy.keys.KeysDestroyed` when the tenant was offboarded."""
        if not is_sealed(value):
            return value
        return self.keys.decrypt_field(tenant_id, scope, column, row, value)

    def open_as(
        self, holders: Sequence[str | None], scope: str, column: str, row: str, value: bytes
    ) -> bytes:
        """:meth:`open` for the first of ``holders`` (``None`` skipped) it opens for: the
        keyholder, then how an older release sealed (:func:`core.sealing.legacy_keyholder`).
        The first holder's error when it opens for none."""
        names = [h for h in holders if h]
        first: DecryptError | None = None
        for name in names:
            try:
                return self.open(name, scope, column, row, value)
            except DecryptError as exc:
                first = first or exc
        if first is None:
            msg = "no keyholder to open the value for"
            raise DecryptError(msg)
        raise first

    def seal_text(
        self, tenant_id: str, scope: str, column: str, row: str, ts: datetime, text: str
    ) -> str | None:
        """:meth:`seal` for a text element: :data:`~core.sealing.SEALED_TEXT_PREFIX` + base64."""
        sealed = self.seal(tenant_id, scope, column, row, ts, text.encode())
        if sealed is None:
            return None
        return SEALED_TEXT_PREFIX + base64.b64encode(sealed).decode("ascii")

    def open_text(self, tenant_id: str, scope: str, column: str, row: str, text: str) -> str:
        """:meth:`open` for a text element."""
        if not is_sealed_text(text):
            return text
        try:
            sealed = base64.b64decode(text[len(SEALED_TEXT_PREFIX) :], validate=True)
        except binascii.Error as exc:
            msg = "a sealed text element that is not base64"
            raise DecryptError(msg) from exc
        return self.open(tenant_id, scope, column, row, sealed).decode()


def sealer_of(settings: Settings) -> Sealer:
    """The sealer over the tenant key store of ``settings`` (its Postgres and KMS)."""
    return Sealer(tenant_keys(settings))
