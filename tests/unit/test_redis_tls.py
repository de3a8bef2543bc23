"""``core.redis_tls``: Redis clients that trust the stack's CA alone, one context per CA file."""

from __future__ import annotations

import os
import ssl
from pathlib import Path

import pytest

from core.redis_tls import (
    AsyncCaSSLConnection,
    CaSSLConnection,
    async_redis_client,
    redis_client,
    tls_context,
)
from dev import tls as stack_tls


@pytest.fixture
def ca(tmp_path: Path) -> str:
    return str(stack_tls.ensure(tmp_path) / stack_tls.CA_FILE)


def test_the_context_trusts_the_named_ca_alone(ca: str) -> None:
    context = tls_context(ca)
    assert [c["subject"] for c in context.get_ca_certs()] == [
        c["subject"] for c in ssl.create_default_context(cafile=ca).get_ca_certs()
    ]
    assert len(context.get_ca_certs()) == 1
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname


def test_one_context_per_ca_file_until_the_file_changes(ca: str) -> None:
    first = tls_context(ca)
    assert tls_context(ca) is first
    stat = os.stat(ca)
    os.utime(ca, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert tls_context(ca) is not first  # a rotated CA file is read again


def test_cert_reqs_as_redis_py_reads_them(ca: str) -> None:
    assert tls_context(ca, cert_reqs="none").verify_mode is ssl.CERT_NONE
    assert not tls_context(ca, cert_reqs="none").check_hostname
    assert tls_context(ca, cert_reqs=None).verify_mode is ssl.CERT_NONE  # redis-py's default
    assert tls_context(ca, cert_reqs="optional").verify_mode is ssl.CERT_OPTIONAL


def test_rediss_urls_get_the_ca_only_classes_and_others_redis_pys(ca: str) -> None:
    url = f"rediss://127.0.0.1:1/0?ssl_cert_reqs=required&ssl_ca_certs={ca}"
    sync = redis_client(url)
    assert sync.connection_pool.connection_class is CaSSLConnection
    plain = redis_client("redis://127.0.0.1:1/0")
    assert plain.connection_pool.connection_class is not CaSSLConnection
    aio = async_redis_client(url)
    assert aio.connection_pool.connection_class is AsyncCaSSLConnection
    connection = aio.connection_pool.make_connection()
    assert connection.ssl_context.get() is tls_context(ca)
    sync.close()
    plain.close()
