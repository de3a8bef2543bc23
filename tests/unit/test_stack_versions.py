"""docker-compose.yml runs the same Kafka and Neo4j versions as the local stack's poms, and
Neo4j with the local stack's memory settings."""

from __future__ import annotations

import re
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import yaml

from dev import neo4j as stack_neo4j
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


def test_compose_gives_neo4j_the_local_stacks_memory() -> None:
    """The heap (initial and maximum) and the page cache of ``dev/neo4j.py``, so that the graph's
    server costs the same CPU per signal in both (its GC share depends on the heap)."""
    env = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]["neo4j"][
        "environment"
    ]
    assert env["NEO4J_server_memory_heap_initial__size"] == stack_neo4j.HEAP_INITIAL
    assert env["NEO4J_server_memory_heap_max__size"] == stack_neo4j.HEAP_MAX
    assert env["NEO4J_server_memory_pagecache_size"] == stack_neo4j.PAGE_CACHE
    assert f"-Xms{stack_neo4j.HEAP_INITIAL}" in stack_neo4j.JVM_OPTIONS
    assert f"-Xmx{stack_neo4j.HEAP_MAX}" in stack_neo4j.JVM_OPTIONS


def test_compose_runs_the_prometheus_debian_ships() -> None:
    """prom/prometheus at the version of Debian's package (``make system``), which the local
    stack runs and whose promtool checks the SLO rules."""
    services = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    done = subprocess.run(
        ["/usr/bin/prometheus", "--version"], capture_output=True, text=True, check=True
    )
    match = re.search(r"version (\d+\.\d+)\.\d+", done.stdout + done.stderr)
    assert match, done.stdout + done.stderr
    assert services["prometheus"]["image"].startswith(f"prom/prometheus:v{match.group(1)}.")
