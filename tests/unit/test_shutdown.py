"""core.shutdown's view of a cluster's connections, on real loopback sockets."""

from __future__ import annotations

import socket
import sys
import time

import pytest

from core.shutdown import cluster_socket_states, parse_proc_net_tcp

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self (Linux)")


def _states(addresses: list[str], process_id: int, want: list[str]) -> list[str]:
    deadline = time.monotonic() + 5
    states = cluster_socket_states(addresses, process_id)
    while sorted(states) != sorted(want) and time.monotonic() < deadline:
        time.sleep(0.02)
        states = cluster_socket_states(addresses, process_id)
    return states


def test_a_peer_that_closes_its_connection_shows_as_close_wait_on_both_sides() -> None:
    # Process 0 listens on its address and accepts process 1's connection, as timely does.
    with socket.socket() as listener, socket.socket() as unrelated:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        unrelated.bind(("127.0.0.1", 0))
        own = listener.getsockname()[1]
        peer = unrelated.getsockname()[1]
        addresses = [f"127.0.0.1:{own}", f"127.0.0.1:{peer}"]
        assert cluster_socket_states(addresses, 0) == []  # the listener itself does not count
        opened = socket.create_connection(("127.0.0.1", own))
        accepted, _ = listener.accept()
        with accepted:
            # Both ends live in this process: each is seen from its own side's rule.
            assert _states(addresses, 0, ["ESTABLISHED"]) == ["ESTABLISHED"]
            assert _states([addresses[1], addresses[0]], 1, ["ESTABLISHED"]) == ["ESTABLISHED"]
            opened.close()
            assert _states(addresses, 0, ["CLOSE_WAIT"]) == ["CLOSE_WAIT"]


def test_parse_proc_net_tcp_reads_addresses_ports_state_and_inode() -> None:
    text = (
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  "
        "timeout inode\n"
        "   0: 0100007F:BC03 0100007F:6D9C 08 00000000:00000000 00:00000000 00000000     0"
        "        0 123456 1 0000000000000000 20 4 30 10 -1\n"
    )
    assert list(parse_proc_net_tcp(text)) == [
        ("127.0.0.1", 0xBC03, "127.0.0.1", 0x6D9C, "CLOSE_WAIT", "123456")
    ]
