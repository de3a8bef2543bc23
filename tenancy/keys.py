"""Tenant-scoped keys in Postgres, behind a KMS: data keys for the field cipher, rotation without
downtime, and crypto-shredding (``igflow keys``, ``igflow tenants offboard``).

Tables (migration ``0005``): ``tenant_keks`` (one KEK per tenant and version, wrapped by the
KMS under the context ``{tenant_id, kek_version}``), ``tenant_data_keys`` (per tenant, scope and
version, wrapped by the tenant's current KEK with AES-256-GCM, associated data
``{tenant_id, scope, version}``), ``key_audit`` (every event); migration ``0010`` adds
``key_epoch`` and ``tenant_key_epochs`` (every change of the key tables counted, and recorded
for its tenant, by triggers). See :mod:`core.envelope` for the hierarchy and the cipher.

- **Which key encrypts.** A data key version is valid for *event times* from its
  ``effective_from`` until the next version's: a record's key follows from the record, so a
  replay encrypts it alike. The first version of a (tenant, scope) is effective from the epoch
  and made on first use (concurrent makers agree: ``ON CONFLICT DO NOTHING``, then read).
- **Rotation** (:meth:`TenantKeys.rotate`): one transaction makes KEK version ``n + 1``,
  re-wraps every data key of the tenant under it, destroys the older KEKs, and adds a new data
  key version per scope effective ``rotation_grace_seconds`` from now, so every running process
  has re-read the table (``refresh_seconds``) before new data needs it. Old data keeps its
  (re-wrapped) keys and stays readable; nothing stops.
- **Offboarding** (:meth:`TenantKeys.offboard`): one transaction deletes the tenant's KEKs and
  data keys and audits it. Every field encrypted for the tenant, in every store, is unreadable
  from then on; no new key is ever made for it. A running process may hold the keys in memory
  until its next refresh (``refresh_seconds``).
- **The store unreachable.** Reads share one kept connection, each bounded by
  :data:`~tenancy.cached_table.KEPT_TIMEOUT_S` (a paused server cannot hold the sealing
  thread longer); a connection the server dropped is replaced once per read. A refresh that
  cannot reach Postgres keeps serving the keys it read less than ``rotation_grace_seconds``
  ago: no version made since can be in force yet, so they seal what a reader of the store
  would seal. An outage shorter than the grace minus the refresh (30 s by default) stops no
  seal (the lake's, the DLQ's, a recovery snapshot's); a longer one raises
  :class:`~core.errors.ConfigError` ("key store unavailable"), and an offboarding made during
  it takes hold at the next refresh that reaches the store.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import psycopg
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from core.envelope import (
    KEY_BYTES,
    DecryptError,
    FieldCipher,
    Kms,
    LocalKms,
    canonical_context,
    field_aad,
    key_version_of,
)
from core.errors import ConfigError, IgflowError
from core.settings import Settings
from tenancy.cached_table import KeptConnection

__all__ = ["DataKeyInfo", "KeysDestroyed", "Rotation", "TenantKeys", "kms_of", "tenant_keys"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_R = TypeVar("_R")
_NONCE = 12
_CONNECT_TIMEOUT_S = 5


def kms_of(settings: Settings) -> Kms:
    """The KMS ``keys.kms`` names: the local one (a root key file), or AWS KMS."""
    if settings.keys.kms == "aws":
        # boto3 is an optional dependency (``pip install 'intelgraph-streams[aws]'``): imported
        # only when AWS KMS is configured.
        try:
            from tenancy.aws_kms import AwsKms
        except ImportError as exc:
            msg = "keys.kms=aws needs boto3: pip install 'intelgraph-streams[aws]'"
            raise ConfigError(msg) from exc
        k = settings.keys
        return AwsKms(k.aws_key_id, k.aws_region, k.aws_endpoint_url)
    return LocalKms(settings.root_key_file)


def tenant_keys(settings: Settings) -> TenantKeys:
    """The tenant key store of ``settings``: its Postgres, its KMS, its refresh policy."""
    return TenantKeys(
        settings.stores.postgres_dsn,
        kms_of(settings),
        refresh_seconds=settings.keys.refresh_seconds,
        rotation_grace_seconds=settings.keys.rotation_grace_seconds,
    )


def _unavailable(exc: psycopg.OperationalError) -> ConfigError:
    return ConfigError(f"key store unavailable: {str(exc).strip()}")


class KeysDestroyed(IgflowError):
    """The tenant was offboarded: its keys are gone and no new one is made."""


@dataclasses.dataclass(frozen=True, slots=True)
class DataKeyInfo:
    """One data key's public facts (never the key)."""

    tenant_id: str
    scope: str
    version: int
    effective_from: datetime
    kek_version: int


