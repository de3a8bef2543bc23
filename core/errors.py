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

from typing import TypeVar

__all__ = [
    "ConfigError",
    "FatalSinkError",
    "IgflowError",
    "RegistryError",
    "RetryableSinkError",
    "SchemaError",
    "SinkError",
    "in_chain",
]


_E = TypeVar("_E", bound=BaseException)


def in_chain(exc: BaseException, kind: type[_E]) -> _E | None:
    """The first exception of type ``kind`` in ``exc``'s chain (``exc``, then its cause, else
    its context, and so on): Bytewax wraps a step's exception in its own."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


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
