"""The project's exceptions: one root, a shallow tree.

::

    IgflowError
    ├── ConfigError            settings cannot be read or are invalid (fatal, at start-up)
    ├── SchemaError            a contract file is missing or unparsable (fatal, at start-up)
    ├── RegistryError          the schema registry failed for a reason other than "not found"
    └── SinkError              a store write failed at the sink boundary
        ├── RetryableSinkError     transient: connection refused, timeout, commit race
        └── FatalSinkError         permanent: schema mismatch, permission denied

Bad *input* is never an exception: it is data (an ``Err`` carrying a :class:`ReasonCode`) that
flows to the DLQ. Exceptions are for the engine's own faults.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "FatalSinkError",
    "IgflowError",
    "RegistryError",
    "RetryableSinkError",
    "SchemaError",
    "SinkError",
]


class IgflowError(Exception):
    """Root of every exception this project raises on purpose."""


class ConfigError(IgflowError):
    """Settings cannot be read or are invalid."""


def missing_dependency(exc: ModuleNotFoundError, feature: str) -> ConfigError:
    """The start-up error of an enabled ``feature`` (``"psi.server_url is set"``) whose module
    could not be imported: names the missing package, so the flow stops before it reads instead
    of failing mid-run."""
    msg = f"{feature}, but its dependency {exc.name!r} cannot be imported: {exc}"
    return ConfigError(msg)


class SchemaError(IgflowError):
    """A contract file (``.avsc``, ``.graphql``, ``.rego``) is missing or unparsable."""


class RegistryError(IgflowError):
    """The schema registry failed for a reason other than an unknown id."""


class SinkError(IgflowError):
    """A store write failed."""


class RetryableSinkError(SinkError):
    """A transient store failure: retrying the same idempotent write may succeed."""


class FatalSinkError(SinkError):
    """A permanent store failure: retrying will not help."""
