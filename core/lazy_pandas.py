"""pyarrow without pandas until something asks for pandas.

pyarrow imports pandas (0.35-0.9 s of CPU, measured) the first time it converts anything: the
first ``pa.array`` or ``pa.scalar`` of Python objects, ``to_numpy``, ``to_pylist``, a compute
call with a Python scalar, a Parquet write. Two places do it, each once per process: the
``_pandas_api`` shim of ``pyarrow.lib`` (``have_pandas``) and the C++ converter's static data
(pandas' ``NaT``, ``NA``, ``Timestamp`` types, to recognise pandas values in a Python sequence).
Both remember a failed import and do not try again, so :func:`defer_pandas` lets each try once
while ``import pandas`` is refused, and then allows it again.

Afterwards pyarrow converts as it does without pandas installed, which changes nothing for
Arrow, Python and NumPy values (what the flow hands it); only pandas objects inside a Python
list (``pd.NaT`` as a null, say) lose their special meaning. ``to_pandas()`` still works: the
shim imports pandas on that first explicit request. So a process that never asks for pandas
never imports it.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType

import pyarrow as pa

__all__ = ["defer_pandas"]


class _RefusePandas:
    """A meta-path finder that refuses ``pandas`` (and nothing else)."""

    def find_spec(
        self, name: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if name == "pandas" or name.startswith("pandas."):
            msg = "pandas deferred (core.lazy_pandas)"
            raise ImportError(msg, name=name)
        return None


def defer_pandas() -> bool:
    """Make pyarrow's conversions skip pandas in this process; ``False`` when pandas is already
    imported (nothing to save). Call it at start-up, before threads convert with pyarrow."""
    if "pandas" in sys.modules:
        return False
    refuse = _RefusePandas()
    sys.meta_path.insert(0, refuse)
    try:
        _ = pa.lib._pandas_api.have_pandas  # the shim tries once and remembers "no pandas"
        pa.array([0])  # the C++ converter's static data (type inference): likewise
    finally:
        sys.meta_path.remove(refuse)
    return True
