"""The ledger's topic-id check, without a broker."""

from __future__ import annotations

import pytest

from sinks.topic_identity import TopicChanged, check_topic_ids


def test_the_first_append_records_the_ids() -> None:
    assert check_topic_ids("signals", {}, {"t": "id-1"}) == {"t": "id-1"}


def test_the_same_topic_keeps_its_id_and_others_are_kept() -> None:
    recorded = {"t": "id-1", "other": "id-9"}
    assert check_topic_ids("signals", recorded, {"t": "id-1"}) == recorded


def test_a_changed_id_is_refused_with_the_way_forward() -> None:
    with pytest.raises(TopicChanged) as err:
        check_topic_ids("signals", {"t": "id-1"}, {"t": "id-2"})
    text = str(err.value)
    assert "topic t" in text and "id-1" in text and "id-2" in text
    assert "IGFLOW_LAKE_NAMESPACE" in text
