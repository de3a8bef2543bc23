"""``dev.kafka._cluster_id``: the id ``kafka-storage format -t`` gets, as Kafka makes one."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator

from dev.kafka import _cluster_id


def test_an_id_starting_with_a_dash_is_drawn_again() -> None:
    dash = base64.urlsafe_b64decode("-" + "A" * 21 + "==")  # 16 bytes whose id starts with -
    draws: Iterator[bytes] = iter([dash, dash, bytes(range(16))])
    assert _cluster_id(lambda _n: next(draws)) == "AAECAwQFBgcICQoLDA0ODw"


def test_ids_are_22_url_safe_characters_never_starting_with_a_dash() -> None:
    for _ in range(2_000):  # ~31 of them would start with "-" without the redraw
        cid = _cluster_id()
        assert re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_-]{21}", cid), cid
