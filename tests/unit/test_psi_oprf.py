"""RFC 9497 OPRF(ristretto255, SHA-512), mode 0x00: the RFC's vectors and the curve's refusals."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from psi.curve import CurveError, GroupBatch, Packed, scalarmult_base
from psi.oprf import DERIVE_KEY_PAIR_DST, HASH_TO_GROUP_DST, Oprf, derive_key_pair

#: RFC 9497 Appendix A.1.1, a copy of shared/testdata's file (public test vectors).
VECTOR_FILE = Path(__file__).resolve().parents[1] / "data" / "rfc9497-ristretto255-sha512-oprf.json"
#: L, the group order, little-endian.
ORDER = (2**252 + 27742317777372353535851937790883648493).to_bytes(32, "little")


@pytest.fixture(scope="module")
def vectors() -> dict[str, object]:
    data: dict[str, object] = json.loads(VECTOR_FILE.read_text())
    return data


@pytest.fixture(scope="module", params=[1, 2], ids=["1-thread", "2-threads"])
def oprf(request: pytest.FixtureRequest) -> Iterator[Oprf]:
    with GroupBatch(request.param) as batch:
        yield Oprf(batch)


def test_context_strings_match_the_vector_file(vectors: dict[str, object]) -> None:
    assert vectors["hash_to_group_dst"] == HASH_TO_GROUP_DST.decode()
    assert vectors["derive_key_pair_dst"] == DERIVE_KEY_PAIR_DST.decode()


def test_derive_key_pair_reproduces_sksm(vectors: dict[str, object]) -> None:
    pair = derive_key_pair(
        bytes.fromhex(str(vectors["Seed"])), bytes.fromhex(str(vectors["KeyInfo"]))
    )
    assert pair.secret.hex() == vectors["skSm"]
    assert pair.public == scalarmult_base(pair.secret)
    assert "secret" not in repr(pair)


def test_rfc9497_vectors_blind_evaluate_finalize(vectors: dict[str, object], oprf: Oprf) -> None:
    secret = bytes.fromhex(str(vectors["skSm"]))
    cases = vectors["vectors"]
    assert isinstance(cases, list) and len(cases) == 2
    for case in cases:
        inputs = Packed.of([bytes.fromhex(case["Input"])])
        blind = bytes.fromhex(case["Blind"])
        blinded = oprf.blind(inputs, blind)
        assert blinded.hex() == case["BlindedElement"]
        evaluated = oprf.blind_evaluate(secret, blinded)
        assert evaluated.hex() == case["EvaluationElement"]
        assert oprf.finalize(inputs, blind, evaluated).hex() == case["Output"]
        # The server's unblinded Evaluate gives the same output.
        assert oprf.evaluate(secret, inputs).hex() == case["Output"]


def test_rfc9497_vectors_as_one_batch(vectors: dict[str, object], oprf: Oprf) -> None:
    cases = vectors["vectors"]
    assert isinstance(cases, list)
    secret = bytes.fromhex(str(vectors["skSm"]))
    many = cases * 40  # long enough to be split across threads
    inputs = Packed.of([bytes.fromhex(c["Input"]) for c in many])
    blinds = b"".join(bytes.fromhex(c["Blind"]) for c in many)
    blinded = oprf.blind(inputs, blinds)
    assert blinded.hex() == "".join(c["BlindedElement"] for c in many)
    evaluated = oprf.blind_evaluate(secret, blinded)
    assert evaluated.hex() == "".join(c["EvaluationElement"] for c in many)
    assert oprf.finalize(inputs, blinds, evaluated).hex() == "".join(c["Output"] for c in many)


def test_fresh_blinds_unblind_to_the_same_output(oprf: Oprf) -> None:
    secret = derive_key_pair(bytes(32), b"test").secret
    inputs = Packed.of([f"selector-{i}".encode() for i in range(300)])
    blinds = oprf.random_blinds(300)
    assert len(set(blinds[i : i + 32] for i in range(0, len(blinds), 32))) == 300
    out = oprf.finalize(inputs, blinds, oprf.blind_evaluate(secret, oprf.blind(inputs, blinds)))
    assert out == oprf.evaluate(secret, inputs)


def test_batch_inversion_inverts_every_scalar(oprf: Oprf) -> None:
    scalars = oprf.random_blinds(257)
    inverses = oprf.batch.invert(scalars)
    point = scalarmult_base(scalars[:32])
    for i in range(0, len(scalars), 32):
        twice = oprf.batch.scalarmult(
            inverses[i : i + 32], oprf.batch.scalarmult(scalars[i : i + 32], point)
        )
        assert twice == point


@pytest.mark.parametrize(
    "bad",
    [
        bytes(32),  # the identity
        b"\x01" + bytes(31),  # negative field element: not a canonical encoding
        b"\xff" * 32,  # above the field modulus
        (2**255 - 19).to_bytes(32, "little"),  # p itself, non-canonical zero
    ],
    ids=["identity", "negative", "too-large", "p"],
)
def test_identity_and_non_canonical_elements_are_rejected(oprf: Oprf, bad: bytes) -> None:
    secret = derive_key_pair(bytes(32), b"k").secret
    good = oprf.blind(Packed.of([b"a", b"b", b"c"]), oprf.random_blinds(3))
    elements = good[:32] + bad + good[64:]
    with pytest.raises(CurveError) as err:
        oprf.blind_evaluate(secret, elements)
    assert err.value.index == 1


@pytest.mark.parametrize(
    "scalar",
    [bytes(32), ORDER, b"\xff" * 32],
    ids=["zero", "order", "unreduced"],
)
def test_zero_and_unreduced_scalars_are_rejected(oprf: Oprf, scalar: bytes) -> None:
    point = oprf.hash_to_group(Packed.of([b"x"]))
    with pytest.raises(CurveError):
        oprf.batch.scalarmult(scalar, point)
    with pytest.raises(CurveError):
        oprf.batch.invert(oprf.random_blinds(2) + scalar)


def test_zero_scalar_has_no_base_multiple() -> None:
    with pytest.raises(CurveError):
        scalarmult_base(bytes(32))


def test_derive_key_pair_checks_its_arguments() -> None:
    with pytest.raises(ValueError):
        derive_key_pair(bytes(31), b"")
    with pytest.raises(ValueError):
        derive_key_pair(bytes(32), bytes(65536))


def test_empty_batches_are_fine(oprf: Oprf) -> None:
    empty = Packed.of([])
    secret = derive_key_pair(bytes(32), b"k").secret
    assert oprf.blind(empty, oprf.random_blinds(1)) == b""
    assert oprf.blind_evaluate(secret, b"") == b""
    assert oprf.finalize(empty, b"", b"") == b""
    assert oprf.evaluate(secret, empty) == b""
