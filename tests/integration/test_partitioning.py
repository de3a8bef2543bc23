"""The project's producers partition keyed records as Kafka's Java client does.

The oracle is Java itself: Kafka's ``Utils.murmur2`` from the kafka-clients jar of the local
stack's Kafka (resolved by ``dev.jvm``), run as a single-file Java program.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from core.settings import Settings
from dev import jvm
from dev.config import StackConfig
from igflow.workload import WorkloadSpec
from tests.integration.conftest import produce_workload, read_topic

pytestmark = pytest.mark.integration

_JAVA = """
import java.nio.charset.StandardCharsets;
import org.apache.kafka.common.utils.Utils;

public class Partitions {
    public static void main(String[] args) {
        int partitions = Integer.parseInt(args[0]);
        for (int i = 1; i < args.length; i++) {
            byte[] key = args[i].getBytes(StandardCharsets.UTF_8);
            System.out.println(Utils.toPositive(Utils.murmur2(key)) % partitions);
        }
    }
}
"""


def java_partitions(keys: list[str], partitions: int, tmp_path: Path) -> list[int]:
    """Where Kafka's Java producer puts each key (its built-in partitioner's keyed path)."""
    cfg = StackConfig.from_env(os.environ)
    source = tmp_path / "Partitions.java"
    source.write_text(_JAVA)
    done = subprocess.run(
        [
            str(jvm.java(cfg)),
            "-cp",
            jvm.classpath(cfg, "kafka"),
            str(source),
            str(partitions),
            *keys,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return [int(line) for line in done.stdout.split()]


def test_igflow_produce_partitions_keys_as_java_does(it_settings: Settings, tmp_path: Path) -> None:
    spec = WorkloadSpec(tenants=40, count=3, seed=5)
    produce_workload(it_settings, spec)
    messages = read_topic(it_settings, it_settings.kafka.topic)
    assert len(messages) == 120
    keys = sorted({m.key().decode() for m in messages})
    assert len(keys) == 40
    partitions = it_settings.kafka.partitions
    expected = dict(zip(keys, java_partitions(keys, partitions, tmp_path), strict=True))
    wrong = [
        (m.key().decode(), m.partition())
        for m in messages
        if expected[m.key().decode()] != m.partition()
    ]
    assert wrong == []
