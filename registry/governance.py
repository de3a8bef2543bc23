"""Check a repository's Avro schemas against a running (Confluent-compatible) registry.

:func:`check_schemas` only reads: it never registers, deletes or reconfigures anything.
It talks to the registry through ``confluent_kafka``'s :class:`SchemaRegistryClient`, so it
works against this package's registry and against Confluent's.
"""

from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from registry import compatibility as compat

__all__ = ["CheckResult", "check_schemas"]

_SUBJECT_NOT_FOUND, _SCHEMA_NOT_FOUND, _NO_SUBJECT_LEVEL = 40401, 40403, 40408


@dataclass(frozen=True)
class CheckResult:
    """The verdict for one repository schema.

    ``schema_file`` is a hint locating the input, ``<subject>#<position>`` (1-based position
    in that subject's list). ``registered`` means the registry already holds this exact
    schema (by identity) as a live version of the subject; such a schema is compatible,
    since registering it again is a no-op. ``compatible`` means registering it now would
    succeed; ``messages`` explains the verdict.
    """

    subject: str
    schema_file: str
    registered: bool
    compatible: bool
    messages: tuple[str, ...]


def check_schemas(
    url: str, subjects: dict[str, list[str]], *, ca_location: str = ""
) -> list[CheckResult]:
    """One :class:`CheckResult` per schema text, in input order.

    ``subjects`` maps each subject to its schema texts, oldest first. Every text is
    checked on its own against what the registry holds for the subject, under the
    subject's configured level (the registry decides: latest version for plain levels,
    all versions for transitive ones). A subject unknown to the registry is new, so its
    schemas are compatible. A schema the registry rejects as invalid is incompatible.
    ``ca_location``: the CA an ``https://`` registry's certificate must chain to.
    """
    config = {"url": url, **({"ssl.ca.location": ca_location} if ca_location else {})}
    with SchemaRegistryClient(config) as client:
        return [
            _check(client, subject, f"{subject}#{position}", text)
            for subject, texts in subjects.items()
            for position, text in enumerate(texts, start=1)
        ]


def _check(client: SchemaRegistryClient, subject: str, hint: str, text: str) -> CheckResult:
    schema = Schema(text, schema_type="AVRO")
    try:
        found = client.lookup_schema(subject, schema)
    except SchemaRegistryError as exc:
        if exc.error_code == _SUBJECT_NOT_FOUND:
            return CheckResult(subject, hint, False, True, ("new subject",))
        if exc.error_code != _SCHEMA_NOT_FOUND:
            return CheckResult(subject, hint, False, False, (exc.error_message,))
    else:
        note = f"registered as id {found.schema_id}, version {found.version}"
        return CheckResult(subject, hint, True, True, (note,))
    if client.test_compatibility_all_versions(subject, schema):
        return CheckResult(subject, hint, False, True, ())
    return CheckResult(subject, hint, False, False, _reasons(client, subject, text))


def _reasons(client: SchemaRegistryClient, subject: str, text: str) -> tuple[str, ...]:
    """Why the registry refused ``text``, recomputed from the versions it holds."""
    try:
        level = client.get_compatibility(subject)
    except SchemaRegistryError as exc:
        if exc.error_code != _NO_SUBJECT_LEVEL:
            raise
        level = client.get_compatibility()
    previous = [
        (v, client.get_version(subject, v).schema.schema_str or "")
        for v in client.get_versions(subject)
    ]
    reasons = compat.check(compat.parse(text), previous, level)
    return (f"incompatible under {level}", *reasons)
