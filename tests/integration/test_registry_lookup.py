"""The flow's schema lookup (``core.schemas.RegistrySchemas``, standard library) answers what
confluent-kafka's client, which it replaced on the run path, answers: on the stack's registry
(``https://`` with the stack's CA when TLS is on), every registered id's text, and ``None`` for
an id the registry does not know."""

from __future__ import annotations

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient

from core.schemas import RegistrySchemas
from core.settings import Settings

pytestmark = pytest.mark.integration


def test_every_registered_id_reads_as_confluent_kafkas_client_reads_it(stack: Settings) -> None:
    kafka = stack.kafka
    lookup = RegistrySchemas(kafka.schema_registry_url, ca_location=kafka.ssl_ca_location)
    with SchemaRegistryClient(kafka.registry_config()) as client:
        ids = {
            client.get_version(subject, version).schema_id
            for subject in client.get_subjects()
            for version in client.get_versions(subject)
        }
        assert ids  # igflow setup registered the signal contracts
        for schema_id in sorted(ids):
            assert lookup(schema_id) == client.get_schema(schema_id).schema_str
    assert lookup(max(ids) + 10_000) is None
