"""The JVM products of the local stack: their jars, fetched from Maven Central by Maven, and the
``java`` that runs them.

Each product has a pom in ``dev/maven/<product>/pom.xml`` (package data, so in the wheel too)
that names the product's own artifacts and nothing else; ``mvn dependency:build-classpath``
resolves them (downloading into ``~/.m2`` the first time) and writes the classpath to
``<state>/jars/<product>-<sha of the pom>.classpath``. A changed pom gives a new file, so a
version bump takes effect on the next start; an unchanged one costs no Maven run at all.
Nothing is built or copied: the JVM runs the jars in the local Maven repository.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from core.resources import package_path
from dev.config import StackConfig
from dev.errors import StackError

__all__ = ["MAVEN_DIR", "classpath", "classpath_args", "java"]

#: The poms' folder, found with importlib.resources.
MAVEN_DIR = package_path("dev", "maven")
#: Generous: a first resolution downloads about 140 MB (Kafka and Neo4j together).
_MAVEN_TIMEOUT_S = 900.0
_INSTALL_HINT = "run `apt-get install openjdk-17-jdk-headless maven` (or `make system`)"


def java(cfg: StackConfig) -> Path:
    """The ``java`` of ``cfg.java_home`` (``IGFLOW_STACK_JAVA_HOME``); StackError if missing."""
    binary = cfg.java_home / "bin" / "java"
    if not os.access(binary, os.X_OK):
        msg = f"no JDK at {cfg.java_home} (IGFLOW_STACK_JAVA_HOME); {_INSTALL_HINT}"
        raise StackError(msg)
    return binary


def classpath(cfg: StackConfig, product: str) -> str:
    """The product's classpath, resolved by Maven from ``dev/maven/<product>/pom.xml`` once per
    version of the pom (see the module docstring). Raises StackError with Maven's output if the
    resolution fails (no network to Maven Central, for example)."""
    pom = MAVEN_DIR / product / "pom.xml"
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()[:12]
    out = cfg.state_dir / "jars" / f"{product}-{digest}.classpath"
    if out.is_file() and _jars_present(out.read_text().strip()):
        return out.read_text().strip()
    mvn = shutil.which("mvn")
    if mvn is None:
        msg = f"{product}: Maven (`mvn`) is not installed; {_INSTALL_HINT}"
        raise StackError(msg)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    argv = [
        mvn,
        "--batch-mode",
        "--quiet",
        "--file",
        str(pom),
        "dependency:build-classpath",
        "-Dmdep.includeScope=runtime",
        f"-Dmdep.outputFile={tmp}",
    ]
    env = {**os.environ, "JAVA_HOME": str(cfg.java_home)}
    try:
        done = subprocess.run(
            argv,
            env=env,
            capture_output=True,
            text=True,
            timeout=_MAVEN_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        msg = f"{product}: Maven did not resolve {pom} within {_MAVEN_TIMEOUT_S:g}s"
        raise StackError(msg) from None
    if done.returncode != 0 or not tmp.is_file():
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-20:])
        msg = f"{product}: `mvn dependency:build-classpath` on {pom} failed:\n{tail}"
        raise StackError(msg)
    tmp.replace(out)
    return out.read_text().strip()


def classpath_args(cfg: StackConfig, product: str) -> str:
    """``@<file>``: a java argument file holding ``-cp <classpath>`` (see :func:`classpath`),
    which keeps the 200-jar classpath out of command lines and the stack's logs."""
    cp = classpath(cfg, product)
    args = cfg.state_dir / "jars" / f"{product}.args"
    args.write_text(f'-cp "{cp}"\n')
    return f"@{args}"


def _jars_present(cp: str) -> bool:
    """Whether every jar of a recorded classpath is still there (``~/.m2`` may be cleaned)."""
    return bool(cp) and all(Path(jar).is_file() for jar in cp.split(os.pathsep))
