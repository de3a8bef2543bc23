"""Only the native parts live here; all other metadata is in pyproject.toml.

``psi/_build_sodium.py`` compiles ``psi._sodium`` (cffi, API mode) against the system libsodium
(Debian: ``libsodium-dev``); ``core/_build_rowhash.py`` compiles ``core._rowhash`` against the
system OpenSSL's libcrypto (Debian: ``libssl-dev``); ``core/_native.c`` is a CPython
extension (with libcrypto's SHA-256): the clean paths of the Kafka source, decode's signal
reader, tenant-tag, dedupe and drift's statistics in C, each beside its Python reference (no
floating-point contraction: the drift statistics must give their references' bits).
"""

from setuptools import Extension, setup

setup(
    cffi_modules=["psi/_build_sodium.py:ffibuilder", "core/_build_rowhash.py:ffibuilder"],
    ext_modules=[
        Extension(
            "core._native",
            ["core/_native.c"],
            libraries=["crypto"],
            extra_compile_args=["-O2", "-Wall", "-Werror", "-ffp-contract=off"],
        )
    ],
)
