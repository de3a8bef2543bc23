"""``igflow.local_cluster.run_forked``: the processes of ``igflow run --processes N``.

Each case runs in a fresh interpreter (forking pytest itself would copy its threads' state):
children that are one real Bytewax cluster, the exit statuses, a signal to the parent passed on
once, and children that stop when their parent is killed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from igflow.local_cluster import exit_status, free_loopback_addresses
from tests.fresh_python import REPO


def _python(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


_BYTEWAX = """
    import json, os, sys
    from bytewax.dataflow import Dataflow
    import bytewax.operators as op
    from bytewax.outputs import DynamicSink, StatelessSinkPartition
    from bytewax.run import cli_main
    from bytewax.testing import TestingSource
    from igflow.local_cluster import run_forked

    class Seen(StatelessSinkPartition):
        def __init__(self, worker):
            self.worker = worker
        def write_batch(self, items):
            for item in items:
                os.write(1, (json.dumps([os.getpid(), self.worker, item]) + "\\n").encode())

    class Out(DynamicSink):
        def build(self, step_id, worker_index, worker_count):
            assert worker_count == 2, worker_count
            return Seen(worker_index)

    flow = Dataflow("forked")
    keyed = op.key_on("key", op.input("in", flow, TestingSource(range(20))), str)
    # A stateful step routes each key to its worker: across the two processes.
    routed = op.stateful_map("routed", keyed, lambda state, v: (state, v))
    op.output("out", op.map("v", routed, lambda kv: kv[1]), Out())

    def child(cluster):
        cluster.await_listeners()  # as igflow.runner.run does (else timely's retry prints)
        cli_main(flow, workers_per_process=1, process_id=cluster.process_id,
                 addresses=list(cluster.addresses))
        return 0

    sys.exit(run_forked(2, child))
"""


def test_the_children_are_one_bytewax_cluster_of_two_processes() -> None:
    proc = _python(_BYTEWAX)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    # Every item once, across the cluster's two workers, each worker in its own process.
    assert sorted(item for _pid, _worker, item in rows) == list(range(20))
    workers = {worker: pid for pid, worker, _item in rows}
    assert set(workers) == {0, 1}
    assert workers[0] != workers[1]
    assert proc.pid not in workers.values()


_STATUSES = """
    import os, signal, sys
    from igflow.local_cluster import run_forked

    def child(cluster):
        behaviour = sys.argv[1 + cluster.process_id]
        if behaviour == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if behaviour == "raise":
            raise RuntimeError("boom")
        if behaviour == "exit":
            sys.exit(4)
        return int(behaviour)

    print(run_forked(len(sys.argv) - 1, child))
"""


@pytest.mark.parametrize(
    ("behaviours", "status"),
    [
        (("0", "0"), 0),
        (("0", "3"), 3),
        (("5", "3"), 5),  # the first failing process's, in process order
        (("0", "kill"), 128 + signal.SIGKILL),
        (("raise", "0"), 1),
        (("0", "exit"), 4),
    ],
)
def test_the_cluster_exits_with_its_first_failing_process_status(
    behaviours: tuple[str, ...], status: int
) -> None:
    proc = _python(_STATUSES, *behaviours)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert int(out.split()[-1]) == status, (out, err)
    if status:
        assert f"exited with status {status}" in err
    if "raise" in behaviours:
        assert "RuntimeError: boom" in err


_SIGNALS = """
    import os, signal, sys, time
    from igflow.local_cluster import run_forked

    def say(line):  # one write per line: the processes share the pipe
        os.write(1, (line + "\\n").encode())

    def child(cluster):
        got = []
        signal.signal(signal.SIGTERM, lambda s, f: got.append(s))
        signal.signal(signal.SIGINT, lambda s, f: got.append(s))
        say(f"child {cluster.process_id} {os.getpid()} {os.getpgid(0)}")
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and len(got) < 2:
            time.sleep(0.01)
        time.sleep(0.3)  # a third (doubled) signal would show here
        say(f"got {cluster.process_id} {got}")
        return 0

    say(f"status {run_forked(2, child)}")
