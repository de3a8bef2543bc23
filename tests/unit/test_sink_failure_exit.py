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
import sys, threading, time
import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.run import cli_main
from bytewax.testing import TestingSource
from sinks.lake_group import GroupCommit
from sinks.store_pipeline import StorePipeline

KINDS = sys.argv[1:]
# Every writer fails on its first write, all at once; the worker goes on once all have failed,
# so the next batch meets an error on the worker (with two sinks, one raises and the other is
# closed while Bytewax unwinds).
all_failed = threading.Event()
together = threading.Barrier(len(KINDS), action=all_failed.set)
started = []


def failing(kind):
    def fail(rows):
        together.wait(10)
        raise RuntimeError(f"the {kind} writer failed")

    return fail


class Part(StatelessSinkPartition):
    def __init__(self, kind):
        self.kind = kind
        self.fail = failing(kind)
        if kind == "lake":
            self.together = GroupCommit(in_flight=5)
        else:
            self.pipe = StorePipeline("unit-exit", self.fail, batch_size=1, max_in_flight=1)
        self.first = True

    def write_batch(self, items):
        if self.kind == "lake":
            self.together.submit(list(items), self.fail)
        else:
            self.pipe.put(list(items))
        if self.first:
            self.first = False
            started.append(self.kind)
            if len(started) == len(KINDS):  # every writer has its rows
                all_failed.wait(10)
                time.sleep(0.2)  # the writers record their errors

    def close(self):
        if self.kind == "lake":
            self.together.close()
        else:
            self.pipe.close()


class Sink(DynamicSink):
    def __init__(self, kind):
        self.kind = kind

    def build(self, step_id, worker_index, worker_count):
        return Part(self.kind)


flow = Dataflow("exit")
up = op.input("in", flow, TestingSource(range(20), batch_size=1))
for kind in KINDS:
    op.output(f"out_{kind}", up, Sink(kind))
cli_main(flow)
"""


@pytest.mark.parametrize("kinds", [["lake"], ["store"], ["lake", "store"], ["store", "lake"]])
def test_a_failed_writer_ends_the_flow_with_its_error(kinds: list[str]) -> None:
    """Regression (two kinds): two sinks whose writers failed at once; one error raised on the
    worker, the other sink's ``close`` while Bytewax unwinds raised its own: SIGABRT."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONFAULTHANDLER"}
    done = subprocess.run(
        [sys.executable, "-c", _FLOW, *kinds],
        cwd=REPO,
        env={**env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode != -signal.SIGABRT, done.stderr[-3000:]
    assert done.returncode == 1, done.stderr[-3000:]
    for kind in kinds:
        assert f"the {kind} writer failed" in done.stderr
