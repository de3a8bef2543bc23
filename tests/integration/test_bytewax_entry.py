"""``python -m bytewax.run flows.coherence:flow``: the entry point Bytewax resolves builds the
flow from ``IGFLOW_*`` and tunes the garbage collector as ``igflow run`` does
(``run.gc_oldest_threshold``, core/collector.py)."""

from __future__ import annotations

import os

import pytest

from core.settings import Settings
from tests.fresh_python import run_python

pytestmark = pytest.mark.integration


def test_the_bytewax_entry_point_tunes_the_collector_from_the_settings(
    stack: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IGFLOW_RUN_GC_OLDEST_THRESHOLD", "777")
    seen = run_python(
        """
        import gc, json
        before = gc.get_threshold()
        import flows.coherence
        flow = flows.coherence.flow
        print(json.dumps({"before": before, "after": gc.get_threshold(), "id": flow.flow_id,
                          "frozen": gc.get_freeze_count()}))
        """
    )
    assert os.environ["IGFLOW_RUN_GC_OLDEST_THRESHOLD"] == "777"
    assert seen["id"] == "coherence"
    assert seen["before"][2] != 777
    assert seen["after"] == [seen["before"][0], seen["before"][1], 777]
    assert seen["frozen"] > 0