@dataclasses.dataclass(frozen=True, slots=True)
class Rotation:
    """What :meth:`TenantKeys.rotate` did."""

    tenant_id: str
    kek_version: int
    rewrapped: int
    new_data_keys: tuple[DataKeyInfo, ...]


def _kek_context(tenant_id: str, version: int) -> dict[str, str]:
    return {"purpose": "igflow-tenant-kek", "tenant_id": tenant_id, "kek_version": str(version)}


def _dk_aad(tenant_id: str, scope: str, version: int) -> bytes:
    return canonical_context(
        {
            "purpose": "igflow-data-key",
            "tenant_id": tenant_id,
            "scope": scope,
            "version": str(version),
        }
    )


class TenantKeys:
    """Tenant keys over one Postgres database and one KMS. Thread-safe; connects lazily.

    Unwrapped keys are cached per (tenant, scope) for ``refresh_seconds``; past that a tenant's
    are read again only if they changed since: ``key_epoch`` and ``tenant_key_epochs``
    (migration ``0010``: every change of the key tables moves the one and records it in the
    other), read once per ``refresh_seconds`` for every tenant, tell whose did.
    Reads (a tenant's keys, the epoch, whether it was offboarded, the listings) and a
    (tenant, scope)'s first key share one kept connection
    (:class:`~tenancy.cached_table.KeptConnection`: each call bounded in time, a dropped
    connection replaced once per call), taking turns; a rotation or an offboarding (an
    operator's command) runs in a transaction on a connection of its own. The kept connection
    closes with :meth:`close`, when the store is collected, or at exit.
    """

    def __init__(
        self,
        dsn: str,
        kms: Kms,
        *,
        refresh_seconds: float = 30.0,
        rotation_grace_seconds: float = 60.0,
        clock: Any = time.monotonic,
    ) -> None:
        self._dsn = dsn
        self._kms = kms
        self._refresh = refresh_seconds
        self._grace = timedelta(seconds=rotation_grace_seconds)
        self._clock = clock
        self._lock = threading.Lock()
        #: (tenant, scope) -> (checked at, the ``key_epoch`` they were read or checked under,
        #: [(effective_from, cipher)] ascending)
        self._cache: dict[
            tuple[str, str], tuple[float, int, list[tuple[datetime, FieldCipher]]]
        ] = {}
        #: (read at, ``key_epoch``): the counter every change of the key tables moves.
        self._epoch: tuple[float, int] | None = None
        #: tenant -> the epoch of its last key change seen after ``_known_from`` (the first
        #: epoch read): complete from there, so keys stamped at or after it can be judged.
        self._changed: dict[str, int] = {}
        self._known_from = 0
        self._reads = KeptConnection(dsn, "key store")
        self._reads_lock = threading.Lock()
        self._closer = weakref.finalize(self, self._reads.close)

    # ------------------------------------------------------------------ fields

    def encrypt_field(
        self, tenant_id: str, scope: str, column: str, row: str, ts: datetime, plaintext: bytes
    ) -> bytes:
        """``plaintext`` of ``column`` in ``row`` of ``scope``, encrypted with the tenant's data
        key effective at event time ``ts``."""
        cipher = self._cipher_at(tenant_id, scope, ts)
        return cipher.encrypt(plaintext, field_aad(tenant_id, scope, column, row))

    def decrypt_field(
        self, tenant_id: str, scope: str, column: str, row: str, ciphertext: bytes
    ) -> bytes:
        """The plaintext; :class:`~core.envelope.DecryptError` when it does not decrypt there,
        :class:`KeysDestroyed` when the tenant was offboarded."""
        version = key_version_of(ciphertext)
        for _from, cipher in self._ciphers(tenant_id, scope, create=False):
            if cipher.version == version:
                return cipher.decrypt(ciphertext, field_aad(tenant_id, scope, column, row))
        if self._offboarded(tenant_id):
            msg = f"tenant {tenant_id!r} was offboarded: its keys are destroyed"
            raise KeysDestroyed(msg)
        msg = f"no data key version {version} for tenant {tenant_id!r} in {scope!r}"
        raise DecryptError(msg)

    def mac_field(self, tenant_id: str, scope: str, ts: datetime, message: bytes) -> bytes:
        """HMAC-SHA-256 of ``message`` under the MAC key of the tenant's data key of ``scope``
        effective at event time ``ts`` (made on first use, like an encryption key): the same
        message of the same tenant and event-time period always gives the same 32 bytes, and
        two tenants (or scopes) give different ones."""
        return self._cipher_at(tenant_id, scope, ts).mac(message)

    def _cipher_at(self, tenant_id: str, scope: str, ts: datetime) -> FieldCipher:
        chosen: FieldCipher | None = None
        for effective_from, cipher in self._ciphers(tenant_id, scope, create=True):
            if effective_from <= ts:
                chosen = cipher
        assert chosen is not None, "version 1 is effective from the epoch"
        return chosen

    def _ciphers(
        self, tenant_id: str, scope: str, *, create: bool
    ) -> list[tuple[datetime, FieldCipher]]:
        key = (tenant_id, scope)
        with self._lock:
            cached = self._cache.get(key)
        now = self._clock()
        if cached is not None and now - cached[0] < self._refresh:
            return cached[2]
        try:
            checked, epoch = self._epoch_at(now)
            with self._lock:
                unchanged = cached is not None and self._unchanged(tenant_id, cached[1])
            if unchanged:
                assert cached is not None
                ciphers = cached[2]  # none of the tenant's keys changed since they were read
            else:
                ciphers = self._load(tenant_id, scope)
        except ConfigError:
            # The key store is unreachable. Keys read (or found unchanged) less than the
            # rotation grace ago are still the ones in force: a version made since takes effect
            # no sooner than the grace after it was made (rotate), so sealing with them seals as
            # a reader of the store would. A short outage then stops no seal; a longer one does.
            if cached is not None and now - cached[0] < self._grace.total_seconds():
                return cached[2]
            raise
        if not ciphers and create:
            self._create_first(tenant_id, scope)
            checked, epoch = self._epoch_at(self._clock(), again=True)
            ciphers = self._load(tenant_id, scope)
        if ciphers:
            with self._lock:
                self._cache[key] = (checked, epoch, ciphers)
        return ciphers

    def _unchanged(self, tenant_id: str, epoch: int) -> bool:
        """Whether no key of ``tenant_id`` changed after ``epoch`` (under ``_lock``): known
        only for an epoch at or after the first one read (``_changed`` is complete from it)."""
        changed = self._changed
        return (
            epoch >= self._known_from
            and changed.get(tenant_id, -1) <= epoch
            and changed.get("", -1) <= epoch  # a TRUNCATE: every tenant
        )

    def _epoch_at(self, now: float, *, again: bool = False) -> tuple[float, int]:
        """(when it was read, ``key_epoch``): the one read less than ``refresh_seconds`` before
        ``now``, or a new read (``again``: always), which also records the tenants whose keys
        changed since the one before. Read before the keys it stamps, so keys are never
        stamped with a newer epoch than theirs (a change in between costs a re-read)."""
        with self._lock:
            if not again and self._epoch is not None and now - self._epoch[0] < self._refresh:
                return self._epoch
            since = None if self._epoch is None else self._epoch[1]
        checked = self._clock()  # before the read: its answer is at least this fresh
        epoch, changes = self._read_epoch(since)
        with self._lock:
            current = self._epoch
            if current is None:  # the first read (or the first since a refresh())
                self._known_from, self._changed = epoch, {}
                self._epoch = (checked, epoch)
            elif since is not None:
                # The changes up to current[1] are recorded and this read has those after
                # ``since`` (at most current[1]: epochs only grow), so together every change up
                # to ``epoch``.
                changed = self._changed
                for tenant, at in changes:
                    if at > changed.get(tenant, -1):
                        changed[tenant] = at
                if (epoch, checked) > (current[1], current[0]):
                    self._epoch = (checked, epoch)
            # Else another thread's first read came between: keys stamped with this epoch
            # are still judged right (the record covers what follows its own epoch).
        return checked, epoch

    def _read_epoch(self, since: int | None) -> tuple[int, list[tuple[str, int]]]:
        """``key_epoch``, and (tenant, its last change's epoch) of each tenant whose keys
        changed after ``since`` (``None``: none asked), in one snapshot."""
        if since is None:
            ((epoch,),) = self._read("SELECT epoch FROM key_epoch", ())
            return int(epoch), []
        rows = self._read(
            "SELECT e.epoch, t.tenant_id, t.epoch FROM key_epoch e"
            " LEFT JOIN tenant_key_epochs t ON t.epoch > %s",
            (since,),
        )
        return int(rows[0][0]), [(t, int(at)) for _e, t, at in rows if t is not None]

    def refresh(self) -> None:
        """Forget every cached key (the next use re-reads the tables)."""
        with self._lock:
            self._cache.clear()
            self._epoch = None

    # ------------------------------------------------------------------ storage

    def close(self) -> None:
        """Close the kept connection of the reads (a later read opens a new one)."""
        with self._reads_lock:
            self._reads.close()

    @contextmanager
    def _connect(self) -> Iterator[psycopg.Connection[Any]]:
        try:
            with psycopg.connect(self._dsn, connect_timeout=_CONNECT_TIMEOUT_S) as conn:
                yield conn
        except psycopg.OperationalError as exc:
            raise _unavailable(exc) from exc

    def _read(self, query: str, params: tuple[object, ...]) -> list[tuple[Any, ...]]:
        """The rows of one reading statement, on the kept connection."""

        def load(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
            return conn.execute(query, params).fetchall()

        return self._kept(load)

    def _kept(self, work: Callable[[psycopg.Connection[Any]], _R]) -> _R:
        """``work(connection)`` on the kept connection (:meth:`KeptConnection.read`: bounded,
        and done once more on a new connection if the kept one fails, so ``work`` must be
        safe to repeat), the store's errors as :class:`~core.errors.ConfigError`."""
        try:
            with self._reads_lock:
                return self._reads.read(work)
        except psycopg.OperationalError as exc:
            raise _unavailable(exc) from exc
        except psycopg.errors.UndefinedTable as exc:  # a database older than this code
            msg = f"key store: {str(exc).strip()} (run igflow setup to apply the migrations)"
            raise ConfigError(msg) from exc

    def _kek(self, tenant_id: str, version: int, wrapped: bytes) -> AESGCM:
        return AESGCM(self._kms.unwrap(bytes(wrapped), _kek_context(tenant_id, version)))

    def _load(self, tenant_id: str, scope: str) -> list[tuple[datetime, FieldCipher]]:
        rows = self._read(
            "SELECT d.version, d.effective_from, d.wrapped, k.version, k.wrapped"
            " FROM tenant_data_keys d JOIN tenant_keks k"
            " ON k.tenant_id = d.tenant_id AND k.version = d.kek_version"
            " WHERE d.tenant_id = %s AND d.scope = %s ORDER BY d.effective_from",
            (tenant_id, scope),
        )
        out = []
        keks: dict[int, AESGCM] = {}
        for version, effective_from, wrapped, kek_version, kek_wrapped in rows:
            kek = keks.get(kek_version) or self._kek(tenant_id, kek_version, kek_wrapped)
            keks[kek_version] = kek
            blob = bytes(wrapped)
            try:
                data_key = kek.decrypt(
                    blob[:_NONCE], blob[_NONCE:], _dk_aad(tenant_id, scope, version)
                )
            except InvalidTag as exc:
                msg = f"data key {version} of {tenant_id!r} in {scope!r} does not unwrap"
                raise DecryptError(msg) from exc
            out.append((effective_from, FieldCipher(data_key, version)))
        return out

    def _offboarded(self, tenant_id: str, conn: psycopg.Connection[Any] | None = None) -> bool:
        query = "SELECT 1 FROM key_audit WHERE tenant_id = %s AND action = 'offboarded' LIMIT 1"
        if conn is not None:
            return conn.execute(query, (tenant_id,)).fetchone() is not None
        return bool(self._read(query, (tenant_id,)))

    @staticmethod
    def _audit(
        conn: psycopg.Connection[Any], tenant_id: str, action: str, **detail: object
    ) -> None:
        conn.execute(
            "INSERT INTO key_audit (tenant_id, action, detail) VALUES (%s, %s, %s::jsonb)",
            (tenant_id, action, json.dumps(detail, sort_keys=True, default=str)),
        )

    def _current_kek(self, conn: psycopg.Connection[Any], tenant_id: str) -> tuple[int, AESGCM]:
        """The tenant's newest KEK, made (version 1) if it has none."""
        row = conn.execute(
            "SELECT version, wrapped FROM tenant_keks WHERE tenant_id = %s"
            " ORDER BY version DESC LIMIT 1",
            (tenant_id,),
        ).fetchone()
        if row is None:
            if self._offboarded(tenant_id, conn):
                msg = f"tenant {tenant_id!r} was offboarded: no key is made for it"
                raise KeysDestroyed(msg)
            wrapped = self._kms.wrap(os.urandom(KEY_BYTES), _kek_context(tenant_id, 1))
            made = conn.execute(
                "INSERT INTO tenant_keks (tenant_id, version, wrapped, kms_key_id)"
                " VALUES (%s, 1, %s, %s) ON CONFLICT DO NOTHING",
                (tenant_id, wrapped, self._kms.key_id),
            )
            if made.rowcount:
                self._audit(conn, tenant_id, "kek_created", kek_version=1, kms=self._kms.key_id)
            return self._current_kek(conn, tenant_id)
        return row[0], self._kek(tenant_id, row[0], row[1])

    def _insert_data_key(
        self,
        conn: psycopg.Connection[Any],
        tenant_id: str,
        scope: str,
        version: int,
        effective_from: datetime,
        kek_version: int,
        kek: AESGCM,
    ) -> bool:
        nonce = os.urandom(_NONCE)
        wrapped = nonce + kek.encrypt(
            nonce, os.urandom(KEY_BYTES), _dk_aad(tenant_id, scope, version)
        )
        made = conn.execute(
            "INSERT INTO tenant_data_keys"
            " (tenant_id, scope, version, effective_from, kek_version, wrapped)"
            " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (tenant_id, scope, version, effective_from, kek_version, wrapped),
        )
        if made.rowcount:
            self._audit(
                conn,
                tenant_id,
                "data_key_created",
                scope=scope,
                version=version,
                effective_from=effective_from.isoformat(),
                kek_version=kek_version,
            )
        return bool(made.rowcount)

    @staticmethod
    def _lock_tenant(conn: psycopg.Connection[Any], tenant_id: str) -> None:
        """Key changes of one tenant (first keys, rotation, offboarding) take turns."""
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('igflow-keys:' || %s))", (tenant_id,))

    def _create_first(self, tenant_id: str, scope: str) -> None:
        """The first data key of (tenant, scope) (and the tenant's first KEK), on the kept
        connection: a new tenant's first record waits for one transaction, not a connection
        too. Safe to repeat: each insert is ``ON CONFLICT DO NOTHING``."""

        def make(conn: psycopg.Connection[Any]) -> None:
            with conn.transaction():
                self._lock_tenant(conn, tenant_id)
                kek_version, kek = self._current_kek(conn, tenant_id)
                self._insert_data_key(conn, tenant_id, scope, 1, _EPOCH, kek_version, kek)

        self._kept(make)

    # ------------------------------------------------------------------ operations

    def data_keys(self, tenant_id: str | None = None) -> list[DataKeyInfo]:
        """Every data key's facts (of one tenant, or all), by tenant, scope and version."""
        query = (
            "SELECT tenant_id, scope, version, effective_from, kek_version FROM tenant_data_keys"
        )
        params: tuple[str, ...] = ()
        if tenant_id is not None:
            query += " WHERE tenant_id = %s"
            params = (tenant_id,)
        rows = self._read(query + " ORDER BY 1, 2, 3", params)
        return [DataKeyInfo(*row) for row in rows]

    def rotate(self, tenant_id: str, *, now: datetime | None = None) -> Rotation:
        """A new KEK version; every data key re-wrapped under it; the older KEKs destroyed; a
        new data key version per scope, effective ``rotation_grace_seconds`` after ``now``."""
        effective = (now or datetime.now(UTC)) + self._grace
        with self._connect() as conn, conn.transaction():
            # One rotation of a tenant at a time; a first key being made waits for it too.
            self._lock_tenant(conn, tenant_id)
            old_version, old_kek = self._current_kek(conn, tenant_id)
            new_version = old_version + 1
            new_key = os.urandom(KEY_BYTES)
            conn.execute(
                "INSERT INTO tenant_keks (tenant_id, version, wrapped, kms_key_id)"
                " VALUES (%s, %s, %s, %s)",
                (
                    tenant_id,
                    new_version,
                    self._kms.wrap(new_key, _kek_context(tenant_id, new_version)),
                    self._kms.key_id,
                ),
            )
            new_kek = AESGCM(new_key)
            rows = conn.execute(
                "SELECT d.scope, d.version, d.wrapped, k.version, k.wrapped"
                " FROM tenant_data_keys d JOIN tenant_keks k"
                " ON k.tenant_id = d.tenant_id AND k.version = d.kek_version"
                " WHERE d.tenant_id = %s ORDER BY 1, 2",
                (tenant_id,),
            ).fetchall()
            keks = {old_version: old_kek}
            scopes: dict[str, int] = {}
            for scope, version, wrapped, kek_version, kek_wrapped in rows:
                kek = keks.get(kek_version) or self._kek(tenant_id, kek_version, kek_wrapped)
                blob, aad = bytes(wrapped), _dk_aad(tenant_id, scope, version)
                data_key = kek.decrypt(blob[:_NONCE], blob[_NONCE:], aad)
                nonce = os.urandom(_NONCE)
                conn.execute(
                    "UPDATE tenant_data_keys SET kek_version = %s, wrapped = %s"
                    " WHERE tenant_id = %s AND scope = %s AND version = %s",
                    (
                        new_version,
                        nonce + new_kek.encrypt(nonce, data_key, aad),
                        tenant_id,
                        scope,
                        version,
                    ),
                )
                scopes[scope] = max(scopes.get(scope, 0), version)
            conn.execute(
                "DELETE FROM tenant_keks WHERE tenant_id = %s AND version < %s",
                (tenant_id, new_version),
            )
            made = []
            for scope, newest in sorted(scopes.items()):
                self._insert_data_key(
                    conn, tenant_id, scope, newest + 1, effective, new_version, new_kek
                )
                made.append(DataKeyInfo(tenant_id, scope, newest + 1, effective, new_version))
            self._audit(
                conn,
                tenant_id,
                "rotated",
                kek_version=new_version,
                rewrapped=len(rows),
                effective_from=effective.isoformat(),
            )
        self.refresh()
        return Rotation(tenant_id, new_version, len(rows), tuple(made))

    def offboard(self, tenant_id: str, *, note: str = "") -> dict[str, int]:
        """Destroy the tenant's keys (crypto-shredding) and audit it; what was destroyed."""
        with self._connect() as conn, conn.transaction():
            self._lock_tenant(conn, tenant_id)
            data_keys = conn.execute(
                "DELETE FROM tenant_data_keys WHERE tenant_id = %s", (tenant_id,)
            ).rowcount
            keks = conn.execute(
                "DELETE FROM tenant_keks WHERE tenant_id = %s", (tenant_id,)
            ).rowcount
            self._audit(conn, tenant_id, "offboarded", data_keys=data_keys, keks=keks, note=note)
        self.refresh()
        return {"data_keys": data_keys, "keks": keks}

    def audit(self, tenant_id: str) -> list[tuple[datetime, str, dict[str, Any]]]:
        """The tenant's key events, oldest first."""
        rows = self._read(
            "SELECT at, action, detail FROM key_audit WHERE tenant_id = %s ORDER BY id",
            (tenant_id,),
        )
        return [(at, action, detail) for at, action, detail in rows]