"""


def test_a_signal_to_the_parent_reaches_each_child_once_in_its_own_group() -> None:
    proc = _python(_SIGNALS)
    assert proc.stdout is not None
    children = {}
    while len(children) < 2:
        line = proc.stdout.readline()
        assert line, proc.communicate()[1]
        _word, index, pid, group = line.split()
        children[int(index)] = int(pid)
        assert int(group) == int(pid)  # its own process group: a terminal's ^C skips it
    os.kill(proc.pid, signal.SIGINT)
    time.sleep(0.2)
    os.kill(proc.pid, signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    for index in (0, 1):
        assert f"got {index} [{signal.SIGINT.value}, {signal.SIGTERM.value}]" in out, out
    assert "status 0" in out


_ORPHAN = """
    import os, sys, time
    from igflow.local_cluster import run_forked

    def child(cluster):
        os.write(1, f"{os.getpid()}\\n".encode())
        time.sleep(60)
        return 0

    run_forked(2, child)
"""


def test_children_stop_when_their_parent_is_killed() -> None:
    proc = _python(_ORPHAN)
    assert proc.stdout is not None
    pids = [int(proc.stdout.readline()) for _ in range(2)]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    proc.stdout.close()
    assert proc.stderr is not None
    proc.stderr.close()
    deadline = time.monotonic() + 10
    alive = pids
    while alive and time.monotonic() < deadline:
        alive = [pid for pid in pids if _running(pid)]
        time.sleep(0.05)
    assert not alive, f"orphaned children still running: {alive}"


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_exit_status_is_a_shells() -> None:
    assert exit_status(0) == 0
    assert exit_status(3 << 8) == 3
    assert exit_status(signal.SIGKILL) == 128 + signal.SIGKILL


def test_free_loopback_addresses_are_distinct_and_loopback() -> None:
    addresses = free_loopback_addresses(3)
    assert len(set(addresses)) == 3
    assert all(a.startswith("127.0.0.1:") for a in addresses)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--processes", "0"), "--processes must be at least 1"),
        (("--processes", "2", "-i", "0", "-a", "127.0.0.1:1;127.0.0.1:2"), "not with -i/-a"),
    ],
)
def test_igflow_run_refuses_a_bad_processes_option(
    args: tuple[str, ...], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from igflow.cli import main

    assert main(["run", *args]) == 2
    assert message in capsys.readouterr().err


def test_a_fork_is_refused_while_a_python_thread_or_a_kafka_client_runs() -> None:
    import threading

    from confluent_kafka import Consumer

    from igflow.local_cluster import run_forked, unsafe_threads

    consumer = Consumer({"bootstrap.servers": "127.0.0.1:1", "group.id": "fork-check"})
    try:
        assert any(name.startswith("rdk:") for name in unsafe_threads())
    finally:
        consumer.close()
    assert not any(name.startswith("rdk:") for name in unsafe_threads())
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, name="busy")
    thread.start()
    try:
        assert "busy" in unsafe_threads()
        with pytest.raises(RuntimeError, match="busy"):
            run_forked(2, lambda _cluster: 0)
    finally:
        stop.set()
        thread.join()


_REPORTS = """
    import json, sys
    from igflow.local_cluster import run_forked, write_line

    def child(cluster):
        for i in range(2000):
            line = json.dumps({"process": cluster.process_id, "i": i, "pad": "x" * 300})
            if sys.argv[1] == "print":
                print(line, flush=True)
            else:
                write_line(line)
        return 0

    sys.exit(run_forked(2, child))
"""


@pytest.mark.parametrize("how", ["write_line", "print"])
def test_forked_processes_report_lines_that_never_interleave(how: str) -> None:
    """Two forked children writing report lines to one unbuffered pipe, as ``igflow replay
    --processes 2`` does: ``write_line`` keeps each line whole; ``print`` (text, then the
    newline) let one line hold two reports (ci69). The ``print`` case shows the failure is real
    here: it must interleave at least once in 4,000 lines."""
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_REPORTS), how],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    whole = 0
    for line in out.splitlines():
        try:
            json.loads(line)
            whole += 1
        except json.JSONDecodeError:
            pass
    if how == "write_line":
        assert whole == 4000 and len(out.splitlines()) == 4000
    else:
        assert whole < 4000, "print never interleaved: the test no longer shows the race"
