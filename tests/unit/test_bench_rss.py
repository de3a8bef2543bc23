"""benchmarks/rss.py's growth: bytes a landed signal, from RSS samples and landed counts."""

from __future__ import annotations

import pytest

from benchmarks.rss import growth

TOTAL = 100_000


def _run(bytes_a_signal: float) -> tuple[list[tuple[float, float]], list[tuple[float, int]]]:
    # 100 s landing TOTAL signals evenly; RSS 500 MiB plus what each landed signal keeps.
    landed = [(float(t), TOTAL * t // 100) for t in range(101)]
    samples = [
        (t / 10, 500 + (TOTAL * (t // 10) // 100) * bytes_a_signal / 2**20) for t in range(1001)
    ]
    return samples, landed


@pytest.mark.parametrize("kept", [0.0, 400.0, 1100.0])
def test_growth_is_what_each_signal_keeps(kept: float) -> None:
    samples, landed = _run(kept)
    result = growth(samples, landed, TOTAL)
    assert result["growth_bytes"] == pytest.approx(kept, rel=0.02, abs=1.0)
    assert result["peak_mib"] == pytest.approx(500 + TOTAL * kept / 2**20)
    assert len(result["rss_by_fifth_mib"]) == 5


def test_a_peak_early_is_not_growth() -> None:
    samples, landed = _run(0.0)
    samples[50] = (5.0, 900.0)  # a start-up spike in the first fifth
    result = growth(samples, landed, TOTAL)
    assert result["growth_bytes"] == pytest.approx(0.0, abs=1.0)
    assert result["peak_mib"] == 900.0


def test_nothing_landed_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="nothing landed"):
        growth([(0.0, 500.0)], [(1.0, 0)], 0)
