"""AWS KMS as the root of the key hierarchy (:class:`core.envelope.Kms`), through boto3.

A KEK is wrapped with ``Encrypt`` under the customer managed key ``keys.aws_key_id`` and an
``EncryptionContext`` naming the tenant and KEK version (AWS binds it as associated data and
logs it in CloudTrail); ``Decrypt`` must present the same context. ``keys.aws_endpoint_url``
points the client elsewhere (a VPC endpoint, or a KMS-compatible server for tests: the suite
runs it against moto's server). Credentials come from boto3's usual chain.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from core.envelope import DecryptError
from core.errors import ConfigError

__all__ = ["AwsKms"]


class AwsKms:
    """One AWS KMS key (id, ARN or alias) wrapping tenant KEKs."""

    def __init__(
        self, key_id: str, region: str, endpoint_url: str = "", client: Any = None
    ) -> None:
        if not key_id:
            msg = "keys.aws_key_id is empty: name the KMS key (id, ARN or alias/...)"
            raise ConfigError(msg)
        self._key_id = key_id
        self._client = client or boto3.client(
            "kms", region_name=region, endpoint_url=endpoint_url or None
        )

    @property
    def key_id(self) -> str:
        return self._key_id

    def wrap(self, key: bytes, context: Mapping[str, str]) -> bytes:
        try:
            out = self._client.encrypt(
                KeyId=self._key_id, Plaintext=key, EncryptionContext=dict(context)
            )
        except (BotoCoreError, ClientError) as exc:
            msg = f"AWS KMS cannot wrap a key with {self._key_id}: {exc}"
            raise ConfigError(msg) from exc
        blob: bytes = out["CiphertextBlob"]
        return blob

    def unwrap(self, blob: bytes, context: Mapping[str, str]) -> bytes:
        try:
            out = self._client.decrypt(
                KeyId=self._key_id, CiphertextBlob=blob, EncryptionContext=dict(context)
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "InvalidCiphertextException":
                msg = "AWS KMS cannot unwrap this key (another key, or another context)"
                raise DecryptError(msg) from exc
            msg = f"AWS KMS cannot unwrap a key with {self._key_id}: {exc}"
            raise ConfigError(msg) from exc
        except BotoCoreError as exc:
            msg = f"AWS KMS unreachable: {exc}"
            raise ConfigError(msg) from exc
        key: bytes = out["Plaintext"]
        return key
