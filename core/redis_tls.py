"""Redis clients whose TLS trusts the configured CA alone, with one context per CA file.

redis-py builds ``ssl.create_default_context()`` for every new connection and then adds the
URL's ``ssl_ca_certs``: each connection loads the system trust store (~65-85 ms on the 2-core
machine, ``benchmarks/tls_connect.py``) and trusts every public CA besides the stack's, so a
certificate any public CA issued for the host name would pass. The connection classes here
build the context from the named CA file only (``ssl.create_default_context(cafile=...)`` loads
no system store), once per (CA file, its modification time, client certificate, key), and hand
it to every connection. A URL without ``ssl_ca_certs`` (the operator's ``rediss://`` to a
publicly signed server) keeps the system store: that is what it asked for. Host names are
checked, and ``ssl_cert_reqs`` is honoured as redis-py reads it.

:func:`redis_client` and :func:`async_redis_client` are ``Redis.from_url`` with those classes
for a ``rediss://`` URL; any other URL gets redis-py's own.
"""

from __future__ import annotations

import functools
import os
import ssl
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.connection import RedisSSLContext
from redis.asyncio.connection import SSLConnection as AsyncSSLConnection
from redis.connection import SSLConnection

__all__ = [
    "AsyncCaSSLConnection",
    "CaSSLConnection",
    "async_pool",
    "async_redis_client",
    "redis_client",
    "tls_context",
]

_REQS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}


def _mtime(path: str | None) -> int:
    return os.stat(path).st_mtime_ns if path else 0


@functools.lru_cache(maxsize=16)
def _cached(
    ca_file: str | None,
    _ca_mtime: int,
    certfile: str | None,
    keyfile: str | None,
    cert_reqs: ssl.VerifyMode,
    check_hostname: bool,
) -> ssl.SSLContext:
    context = (
        ssl.create_default_context(cafile=ca_file) if ca_file else ssl.create_default_context()
    )
    context.check_hostname = check_hostname and cert_reqs != ssl.CERT_NONE
    context.verify_mode = cert_reqs
    if certfile or keyfile:
        context.load_cert_chain(certfile=certfile or "", keyfile=keyfile)
    return context


def tls_context(
    ca_file: str | None,
    certfile: str | None = None,
    keyfile: str | None = None,
    cert_reqs: ssl.VerifyMode | str | None = ssl.CERT_REQUIRED,
    check_hostname: bool = True,
) -> ssl.SSLContext:
    """The shared client context for these options: trusting ``ca_file`` alone when it is
    named, the system store otherwise; rebuilt when the CA file changes (rotation)."""
    if cert_reqs is None:
        cert_reqs = ssl.CERT_NONE  # redis-py's default for a rediss:// URL without the option
    elif isinstance(cert_reqs, str):
        cert_reqs = _REQS[cert_reqs]
    return _cached(ca_file, _mtime(ca_file), certfile, keyfile, cert_reqs, check_hostname)


class CaSSLConnection(SSLConnection):
    """redis-py's ``SSLConnection`` with :func:`tls_context`; a URL with options beyond CA,
    client certificate, ``ssl_cert_reqs`` and host-name checking gets redis-py's own context."""

    def _own_options(self) -> bool:
        return any(
            (
                self.ssl_validate_ocsp,
                self.ssl_validate_ocsp_stapled,
                self.ca_data,
                self.ca_path,
                self.ssl_min_version,
                self.ssl_ciphers,
                self.ssl_include_verify_flags,
                self.ssl_exclude_verify_flags,
                self.certificate_password,
            )
        )

    def _wrap_socket_with_ssl(self, sock: Any) -> Any:
        if self._own_options():
            return super()._wrap_socket_with_ssl(sock)  # type: ignore[no-untyped-call]
        context = tls_context(
            self.ca_certs, self.certfile, self.keyfile, self.cert_reqs, self.check_hostname
        )
        return context.wrap_socket(sock, server_hostname=self.host)


class _CaContext(RedisSSLContext):
    __slots__ = ()

    def get(self) -> ssl.SSLContext:
        own = (self.ca_data, self.ca_path, self.min_version, self.ciphers, self.password)
        if any((*own, self.include_verify_flags, self.exclude_verify_flags)):
            return super().get()
        return tls_context(
            self.ca_certs, self.certfile, self.keyfile, self.cert_reqs, self.check_hostname
        )


class AsyncCaSSLConnection(AsyncSSLConnection):
    """redis-py's asyncio ``SSLConnection`` with :func:`tls_context`."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        own = self.ssl_context
        self.ssl_context = _CaContext(
            keyfile=own.keyfile,
            certfile=own.certfile,
            cert_reqs=own.cert_reqs,
            include_verify_flags=own.include_verify_flags,
            exclude_verify_flags=own.exclude_verify_flags,
            ca_certs=own.ca_certs,
            ca_data=own.ca_data,
            ca_path=own.ca_path,
            check_hostname=own.check_hostname,
            min_version=own.min_version,
            ciphers=own.ciphers,
            password=own.password,
        )


def _is_tls(url: str) -> bool:
    return url.lower().startswith("rediss://")


def redis_client(url: str, **kwargs: Any) -> redis.Redis:
    """``redis.Redis.from_url(url, **kwargs)``, with :class:`CaSSLConnection` for ``rediss://``."""
    if _is_tls(url):
        kwargs.setdefault("connection_class", CaSSLConnection)
    return redis.Redis.from_url(url, **kwargs)


def async_pool(
    url: str, pool_class: type[aioredis.ConnectionPool] = aioredis.ConnectionPool, **kwargs: Any
) -> aioredis.ConnectionPool:
    """``pool_class.from_url(url, **kwargs)``, with :class:`AsyncCaSSLConnection` for
    ``rediss://`` (the asyncio ``from_url`` lets the URL's scheme choose the class, so it is set
    on the pool before its first connection)."""
    pool = pool_class.from_url(url, **kwargs)
    if _is_tls(url):
        pool.connection_class = AsyncCaSSLConnection
    return pool


def async_redis_client(url: str, **kwargs: Any) -> aioredis.Redis:
    """``redis.asyncio.Redis.from_url(url, **kwargs)``, with :class:`AsyncCaSSLConnection` for
    ``rediss://``; the client owns its pool (closing it closes the pool)."""
    return aioredis.Redis.from_pool(async_pool(url, **kwargs))
