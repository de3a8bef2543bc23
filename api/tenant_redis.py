"""The tenants' Redis users, as the API uses them (:mod:`tenancy.redis_acl`).

The API provisions a tenant's user (``ACL SETUSER``, as the URL's user) the first time it reads
for a caller of that tenant, then reads as that user: before each hot-store read it
authenticates the pooled connection as the caller's tenant (``AUTH`` pipelined with the read, one
round trip), and each tenant's event subscription has its own connection logged in as that
tenant. Redis then refuses (``NOPERM``) any key or channel outside ``tenant:{caller}:``.
A user Redis forgot (it restarted: ACL users are not persisted) is provisioned again on the
next ``WRONGPASS``.
"""

from __future__ import annotations

import redis.exceptions as rx

from core.errors import IgflowError
from core.redis_tls import async_redis_client
from core.settings import Settings
from tenancy.redis_acl import acl_password, acl_setuser_args, acl_username, load_secret

__all__ = ["StoreForbidden", "TenantRedisUsers"]


class StoreForbidden(IgflowError):
    """Redis refused the caller's tenant user the key or channel (``NOPERM``)."""


class TenantRedisUsers:
    """Provisions each caller tenant's Redis user once per process and names its login."""

    def __init__(self, redis_url: str, secret: bytes, timeout_s: float = 2.0) -> None:
        self._admin = async_redis_client(
            redis_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        self._secret = secret
        self._ready: set[str] = set()

    @classmethod
    def from_settings(cls, settings: Settings) -> TenantRedisUsers | None:
        """The provisioner, or ``None`` when ``stores.redis_tenant_acl`` is off."""
        if not settings.stores.redis_tenant_acl:
            return None
        return cls(settings.stores.redis_url, load_secret(settings.redis_acl_secret_file))

    async def login(self, tenant_id: str) -> tuple[str, str]:
        """``(user, password)`` of ``tenant_id``'s user, provisioned first if this process has
        not yet (or has :meth:`forget`-ten it)."""
        if tenant_id not in self._ready:
            args = acl_setuser_args(self._secret, tenant_id)
            await self._admin.execute_command("ACL", "SETUSER", *args)  # type: ignore[no-untyped-call]
            self._ready.add(tenant_id)
        return acl_username(tenant_id), acl_password(self._secret, tenant_id)

    def forget(self, tenant_id: str) -> None:
        """Provision ``tenant_id``'s user again on its next login (Redis refused the login)."""
        self._ready.discard(tenant_id)

    async def close(self) -> None:
        await self._admin.aclose()


def refused_login(reply: object) -> bool:
    """Whether an ``AUTH`` reply says the user or password is unknown to Redis."""
    return isinstance(reply, rx.AuthenticationError | rx.ResponseError) and (
        "WRONGPASS" in str(reply) or "invalid username-password" in str(reply)
    )
