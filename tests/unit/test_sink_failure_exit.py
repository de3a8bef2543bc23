"""A sink whose writer thread failed ends the flow with its error, not with SIGABRT.

Bytewax 0.21 closes a sink partition in its ``Drop``; while the worker unwinds from the
writer's error (raised on the worker by the next ``write_batch``), a ``close`` that raised it
again was a panic within a panic, and the process aborted with no traceback (CI runs 35 and
37: the retention race's flow died with -6). The flow here is the engine's, in a child process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

_FLOW = """
import sys, threading
import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.run import cli_main
from bytewax.testing import TestingSource
from sinks.lake_group import GroupCommit
from sinks.store_pipeline import StorePipeline

KIND = sys.argv[1]
failed = threading.Event()


def fail(rows):
    failed.set()
    raise RuntimeError("the writer failed")


class Part(StatelessSinkPartition):
    def __init__(self):
        if KIND == "lake":
            self.together = GroupCommit(in_flight=5)
        else:
            self.pipe = StorePipeline("unit-exit", fail, batch_size=1, max_in_flight=1)

    def write_batch(self, items):
        if KIND == "lake":
            self.together.submit(list(items), fail)
        else:
            self.pipe.put(list(items))
        failed.wait(10)  # the next batch meets the error on the worker

    def close(self):
        if KIND == "lake":
            self.together.close()
        else:
            self.pipe.close()


class Sink(DynamicSink):
    def build(self, step_id, worker_index, worker_count):
        return Part()


flow = Dataflow("exit")
op.output("out", op.input("in", flow, TestingSource(range(20), batch_size=1)), Sink())
cli_main(flow)
"""


@pytest.mark.parametrize("kind", ["lake", "store"])
def test_a_failed_writer_ends_the_flow_with_its_error(kind: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONFAULTHANDLER"}
    done = subprocess.run(
        [sys.executable, "-c", _FLOW, kind],
        cwd=REPO,
        env={**env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode != -signal.SIGABRT, done.stderr[-3000:]
    assert done.returncode == 1, done.stderr[-3000:]
    assert "the writer failed" in done.stderr
