"""The schema-governance gate: ``igflow schemas check`` passes on the repository's contracts and
fails, with exit code 1 and the reason, when the registry holds an incompatible version."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

from core.settings import Settings
from tests.integration.conftest import REPO, env_for
from tests.integration.scratch import Scratch

#: The same record with ``value`` as a string: v1 and v2 cannot read data written with it.
INCOMPATIBLE = json.dumps(
    {
        "type": "record",
        "name": "Signal",
        "namespace": "io.intelgraph.coherence",
        "fields": [
            {"name": "tenant_id", "type": "string"},
            {"name": "signal_id", "type": "string"},
            {"name": "value", "type": "string"},
        ],
    }
)


def _check(settings: Settings, subject: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "igflow.cli", "schemas", "check"],
        cwd=REPO,
        env=env_for(settings, IGFLOW_KAFKA_SUBJECT=subject),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_schemas_check_passes_then_fails_on_an_incompatible_registry_version(
    stack: Settings, scratch: Scratch
) -> None:
    subject = f"it.{uuid.uuid4().hex[:8]}-value"
    scratch.subjects.add(subject)
    fresh = _check(stack, subject)
    assert fresh.returncode == 0, fresh.stderr
    assert fresh.stdout.count("compatible") == 2

    with SchemaRegistryClient(stack.kafka.registry_config()) as client:
        client.register_schema(subject, Schema(INCOMPATIBLE, "AVRO"))
    broken = _check(stack, subject)
    assert broken.returncode == 1
    assert "INCOMPATIBLE" in broken.stdout
