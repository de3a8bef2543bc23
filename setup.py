"""Only the native parts live here; all other metadata is in pyproject.toml.

``psi/_build_sodium.py`` compiles ``psi._sodium`` (cffi, API mode) against the system libsodium
(Debian: ``libsodium-dev``); ``core/_build_rowhash.py`` compiles ``core._rowhash`` against the
system OpenSSL's libcrypto (Debian: ``libssl-dev``).
"""

from setuptools import setup

setup(cffi_modules=["psi/_build_sodium.py:ffibuilder", "core/_build_rowhash.py:ffibuilder"])
