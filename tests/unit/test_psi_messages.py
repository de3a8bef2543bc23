"""The PSI wire format: round trips, size checks, and MALFORMED for anything else."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.reasons import ReasonCode
from psi.messages import (
    DENIAL_BYTES,
    MAX_BATCH,
    Denial,
    EvaluateRequest,
    EvaluateResponse,
    KeyId,
    Message,
    PsiMode,
    Table,
    TableRequest,
    decode,
    encode,
)

KEY = KeyId(epoch=7, generation=2, fingerprint=2**64 - 1)
MALFORMED = Denial(ReasonCode.MALFORMED)
DENIALS = [
    ReasonCode.POLICY_GEO_BLOCK,
    ReasonCode.THRESHOLD_NOT_MET,
    ReasonCode.RATE_LIMITED,
    ReasonCode.EPOCH_EXPIRED,
    ReasonCode.MALFORMED,
]


@pytest.mark.parametrize(
    "message",
    [
        TableRequest(PsiMode.FULL_INTERSECTION),
        TableRequest(PsiMode.INTERSECTION_CARDINALITY),
        Table(PsiMode.FULL_INTERSECTION, KEY, 21, bytes(range(42))),
        Table(PsiMode.INTERSECTION_CARDINALITY, KEY, 21, b""),
        EvaluateRequest(PsiMode.FULL_INTERSECTION, KEY, bytes(64)),
        EvaluateResponse(PsiMode.INTERSECTION_CARDINALITY, KEY, b"\x07" * 96),
        *[Denial(reason) for reason in DENIALS],
    ],
)
def test_every_message_round_trips(message: Message) -> None:
    assert decode(encode(message)) == message


def test_denials_are_constant_size() -> None:
    sizes = {len(encode(Denial(reason))) for reason in DENIALS}
    assert sizes == {DENIAL_BYTES}


def test_a_reason_outside_the_protocol_cannot_be_encoded() -> None:
    with pytest.raises(ValueError):
        encode(Denial(ReasonCode.DECODE_FAILED))


def test_encode_refuses_what_decode_would_refuse() -> None:
    with pytest.raises(ValueError):
        encode(EvaluateRequest(PsiMode.FULL_INTERSECTION, KEY, bytes(33)))
    with pytest.raises(ValueError):
        encode(EvaluateRequest(PsiMode.FULL_INTERSECTION, KEY, bytes(32 * (MAX_BATCH + 1))))
    with pytest.raises(ValueError):
        encode(Table(PsiMode.FULL_INTERSECTION, KEY, 21, bytes(20)))


GOOD = encode(EvaluateRequest(PsiMode.FULL_INTERSECTION, KEY, bytes(64)))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"IGPS",
        GOOD[:-1],  # truncated element
        GOOD + b"\0",  # trailing byte
        b"XXXX" + GOOD[4:],  # magic
        GOOD[:4] + b"\x02" + GOOD[5:],  # unknown version
        GOOD[:5] + b"\x09" + GOOD[6:],  # unknown kind
        GOOD[:6] + b"\x05" + GOOD[7:],  # unknown mode
        GOOD[:27] + struct.pack(">I", 3) + GOOD[31:],  # count disagrees with the payload
        GOOD[:27] + struct.pack(">I", MAX_BATCH + 1) + bytes(32 * (MAX_BATCH + 1)),  # too many
        encode(Denial(ReasonCode.MALFORMED))[:-2] + b"\x00\x00",  # reason 0
        encode(Denial(ReasonCode.MALFORMED))[:-2] + b"\x06\x00",  # reason past the table
        encode(Denial(ReasonCode.MALFORMED))[:-1] + b"\x01",  # padding not zero
        encode(TableRequest(PsiMode.FULL_INTERSECTION)) + b"\x00",
        encode(Table(PsiMode.FULL_INTERSECTION, KEY, 21, bytes(21)))[:27] + b"\x00" + bytes(4),
    ],
    ids=[
        "empty",
        "magic-only",
        "truncated",
        "trailing",
        "bad-magic",
        "bad-version",
        "bad-kind",
        "bad-mode",
        "count-mismatch",
        "over-max-batch",
        "reason-zero",
        "reason-unknown",
        "padding",
        "table-request-trailing",
        "zero-tag-width",
    ],
)
def test_malformed_input_decodes_to_malformed(data: bytes) -> None:
    assert decode(data) == MALFORMED


@given(st.binary(max_size=200))
def test_decode_never_raises(data: bytes) -> None:
    assert isinstance(
        decode(data), TableRequest | Table | EvaluateRequest | EvaluateResponse | Denial
    )


@given(st.binary(min_size=1, max_size=len(GOOD)), st.integers(0, len(GOOD) - 1))
def test_mutated_requests_never_raise(noise: bytes, at: int) -> None:
    mutated = GOOD[:at] + noise + GOOD[at + len(noise) :]
    decode(mutated)
