"""core.shutdown's view of a cluster's connections, on real loopback sockets."""

from __future__ import annotations

import os
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


def test_the_check_leaves_the_connections_blocking_and_refuses_under_a_default_timeout() -> None:
    # The states are read through duplicates of the descriptors, which share the connection's
    # file status flags: a Python socket made while a default timeout is set would switch the
    # owner's connection (timely's) to non-blocking.
    with socket.socket() as listener, socket.socket() as unrelated:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        unrelated.bind(("127.0.0.1", 0))
        addresses = [
            f"127.0.0.1:{listener.getsockname()[1]}",
            f"127.0.0.1:{unrelated.getsockname()[1]}",
        ]
        with socket.create_connection(listener.getsockname()) as opened:
            accepted, _ = listener.accept()
            with accepted:
                assert _states(addresses, 0, ["ESTABLISHED"]) == ["ESTABLISHED"]
                assert os.get_blocking(accepted.fileno())
                assert os.get_blocking(opened.fileno())
                socket.setdefaulttimeout(1.0)
                try:
                    with pytest.raises(RuntimeError, match="default socket timeout"):
                        cluster_socket_states(addresses, 0)
                finally:
                    socket.setdefaulttimeout(None)
                assert os.get_blocking(accepted.fileno())


def test_an_ipv6_peer_is_matched_by_its_address() -> None:
    try:
        listener = socket.socket(socket.AF_INET6)
        listener.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback on this host")
    with listener, socket.socket(socket.AF_INET6) as unrelated:
        listener.listen()
        unrelated.bind(("::1", 0))
        addresses = [f"[::1]:{listener.getsockname()[1]}", f"[::1]:{unrelated.getsockname()[1]}"]
        with socket.create_connection(("::1", listener.getsockname()[1])):
            accepted, _ = listener.accept()
            with accepted:
                assert _states(addresses, 0, ["ESTABLISHED"]) == ["ESTABLISHED"]
                # Seen from the other side's rule, the connection is one it opened to a peer.
                assert _states([addresses[1], addresses[0]], 1, ["ESTABLISHED"]) == ["ESTABLISHED"]


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
