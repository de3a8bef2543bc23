"""Reason codes: the closed, non-sensitive vocabulary for rejected input.

A reason code travels with every record that leaves the happy path (DLQ header, quarantine row,
log field, metric label). It never carries data from the record itself.
"""

from __future__ import annotations

import enum

__all__ = ["ReasonCode"]


class ReasonCode(enum.StrEnum):
    """Why a record did not land where valid records land."""

    #: Not Confluent wire format (no magic byte, too short) or the Avro body does not decode.
    DECODE_FAILED = "DECODE_FAILED"
    #: The wire format names a schema id the registry does not know.
    SCHEMA_UNKNOWN = "SCHEMA_UNKNOWN"
    #: The writer schema cannot be resolved against the flow's reader schema.
    SCHEMA_INCOMPATIBLE = "SCHEMA_INCOMPATIBLE"
    #: The Kafka record carries no value (tombstone).
    EMPTY_PAYLOAD = "EMPTY_PAYLOAD"
    #: The consumer reported an error for this record.
    SOURCE_ERROR = "SOURCE_ERROR"
    FIELD_INVALID = "FIELD_INVALID"
    TS_OUT_OF_RANGE = "TS_OUT_OF_RANGE"
    TENANT_UNKNOWN = "TENANT_UNKNOWN"
    SOURCE_NOT_ALLOWED = "SOURCE_NOT_ALLOWED"
    #: The record's source is switched off (``igflow switch off source NAME``): held in the
    #: quarantine table and re-sent when it is switched back on.
    SOURCE_DISABLED = "SOURCE_DISABLED"
    #: The record's tenant is switched off (``igflow switch off tenant NAME``): held likewise.
    TENANT_DISABLED = "TENANT_DISABLED"
    #: The source registry is enforced (``sources.mode=enforce``) and the record's source is not
    #: registered (``igflow sources add``) at the record's Kafka timestamp.
    SOURCE_UNREGISTERED = "SOURCE_UNREGISTERED"
    #: The record arrived by a transport (``kafka``, or ``api`` for the API's publish) its
    #: registered source does not allow.
    SOURCE_TRANSPORT_MISMATCH = "SOURCE_TRANSPORT_MISMATCH"
    #: The record reached Kafka later after its event time than its source's SLA window.
    SOURCE_SLA_MISSED = "SOURCE_SLA_MISSED"
    #: The record's tenant's residency is not the one this deployment lands (its lake
    #: namespace), or conflicts with its source's registered residency: held in the quarantine
    #: table, re-sent by ``igflow residency release``.
    RESIDENCY_BLOCKED = "RESIDENCY_BLOCKED"
    #: The event time lies before the dedupe horizon (tenant's event time - TTL): it can no
    #: longer be checked for duplicates, so it is not landed.
    TOO_LATE = "TOO_LATE"
    DRIFT_DETECTED = "DRIFT_DETECTED"
    #: The writer schema has fields the flow does not know.
    SCHEMA_DRIFT = "SCHEMA_DRIFT"
    SINK_UNAVAILABLE = "SINK_UNAVAILABLE"
    #: The partner's PSI server did not answer after the psi step's retries.
    PSI_UNAVAILABLE = "PSI_UNAVAILABLE"
    POLICY_GEO_BLOCK = "POLICY_GEO_BLOCK"
    THRESHOLD_NOT_MET = "THRESHOLD_NOT_MET"
    RATE_LIMITED = "RATE_LIMITED"
    EPOCH_EXPIRED = "EPOCH_EXPIRED"
    MALFORMED = "MALFORMED"
    #: A retention tag that is not ``<name>-<N>d`` with N >= 1 (``igflow retention``): rows
    #: carrying it are never deleted and are reported under this code, never guessed at.
    RETENTION_TAG_INVALID = "RETENTION_TAG_INVALID"
    # The API (``igflow serve``): authentication, authorization and admission.
    #: No credentials on the request (no bearer token, no API key).
    AUTH_MISSING = "AUTH_MISSING"
    #: Credentials that do not verify: malformed, wrongly signed, ``alg: none`` or a disallowed
    #: algorithm, wrong issuer or audience, an unknown or revoked API key.
    AUTH_INVALID = "AUTH_INVALID"
    #: A token past its expiry (or not yet valid).
    AUTH_EXPIRED = "AUTH_EXPIRED"
    #: The client's address failed authentication too often: refused before any check.
    AUTH_RATE_LIMITED = "AUTH_RATE_LIMITED"
    #: The caller's tenant is not the tenant the operation names.
    TENANT_FORBIDDEN = "TENANT_FORBIDDEN"
    #: The caller lacks the scope the operation needs (``coherence:read``/``coherence:write``).
    SCOPE_MISSING = "SCOPE_MISSING"
    #: Production mode runs only allowlisted (persisted) operations.
    QUERY_NOT_ALLOWED = "QUERY_NOT_ALLOWED"
    #: An APQ hash the server does not know (the client should send the query with it).
    PERSISTED_QUERY_NOT_FOUND = "PERSISTED_QUERY_NOT_FOUND"
    #: The operation's cost exceeds the limit.
    QUERY_TOO_COSTLY = "QUERY_TOO_COSTLY"
    #: The request is not a well-formed request of its kind (bad JSON, a GraphQL syntax error).
    BAD_REQUEST = "BAD_REQUEST"
    #: A webhook push whose HMAC signature does not verify.
    SIGNATURE_INVALID = "SIGNATURE_INVALID"
    #: A webhook push whose signature was already used within its window (a replay).
    SIGNATURE_REPLAYED = "SIGNATURE_REPLAYED"
    #: The broker did not acknowledge a publish in time.
    KAFKA_UNAVAILABLE = "KAFKA_UNAVAILABLE"
    #: The serialized record is larger than the broker accepts (a client error, not an outage).
    RECORD_TOO_LARGE = "RECORD_TOO_LARGE"
    #: A store the API reads is down.
    STORE_UNAVAILABLE = "STORE_UNAVAILABLE"
    #: A store refused to show the caller the data (its tenant's Redis ACL user may not read
    #: another tenant's keys or channel): only a request the policy check let through wrongly.
    STORE_FORBIDDEN = "STORE_FORBIDDEN"
    #: A subscriber fell too far behind its events; its subscription ended.
    SUBSCRIBER_TOO_SLOW = "SUBSCRIBER_TOO_SLOW"
    #: No score for the tenant in any store; or no such API path.
    NOT_FOUND = "NOT_FOUND"
    #: The API path exists, but not for this HTTP method.
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
    #: A WebSocket asked for more subscriptions at once than ``api.ws_max_subscriptions``.
    TOO_MANY_SUBSCRIPTIONS = "TOO_MANY_SUBSCRIPTIONS"
    #: The API operation is switched off (``igflow switch off operation NAME``).
    OPERATION_DISABLED = "OPERATION_DISABLED"
    #: An unexpected failure of the server (details only in its log, never in the answer).
    INTERNAL_SERVER_ERROR = "INTERNAL_SERVER_ERROR"
    # The evidence bundle (``igflow evidence verify``): why a bundle is not the one signed.
    #: Not a readable gzip'd tar, or a member that is not a plain file, has an absolute or
    #: ``..`` path, or appears twice.
    EVIDENCE_ARCHIVE_INVALID = "EVIDENCE_ARCHIVE_INVALID"
    #: No ``manifest.json``, or one that is not the manifest format this engine writes.
    EVIDENCE_MANIFEST_INVALID = "EVIDENCE_MANIFEST_INVALID"
    #: No ``manifest.sig``, or a signature that does not verify over ``manifest.json`` with the
    #: trusted public key.
    EVIDENCE_SIGNATURE_INVALID = "EVIDENCE_SIGNATURE_INVALID"
    #: The manifest names another signing key than the trusted public key (its key id).
    EVIDENCE_KEY_MISMATCH = "EVIDENCE_KEY_MISMATCH"
    #: A member the manifest lists is not in the archive.
    EVIDENCE_MEMBER_MISSING = "EVIDENCE_MEMBER_MISSING"
    #: A member whose SHA-256 or size differs from the manifest's.
    EVIDENCE_MEMBER_ALTERED = "EVIDENCE_MEMBER_ALTERED"
    #: A member in the archive that the manifest does not list.
    EVIDENCE_MEMBER_UNEXPECTED = "EVIDENCE_MEMBER_UNEXPECTED"
    #: A member that is not what its part says (an SBOM that is not CycloneDX JSON, a test
    #: report that is not JUnit XML), or a summary in the manifest that its member contradicts.
    EVIDENCE_CONTENT_INVALID = "EVIDENCE_CONTENT_INVALID"
    #: A part the verifier requires (``--require``) is recorded as absent.
    EVIDENCE_PART_ABSENT = "EVIDENCE_PART_ABSENT"
