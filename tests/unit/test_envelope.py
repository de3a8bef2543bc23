"""The field cipher and the local KMS (core/envelope.py): what a ciphertext is bound to."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.envelope import (
    DecryptError,
    FieldCipher,
    LocalKms,
    field_aad,
    key_version_of,
)
from core.errors import ConfigError

KEY = bytes(range(32))
AAD = field_aad("tenant-a", "lake.signals", "selectors", "coherence.signals/0/17")


def test_a_field_round_trips_and_encrypts_alike_every_time() -> None:
    cipher = FieldCipher(KEY, 3)
    once = cipher.encrypt(b"sel-042", AAD)
    assert cipher.decrypt(once, AAD) == b"sel-042"
    assert FieldCipher(KEY, 3).encrypt(b"sel-042", AAD) == once  # a replay lands the same bytes
    assert key_version_of(once) == 3
    assert b"sel-042" not in once


@pytest.mark.parametrize(
    "elsewhere",
    [
        field_aad("tenant-b", "lake.signals", "selectors", "coherence.signals/0/17"),
        field_aad("tenant-a", "redis", "selectors", "coherence.signals/0/17"),
        field_aad("tenant-a", "lake.signals", "payload", "coherence.signals/0/17"),
        field_aad("tenant-a", "lake.signals", "selectors", "coherence.signals/0/18"),
    ],
    ids=["another tenant", "another store", "another column", "another row"],
)
def test_a_ciphertext_copied_elsewhere_does_not_decrypt(elsewhere: bytes) -> None:
    cipher = FieldCipher(KEY, 1)
    moved = cipher.encrypt(b"sel-042", AAD)
    with pytest.raises(DecryptError):
        cipher.decrypt(moved, elsewhere)
    assert cipher.encrypt(b"sel-042", elsewhere) != moved


def test_a_tampered_ciphertext_or_another_key_or_version_fails() -> None:
    cipher = FieldCipher(KEY, 1)
    good = cipher.encrypt(b"sel-042", AAD)
    for i in range(len(good)):
        bad = bytearray(good)
        bad[i] ^= 0x01
        with pytest.raises(DecryptError):
            cipher.decrypt(bytes(bad), AAD)
    with pytest.raises(DecryptError):
        FieldCipher(os.urandom(32), 1).decrypt(good, AAD)
    with pytest.raises(DecryptError):
        FieldCipher(KEY, 2).decrypt(good, AAD)
    with pytest.raises(DecryptError):
        key_version_of(b"plain text, not ours")


def test_the_aad_frames_its_parts() -> None:
    assert field_aad("ab", "c", "d", "e") != field_aad("a", "bc", "d", "e")


@settings(max_examples=200, deadline=None)
@given(plaintext=st.binary(max_size=300), row=st.text(max_size=40), other=st.text(max_size=40))
def test_decrypt_inverts_encrypt_and_only_for_its_row(
    plaintext: bytes, row: str, other: str
) -> None:
    cipher = FieldCipher(KEY, 7)
    aad = field_aad("t", "s", "c", row)
    sealed = cipher.encrypt(plaintext, aad)
    assert cipher.decrypt(sealed, aad) == plaintext
    if other != row:
        with pytest.raises(DecryptError):
            cipher.decrypt(sealed, field_aad("t", "s", "c", other))


def test_the_local_kms_makes_an_owner_only_root_key_and_binds_the_context(tmp_path: Path) -> None:
    path = tmp_path / "kms" / "root.key"
    kms = LocalKms(path)
    assert path.stat().st_mode & 0o777 == 0o600 and len(path.read_bytes()) == 32
    context = {"tenant_id": "tenant-a", "kek_version": "1"}
    blob = kms.wrap(KEY, context)
    assert LocalKms(path).unwrap(blob, context) == KEY  # the same root key, reopened
    assert LocalKms(path).key_id == kms.key_id
    with pytest.raises(DecryptError):
        kms.unwrap(blob, {"tenant_id": "tenant-b", "kek_version": "1"})
    with pytest.raises(DecryptError):
        LocalKms(tmp_path / "other.key").unwrap(blob, context)


def test_the_local_kms_refuses_a_root_key_others_can_read(tmp_path: Path) -> None:
    path = tmp_path / "root.key"
    LocalKms(path)
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="0600"):
        LocalKms(path)
    path.chmod(0o600)
    path.write_bytes(b"short")
    with pytest.raises(ConfigError, match="bytes"):
        LocalKms(path)
