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
