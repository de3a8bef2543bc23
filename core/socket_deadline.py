"""A client-side deadline for a blocking database call: :class:`SocketDeadline`.

A server that stops answering (a SIGSTOPped process, a network partition) is detected neither
by the server's own ``statement_timeout`` (it is the server that no longer runs) nor by TCP
keepalives (on a live host the kernel still acknowledges every packet): a read on its socket
blocks until the server resumes. The deadline shuts the socket down from a timer thread instead;
the blocked read sees end-of-file and the driver raises its "connection lost" error
(psycopg: ``OperationalError``, "server closed the connection unexpectedly").
"""

from __future__ import annotations

import os
import socket
import threading
from types import TracebackType

__all__ = ["SocketDeadline"]


class SocketDeadline:
    """Shuts a connection's socket down if the block it guards outlives ``seconds``.

    It works on its own duplicate of the socket's descriptor, so it can never shut down an
    unrelated socket that reused the number after the driver closed the connection. ``fired``
    tells whether it cut the connection (perhaps just after the call completed: the caller must
    then drop the connection all the same). :meth:`cut` fires it at once, from any thread (a
    shutdown that must not wait for a read on a paused server).
    """

    def __init__(self, fileno: int, seconds: float) -> None:
        self._fd = os.dup(fileno)
        self._lock = threading.Lock()
        self._over = False
        self.fired = False
        self._timer = threading.Timer(seconds, self.cut)
        self._timer.daemon = True

    def __enter__(self) -> SocketDeadline:
        self._timer.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with self._lock:
            self._over = True
        self._timer.cancel()
        self._timer.join()
        os.close(self._fd)

    def cut(self) -> None:
        """Shut the socket down now, unless the guarded block is over."""
        with self._lock:
            if self._over or self.fired:
                return
            self.fired = True
            sock = socket.socket(fileno=os.dup(self._fd))
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:  # already disconnected: the call fails on its own
                pass
            finally:
                sock.close()
