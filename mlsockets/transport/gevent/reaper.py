"""One greenlet per server for every timer: heartbeats, close deadlines, request-head deadlines.

A timer greenlet per connection would cost memory and a switch per tick; instead the reaper
wakes about once a second and walks the connections it knows.
"""

from __future__ import annotations

import logging
import socket
import time
from typing import TYPE_CHECKING, Any

import gevent

from mlsockets import metrics

if TYPE_CHECKING:
    from mlsockets.transport.gevent.connection import WebSocket

__all__ = ["Reaper"]

logger = logging.getLogger("mlsockets.transport")


class Reaper:
    """Tracks a server's open WebSockets and pending request heads.

    Call protocol: :meth:`add` every opened connection (``WebSocket.open`` does), :meth:`arm`
    a socket while its request head is being read and :meth:`disarm` it once read. The
    greenlet starts on first use and stops with :meth:`stop`.
    """

    def __init__(self, tick: float = 1.0) -> None:
        self.tick = tick
        self.connections: set[WebSocket] = set()
        self._heads: dict[Any, float] = {}
        self._greenlet: gevent.Greenlet[Any, Any] | None = None

    def add(self, ws: WebSocket) -> None:
        self.connections.add(ws)
        self._start()

    def discard(self, ws: WebSocket) -> None:
        self.connections.discard(ws)

    def arm(self, sock: Any, timeout: float) -> None:
        """Close ``sock`` if it is still armed ``timeout`` seconds from now."""
        self._heads[sock] = time.monotonic() + timeout
        self._start()

    def disarm(self, sock: Any) -> None:
        self._heads.pop(sock, None)

    def _start(self) -> None:
        if self._greenlet is None:
            self._greenlet = gevent.spawn(self._run)

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill(block=False)
            self._greenlet = None

    def _run(self) -> None:
        while True:
            gevent.sleep(self.tick)
            try:
                self.run_once(time.monotonic())
            except Exception:  # a bug here must not stop every heartbeat in the process
                logger.exception("reaper tick failed")
            try:
                metrics.fold()  # metrics: the per-message counts, in one batch a second
            except Exception:
                logger.exception("folding the metrics failed")

    def run_once(self, now: float) -> None:
        """One pass over every deadline and heartbeat (public for tests)."""
        if self._heads:
            expired = [sock for sock, deadline in self._heads.items() if deadline <= now]
            for sock in expired:
                del self._heads[sock]
                logger.info("closing a connection that sent no complete request head in time")
                try:
                    # close() alone is deferred while pywsgi's rfile (a makefile) is open, and
                    # would not wake the handler blocked reading it; shutdown() does both.
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                try:
                    sock.close()
                except OSError:  # pragma: no cover
                    pass
        for ws in list(self.connections):
            ws.tick(now)

    def wait_empty(self, timeout: float) -> bool:
        """Block until every connection closed or ``timeout`` seconds passed; True if empty."""
        deadline = time.monotonic() + timeout
        while self.connections and time.monotonic() < deadline:
            gevent.sleep(0.05)
        return not self.connections

    def close_all(self, code: int, reason: str) -> None:
        """Start the closing handshake on every connection (server shutdown)."""
        for ws in list(self.connections):
            try:
                ws.close(code, reason, wait=False)
            except Exception:  # pragma: no cover - one broken socket must not stop shutdown
                logger.exception("closing a connection failed")
