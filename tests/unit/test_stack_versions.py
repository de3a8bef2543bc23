"""docker-compose.yml runs the same Kafka and Neo4j versions as the local stack's poms."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import yaml

from dev.jvm import MAVEN_DIR

REPO = Path(__file__).resolve().parents[2]
_POM = "{http://maven.apache.org/POM/4.0.0}"


def _pom_version(product: str, prop: str) -> str:
    root = ET.parse(MAVEN_DIR / product / "pom.xml").getroot()
    value = root.findtext(f"{_POM}properties/{_POM}{prop}")
    assert value, f"{product}/pom.xml has no {prop}"
    return value


def test_compose_pins_the_local_stacks_versions() -> None:
    services = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    assert services["kafka"]["image"] == f"apache/kafka:{_pom_version('kafka', 'kafka.version')}"
    neo4j = _pom_version("neo4j", "neo4j.version")
    assert services["neo4j"]["image"] == f"neo4j:{neo4j}-community"
