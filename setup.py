"""Only the native parts live here; all other metadata is in pyproject.toml.

``psi/_build_sodium.py`` compiles ``psi._sodium`` (cffi, API mode) against the system libsodium
(Debian: ``libsodium-dev``); ``core/_build_rowhash.py`` compiles ``core._rowhash`` against the
system OpenSSL's libcrypto (Debian: ``libssl-dev``); ``operators/_native.c`` is decode's
compiled signal reader (:mod:`operators.signal_reader`), a CPython extension, with libcrypto's
SHA-256.
"""

from setuptools import Extension, setup

setup(
    cffi_modules=["psi/_build_sodium.py:ffibuilder", "core/_build_rowhash.py:ffibuilder"],
    ext_modules=[
        Extension(
            "operators._native",
            ["operators/_native.c"],
            libraries=["crypto"],
            extra_compile_args=["-O2", "-Wall", "-Werror"],
        )
    ],
)
