"""A wheel built from the checkout, installed in a fresh venv outside it, runs the engine.

The wheel is built from a copy of the checkout's files (tracked, or new and not ignored), as a
Docker build context or an sdist would give them, so nothing stale in the checkout (``build/``,
the editable install's ``psi/_sodium*.so``) can slip in. Its contents must be exactly the
packages' files plus the native modules. It is installed with ``--no-deps`` into a venv made
without pip; the third-party dependencies come from the checkout's venv through a ``.pth`` line
naming its site-packages. ``site`` adds such a line to ``sys.path`` but does not read the
``.pth`` files inside it, so the checkout's editable-install finder stays off: the test asserts
that the engine is imported from the fresh venv, then runs ``igflow --help``, ``setup``,
``schemas check``, ``produce`` and a bounded ``run`` from it, with the current directory
outside the checkout and no ``IGFLOW_STACK_DIR``: state goes to ``./.stack``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

from core.settings import Settings
from tests.integration.conftest import REPO, env_for, lake_count

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TENANTS, COUNT = 2, 40
#: The native modules the build compiles (the cffi ones of psi/_build_sodium.py and
#: core/_build_rowhash.py, the CPython extension core/_native.c); never a file of the checkout.
NATIVE = re.compile(r"(psi/_sodium|core/_rowhash|core/_native)\.[^/]*\.so")


def _run(
    argv: list[str | Path],
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 240,
) -> str:
    """Run a command; fail the test with its output unless it succeeds."""
    done = subprocess.run(
        [str(a) for a in argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"{argv} exited {done.returncode}:\n{done.stdout[-2000:]}{done.stderr[-3000:]}")
    return done.stdout


def _source_files() -> list[str]:
    """The checkout's files as a build would see them: tracked or new, never ignored."""
    out = _run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO)
    return sorted(f for f in out.split("\0") if f and (REPO / f).is_file())


def _top_level_packages() -> set[str]:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    return {p.split(".")[0] for p in pyproject["tool"]["setuptools"]["packages"]}


def _build_wheel(tmp_path: Path) -> tuple[Path, list[str]]:
    """Copy the checkout's files to ``tmp_path/src`` and build the wheel from them."""
    src, dist = tmp_path / "src", tmp_path / "dist"
    files = _source_files()
    for name in files:
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, src / name)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", dist, src])
    (wheel,) = dist.glob("intelgraph_streams-*.whl")
    return wheel, files


def _fresh_venv(tmp_path: Path, wheel: Path) -> Path:
    """A venv outside the checkout holding the wheel; the dependencies come by a .pth line."""
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv])
    python = venv / "bin" / "python"
    _run(
        [sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--quiet", wheel]
    )
    site = Path(
        _run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]).strip()
    )
    deps = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    (site / "_checkout_dependencies.pth").write_text("".join(f"{d}\n" for d in sorted(deps)))
    return venv


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """The wheel (built once for the module) and the files it was built from."""
    return _build_wheel(tmp_path_factory.mktemp("wheel"))


def test_wheel_contains_the_packages_files_and_the_native_module(
    built: tuple[Path, list[str]],
) -> None:
    wheel, files = built
    with zipfile.ZipFile(wheel) as zf:
        shipped = {n for n in zf.namelist() if ".dist-info/" not in n}
    native = {n for n in shipped if NATIVE.fullmatch(n)}
    assert len(native) == 3, f"psi._sodium, core._rowhash and core._native expected: {native}"
    packages = _top_level_packages()
    expected = {f for f in files if f.split("/")[0] in packages}
    # Every file of a shipped package (code, Avro, Rego, SQL, GraphQL, poms, py.typed), and
    # nothing else: no setup.py, tests, notebooks or stack state.
    assert shipped - native == expected


def test_installed_wheel_runs_outside_the_checkout(
    built: tuple[Path, list[str]], it_settings: Settings, tmp_path: Path
) -> None:
    venv = _fresh_venv(tmp_path, built[0])
    python, igflow = venv / "bin" / "python", venv / "bin" / "igflow"
    work = tmp_path / "work"
    work.mkdir()
    work = work.resolve()
    env = env_for(it_settings)
    # Outside the checkout, with the defaults an installed engine has.
    for name in ("IGFLOW_STACK_DIR", "PYICEBERG_HOME", "PYTHONPATH", "VIRTUAL_ENV"):
        env.pop(name, None)
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    if it_settings.tls.enabled:
        # The stack's CA is in the checkout's state folder, not in this one's: an installed
        # engine is told where its CA is, as one talking to production stores would be.
        env["IGFLOW_TLS_CA_FILE"] = str(it_settings.tls_ca_file)

    def run(*argv: str | Path, timeout: float = 240) -> str:
        return _run(list(argv), timeout=timeout, cwd=work, env=env)

    where = json.loads(
        run(
            python,
            "-c",
            "import json, sys, importlib.metadata as md, core, igflow, dev.config, dev.jvm, "
            "psi._sodium, core._rowhash, core._native, api.schema, core.resources as r;"
            "print(json.dumps({'modules': [m.__file__ for m in"
            " (core, igflow, psi._sodium, core._rowhash, core._native)],"
            "'data': [str(r.avro_dir()), str(r.policies_dir()), str(dev.jvm.MAVEN_DIR),"
            " str(api.schema.SCHEMA_FILE), str(r.slo_file())],"
            "'dist': str(md.distribution('intelgraph-streams').locate_file('')),"
            "'repo_root': str(dev.config.REPO_ROOT), 'path': sys.path,"
            "'finders': [getattr(f, '__module__', '') for f in sys.meta_path]}))",
        )
    )
    for path in [*where["modules"], *where["data"], where["dist"]]:
        assert Path(path).is_relative_to(venv), f"{path} is not from the fresh venv"
    assert where["repo_root"] == "None"
    assert str(REPO) not in where["path"]
    # The checkout's editable install hooks a finder module into sys.meta_path: not here.
    assert not any("editable" in f for f in where["finders"]), where["finders"]

    assert "usage: igflow" in run(igflow, "--help")
    # The SLO file ships as package data: its rules are generated outside the checkout.
    assert "slo:burn-rate-alerts" in run(igflow, "slo", "rules")
    # So do the provenance schema and the field rules the governance gate checks.
    assert "agree" in run(igflow, "governance", "check")
    done = json.loads(run(igflow, "setup"))
    # The state of an installed engine defaults to the current directory's .stack.
    assert (work / done["pyiceberg_config"]).resolve() == work / ".stack" / ".pyiceberg.yaml"
    assert (work / done["api_keys_dir"]).resolve() == work / ".stack" / "api"
    assert done["migrations_applied"] is not None
    run(igflow, "schemas", "check")
    produced = json.loads(run(igflow, "produce", "--tenants", str(TENANTS), "--count", str(COUNT)))
    assert produced["total"] == TENANTS * COUNT
    run(igflow, "run")
    assert lake_count(it_settings) == TENANTS * COUNT
