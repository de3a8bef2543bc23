"""tests.needles.found: the same set as scanning for each needle on its own."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tests.needles import found

_BYTES = st.binary(max_size=8).map(lambda b: bytes(x % 3 for x in b))  # few letters: many hits


@given(
    blobs=st.lists(st.binary(max_size=60).map(lambda b: bytes(x % 3 for x in b)), max_size=5),
    prefix=st.binary(max_size=3).map(lambda b: bytes(x % 3 for x in b)),
    tails=st.lists(_BYTES, max_size=8),
)
def test_found_is_the_plain_scan(blobs: list[bytes], prefix: bytes, tails: list[bytes]) -> None:
    needles = {prefix + t for t in tails}
    assert found(blobs, needles) == {n for n in needles if any(n in b for b in blobs)}
    assert found(iter(blobs), iter(needles)) == found(blobs, needles)


def test_a_needle_at_the_end_of_a_blob_and_overlapping_ones() -> None:
    blob = b"xxsel-00001sel-00002sel-0000"
    assert found([blob], {b"sel-00001", b"sel-00002", b"sel-00003", b"sel-0000"}) == {
        b"sel-00001",
        b"sel-00002",
        b"sel-0000",
    }
    assert found([b"\x00\x00abc"], {b"\x00abc", b"\x00\x00ab", b"abc"}) == {
        b"\x00abc",
        b"\x00\x00ab",
        b"abc",
    }


def test_overlapping_occurrences_of_the_common_prefix() -> None:
    # "aa" occurs at 0 and at 1: the needle starts at the second.
    assert found([b"aaab"], {b"aab", b"aac"}) == {b"aab"}
