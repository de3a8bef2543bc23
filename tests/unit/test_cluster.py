"""``Cluster.worker_indices`` names the worker indices Bytewax gives a process's sinks.

The DLQ sink opens its workers' transactional producers before Bytewax builds them
(``DeadLetterSink.start``), by those indices: a wrong guess would fence another process's
live producer, so the formula is checked against Bytewax itself, two processes on loopback.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from core.cluster import Cluster, listening_ports
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


# Start: a process waits for the listeners of the processes it connects to (core.cluster).

_STARTING = """
    import sys
    from bytewax.dataflow import Dataflow
    import bytewax.operators as op
    from bytewax.run import cli_main
    from bytewax.testing import TestingSink, TestingSource
    from core.cluster import Cluster

    flow = Dataflow("start")
    op.output("out", op.input("in", flow, TestingSource([1, 2, 3])), TestingSink([]))
    cluster = Cluster(int(sys.argv[1]), tuple(sys.argv[2:]))
    print(f"waited {cluster.await_listeners():.3f}", flush=True)
    cli_main(flow, workers_per_process=1, process_id=cluster.process_id,
             addresses=list(cluster.addresses))
"""


def test_a_later_process_waits_for_the_first_to_listen_instead_of_timelys_second() -> None:
    """Regression (session 18): process 1 connecting before process 0 listened made timely
    print "error connecting to worker 0 ... retrying" and sleep a full second. Process 1 is
    started first here, process 0 half a second later: process 1 waits for its listener and
    connects once, without timely's retry."""
    addresses = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    code = textwrap.dedent(_STARTING)

    def start(i: int) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-c", code, str(i), *addresses],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    later = start(1)
    time.sleep(0.5)
    first = start(0)
    outs = {}
    for i, proc in ((1, later), (0, first)):
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        outs[i] = out
    assert "error connecting" not in outs[1]
    assert float(outs[1].split()[1]) > 0.1  # it did wait for process 0
    assert float(outs[0].split()[1]) == 0.0  # the first process connects to no one


def test_await_listeners_returns_once_the_peer_listens() -> None:
    port = free_port()
    cluster = Cluster(1, (f"127.0.0.1:{port}", f"127.0.0.1:{free_port()}"))
    listening = threading.Event()
    opened: list[float] = []

    def listen_later() -> None:
        time.sleep(0.2)
        server = socket.create_server(("127.0.0.1", port))
        opened.append(time.monotonic())
        listening.wait(10)
        server.close()

    thread = threading.Thread(target=listen_later)
    thread.start()
    try:
        waited = cluster.await_listeners(timeout=10)
        returned = time.monotonic()
    finally:
        listening.set()
        thread.join()
    assert opened and returned >= opened[0]
    assert 0.15 < waited < 0.9  # well inside timely's one-second retry


def test_await_listeners_has_nothing_to_wait_for_alone_first_or_elsewhere() -> None:
    unused = f"127.0.0.1:{free_port()}"
    assert Cluster().await_listeners(timeout=5) == pytest.approx(0, abs=0.01)
    assert Cluster(0, (unused, unused)).await_listeners(timeout=5) == pytest.approx(0, abs=0.01)
    # another host's listener is not in this host's /proc/net/tcp: timely's retry as before
    remote = Cluster(1, ("192.0.2.7:9000", unused))
    assert remote.local_peer_ports() == set()
    assert remote.await_listeners(timeout=5) == pytest.approx(0, abs=0.01)
    assert Cluster(1, ("localhost:9001", unused)).local_peer_ports() == {9001}
    assert Cluster(2, ("[::1]:9002", "127.0.0.2:9003", unused)).local_peer_ports() == {9002, 9003}


def test_await_listeners_gives_up_after_its_bound_and_without_proc(tmp_path: Path) -> None:
    cluster = Cluster(1, (f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"))
    waited = cluster.await_listeners(timeout=0.1)
    assert 0.1 <= waited < 1.0
    assert cluster.await_listeners(timeout=5, proc_net=tmp_path) == pytest.approx(0, abs=0.01)
    assert listening_ports(tmp_path) is None


def test_listening_ports_reads_listen_rows_only(tmp_path: Path) -> None:
    header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when ...\n"
    tail = " 00000000:00000000 00:00000000 00000000     0        0"
    rows = (
        f"   0: 0100007F:1F90 00000000:0000 0A{tail} 11 1\n"
        f"   1: 0100007F:1F91 0100007F:D431 01{tail} 12 1\n"
    )
    (tmp_path / "tcp").write_text(header + rows)
    assert listening_ports(tmp_path) == {0x1F90}
    with socket.create_server(("127.0.0.1", 0)) as server:
        assert server.getsockname()[1] in (listening_ports() or set())
