"""Rego policy bundles: reading a policy folder, its version, and compiled, thread-safe queries.

Every policy of the project (``tenancy.rego``, ``psi.rego``, ``graphql.rego``) is compiled once
into a regopy bundle (a bundle query costs well under a millisecond, against several for an
ad-hoc query parsed and planned every time) and evaluated under a lock (one interpreter is not
safe to share between threads). Results are read from the parsed bindings: regopy's
``Output.binding()`` on an undefined result aborts the process.

regopy is imported only after the C++ runtime is loaded (:func:`_load_cxx_runtime`): its
library exports snmalloc's ``operator new`` and ``delete``, and the first library to pull in
``libstdc++`` decides what libstdc++'s own calls to them bind to.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from core.errors import SchemaError

__all__ = ["CompiledQuery", "bundle_digest", "data_document", "read_bundle", "read_policy"]

_BUNDLE_SUFFIXES = frozenset({".rego", ".json"})

#: The GNU C++ runtime's soname on Linux.
_CXX_RUNTIME = "libstdc++.so.6"


def _load_cxx_runtime() -> None:
    """Load ``libstdc++`` on its own, before regopy's library, so that its own ``operator new``
    and ``delete`` stay its own (glibc's ``malloc``).

    regopy's ``librego_shared.so`` exports snmalloc's ``operator new`` and ``delete`` and needs
    ``libstdc++``. When it is the first library loaded that needs ``libstdc++``, the dynamic
    linker relocates libstdc++ in regopy's lookup scope, and libstdc++'s internal calls (the
    ``std::string`` it grows, its locale, its exceptions) bind to regopy's snmalloc, for every
    library loaded after: Arrow's and Parquet's strings too, while their inlined deletes go to
    glibc. ``igflow run`` imports the policies before pyarrow, and its resident memory grew
    ~400 bytes a record (1.4-1.6 GB over 2,000,000 signals, the Python heap flat); with
    libstdc++ loaded first it stays at ~600 MiB (``docs/performance.md``, session 25). Loaded
    here with ``RTLD_LOCAL``, as any extension's dependency is: regopy's own code keeps its
    snmalloc. ``LD_DEBUG=bindings`` shows the bindings (``tests/unit/test_rego_load.py``).
    """
    try:
        ctypes.CDLL(_CXX_RUNTIME)
    except OSError:  # no libstdc++.so.6 (not a GNU/Linux system): no such binding to order
        return


_load_cxx_runtime()
from regopy import Interpreter  # noqa: E402  (after the C++ runtime, see above)


def read_bundle(policies_dir: Path) -> dict[str, bytes]:
    """Every ``*.rego`` and ``*.json`` file under ``policies_dir``, by POSIX relative path."""
    if not policies_dir.is_dir():
        msg = f"policy folder missing: {policies_dir}"
        raise SchemaError(msg)
    files: dict[str, bytes] = {}
    try:
        for path in policies_dir.rglob("*"):
            if path.suffix in _BUNDLE_SUFFIXES and path.is_file():
                files[path.relative_to(policies_dir).as_posix()] = path.read_bytes()
    except OSError as exc:
        msg = f"policy folder unreadable: {policies_dir}: {exc}"
        raise SchemaError(msg) from exc
    return files


def bundle_digest(files: Mapping[str, bytes]) -> str:
    """SHA-256 (hex) of a bundle read by :func:`read_bundle`."""
    digest = hashlib.sha256()
    # Each path and each body is preceded by its length (8 bytes, big-endian), so no two
    # different bundles frame to the same byte string (moving bytes from one file's end into the
    # next file's name, say). Sorting on the str sorts on the UTF-8 bytes too.
    for name in sorted(files):
        for part in (name.encode(), files[name]):
            digest.update(len(part).to_bytes(8, "big"))
            digest.update(part)
    return digest.hexdigest()


def read_policy(
    policies_dir: Path, names: tuple[str, ...], what: str
) -> tuple[dict[str, bytes], list[str]]:
    """The bundle of ``policies_dir`` and the texts of ``names`` in it, in that order.

    ``SchemaError`` naming ``what`` if one is missing or not UTF-8.
    """
    files = read_bundle(policies_dir)
    texts: list[str] = []
    for name in names:
        if name not in files:
            msg = f"{what} policy missing: {policies_dir / name}"
            raise SchemaError(msg)
        try:
            texts.append(files[name].decode("utf-8"))
        except UnicodeDecodeError as exc:
            msg = f"{what} policy file is not UTF-8: {policies_dir / name}"
            raise SchemaError(msg) from exc
    return files, texts


def data_document(data: str, what: str) -> dict[str, Any]:
    """A policy's JSON data document; ``SchemaError`` naming ``what`` unless it is an object."""
    try:
        document = json.loads(data)
    except ValueError as exc:
        msg = f"{what} data is not JSON: {exc}"
        raise SchemaError(msg) from exc
    if not isinstance(document, dict):
        msg = f"{what} data must be a JSON object"
        raise SchemaError(msg)
    return document


class CompiledQuery:
    """One Rego module (and optional data document) compiled for one query ``name := ...``."""

    def __init__(
        self, what: str, module: str, source: str, query: str, data: str | None = None
    ) -> None:
        """Compile; ``SchemaError`` naming ``what`` if the policy does not load or compile."""
        self._binding = query.split(":=", 1)[0].strip()
        builder = Interpreter()
        try:
            builder.add_module(module, source)
            if data is not None:
                builder.add_data_json(data)
            self._bundle = builder.build(query)
        except Exception as exc:
            msg = f"{what} policy does not load: {exc}"
            raise SchemaError(msg) from exc
        if not self._bundle.ok():
            msg = f"{what} policy does not compile"
            raise SchemaError(msg)
        self._rego = Interpreter()
        self._lock = threading.Lock()

    def evaluate(self, term: Mapping[str, Any]) -> Any:
        """The query's binding for input ``term``, or ``None`` when it is undefined."""
        with self._lock:
            self._rego.set_input_term(json.dumps(term))
            output = self._rego.query_bundle(self._bundle)
            ok = output.ok() and len(output) == 1
            return output[0].bindings.get(self._binding) if ok else None
