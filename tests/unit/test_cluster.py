"""``Cluster.worker_indices`` names the worker indices Bytewax gives a process's sinks.

The DLQ sink opens its workers' transactional producers before Bytewax builds them
(``DeadLetterSink.start``), by those indices: a wrong guess would fence another process's
live producer, so the formula is checked against Bytewax itself, two processes on loopback.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from core.cluster import Cluster
from tests.fresh_python import REPO
from tests.ports import free_port

_PROCESS = """
    import json, os, sys
    from bytewax.dataflow import Dataflow
    import bytewax.operators as op
    from bytewax.outputs import DynamicSink, StatelessSinkPartition
    from bytewax.run import cli_main
    from bytewax.testing import TestingSource

    class Nothing(StatelessSinkPartition):
        def write_batch(self, items):
            pass

    class Indices(DynamicSink):
        def build(self, step_id, worker_index, worker_count):
            # One write per line: two worker threads build at once.
            os.write(1, (json.dumps([worker_index, worker_count]) + "\\n").encode())
            return Nothing()

    flow = Dataflow("indices")
    op.output("out", op.input("in", flow, TestingSource([1, 2, 3])), Indices())
    cli_main(flow, workers_per_process=int(sys.argv[2]), process_id=int(sys.argv[1]),
             addresses=sys.argv[3:])
"""


def test_worker_indices_are_the_ones_bytewax_builds_a_process_with() -> None:
    workers = 2
    addresses = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    code = textwrap.dedent(_PROCESS)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(i), str(workers), *addresses],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(len(addresses))
    ]
    built: dict[int, list[list[int]]] = {}
    for i, proc in enumerate(procs):
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        built[i] = sorted(json.loads(line) for line in out.splitlines() if line.startswith("["))
    for i in built:
        expected = Cluster(i, tuple(addresses)).worker_indices(workers)
        assert built[i] == [[w, workers * len(addresses)] for w in expected]


def test_a_lone_process_has_the_first_indices() -> None:
    assert Cluster().worker_indices(3) == range(3)
    assert Cluster(2, ("a", "b", "c")).worker_indices(2) == range(4, 6)
