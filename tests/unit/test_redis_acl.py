"""The tenants' Redis users: names, passwords and rules (tenancy/redis_acl.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.errors import ConfigError
from core.store_keys import applied_key, events_channel, score_key, signals_key
from tenancy.redis_acl import (
    acl_password,
    acl_setuser_args,
    acl_username,
    glob_escape,
    load_secret,
)

_SECRET = bytes(range(32))


def _glob_match(pattern: str, text: str) -> bool:
    """Redis's glob for the characters our patterns use: ``*`` and backslash escapes."""
    import re

    regex, i = "", 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            regex += re.escape(pattern[i + 1])
            i += 2
            continue
        regex += ".*" if c == "*" else ("." if c == "?" else re.escape(c))
        i += 1
    return re.fullmatch(regex, text, re.DOTALL) is not None


@given(st.text(min_size=1, max_size=40))
def test_an_escaped_pattern_matches_exactly_its_text(text: str) -> None:
    escaped = glob_escape(text)
    assert _glob_match(escaped, text)
    assert not _glob_match(escaped, text + "x")


@given(st.text(min_size=1, max_size=40), st.text(min_size=1, max_size=40))
def test_a_tenant_user_never_covers_another_tenants_keys(a: str, b: str) -> None:
    args = acl_setuser_args(_SECRET, a)
    keys = [arg[1:] for arg in args if arg.startswith("~")]
    channels = [arg[1:] for arg in args if arg.startswith("&")]
    for name in (score_key, signals_key, applied_key):
        assert any(_glob_match(k, name(a)) for k in keys)
        if a != b:  # ``a`` and ``a:x`` included: names, not a prefix
            assert not any(_glob_match(k, name(b)) for k in keys)
    assert [_glob_match(c, events_channel(b)) for c in channels] == [a == b]


def test_names_and_passwords() -> None:
    assert acl_username("t-1") == acl_username("t-1") != acl_username("t-2")
    assert acl_username("a b*").startswith("igflow-t-") and " " not in acl_username("a b*")
    assert acl_password(_SECRET, "t-1") != acl_password(_SECRET, "t-2")
    assert acl_password(_SECRET, "t-1") != acl_password(b"\x01" * 32, "t-1")
    args = acl_setuser_args(_SECRET, "t-1")
    assert args[:3] == [acl_username("t-1"), "reset", "on"]
    assert acl_password(_SECRET, "t-1") not in " ".join(args)  # only its SHA-256
    assert (
        "~tenant:t-1:score" in args
        and "~tenant:t-1:signals" in args
        and "&tenant:t-1:events" in args
        and "-@all" in args
    )


def test_the_secret_file_is_created_owner_only_and_refused_otherwise(tmp_path: Path) -> None:
    path = tmp_path / "redis" / "acl.secret"
    secret = load_secret(path)
    assert len(secret) == 32 and oct(path.stat().st_mode & 0o777) == "0o600"
    assert load_secret(path) == secret
    os.chmod(path, 0o640)
    with pytest.raises(ConfigError, match="owner only"):
        load_secret(path)
    os.chmod(path, 0o600)
    path.write_bytes(b"short")
    with pytest.raises(ConfigError, match="not 32"):
        load_secret(path)
