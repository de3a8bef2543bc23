"""``core.lazy_pandas``: pyarrow converts without importing pandas, and writes the same bytes.

Each case runs in a fresh interpreter: whether pandas is imported is a property of the process,
and this test process has imported it long ago (hypothesis, pyiceberg's scans in other tests).
"""

from __future__ import annotations

from tests.fresh_python import run_python


def _python(code: str) -> dict[str, object]:
    result: dict[str, object] = run_python(code)
    return result


def test_conversions_after_defer_import_no_pandas_and_to_pandas_still_works() -> None:
    out = _python(
        """
        import datetime, io, json, sys
        import numpy as np, pyarrow as pa, pyarrow.compute as pc, pyarrow.parquet as pq
        from core.lazy_pandas import defer_pandas
        deferred = defer_pandas()
        pa.scalar(b"", pa.large_binary()); pa.scalar(True); pa.array([1, None]); pa.array(["a"])
        pa.array([datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)], pa.timestamp("us", "UTC"))
        pa.array(np.arange(3)).to_numpy(); pa.array([1.5]).to_pylist()
        pc.equal(pa.array([1, 2]), 1); pa.Table.from_pylist([{"a": 1}]).to_pylist()
        pq.write_table(pa.table({"a": [1, 2]}), io.BytesIO())
        import pyarrow.dataset
        before = "pandas" in sys.modules
        frame = pa.table({"a": [1, 2]}).to_pandas()  # asked for: imported now
        print(json.dumps({"deferred": deferred, "before": before,
                          "frame": type(frame).__name__, "rows": len(frame)}))
        """
    )
    assert out == {"deferred": True, "before": False, "frame": "DataFrame", "rows": 2}


def test_defer_is_a_no_op_once_pandas_is_imported() -> None:
    out = _python(
        """
        import json
        import pandas
        from core.lazy_pandas import defer_pandas
        print(json.dumps({"deferred": defer_pandas()}))
        """
    )
    assert out == {"deferred": False}


def test_the_lake_writes_the_golden_bytes_without_pandas() -> None:
    # The lake sink's appends (tests/data/lake_golden.json, see test_lake_golden.py), with
    # pandas deferred as `igflow run` does: same files, same snapshot properties, no pandas.
    out = _python(
        """
        import json, sys
        from core.lazy_pandas import defer_pandas
        defer_pandas()
        from tests.unit.lake_golden import GOLDEN, compute
        now = json.loads(json.dumps(compute()))
        golden = json.loads(GOLDEN.read_text(encoding="ascii"))
        print(json.dumps({"equal": now == golden, "pandas": "pandas" in sys.modules}))
        """
    )
    assert out == {"equal": True, "pandas": False}
