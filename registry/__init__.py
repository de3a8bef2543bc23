"""A small Confluent-Schema-Registry-compatible registry for Avro schemas.

* :func:`create_app` builds the Starlette app (``python -m registry`` serves it).
* :class:`SchemaStore` is its SQLite persistence.
* :func:`check_schemas` checks repository schemas against a running registry.
"""

from registry.app import create_app
from registry.governance import CheckResult, check_schemas
from registry.store import SchemaStore

__all__ = ["CheckResult", "SchemaStore", "check_schemas", "create_app"]
