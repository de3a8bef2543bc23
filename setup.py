"""Only the native part lives here; all other metadata is in pyproject.toml.

``psi/_build_sodium.py`` compiles ``psi._sodium`` (cffi, API mode) against the system libsodium
(Debian: ``libsodium-dev``).
"""

from setuptools import setup

setup(cffi_modules=["psi/_build_sodium.py:ffibuilder"])
