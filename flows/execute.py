"""Executing a flow: Bytewax's ``cli_main``, told whether the snapshots are kept.

Without a recovery store Bytewax still asks every stateful step for its snapshot at each
epoch's end and drops it; :func:`execute` runs the flow inside
:func:`operators.batching.snapshots_dropped` then, so the steps do not copy their states for
nothing. With a recovery store nothing changes.
"""

from __future__ import annotations

from typing import Any

from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig
from bytewax.run import cli_main

from operators.batching import snapshots_dropped

__all__ = ["execute"]


def execute(
    flow: Dataflow, *, recovery_config: RecoveryConfig | None = None, **kwargs: Any
) -> None:
    """``cli_main(flow, recovery_config=recovery_config, **kwargs)``, the snapshots dropped when
    there is no recovery store (nothing would keep them)."""
    with snapshots_dropped(recovery_config is None):
        # bytewax's native module declares no parameter types.
        cli_main(flow, recovery_config=recovery_config, **kwargs)  # type: ignore[no-untyped-call]
