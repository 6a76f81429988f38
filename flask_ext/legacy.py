"""Serving under gevent-websocket's worker, where the 101 is sent before the app runs.

``gunicorn -k geventwebsocket.gunicorn.workers.GeventWebSocketWorker`` puts no
``environ["mlsockets.upgrade"]`` in the environ, only ``environ["wsgi.websocket"]``: the
connection is open already. The extension runs the same handshake view (session, Flask-Login,
``before_request``, Origin, rate limit, authentication), then:

- refused (any other answer of a handshake endpoint, a ``before_request`` hook's included):
  the connection is closed with 1008 (1011 for a 5xx), the reason being the HTTP status,
  e.g. ``"401 Unauthorized"``; see :func:`close_refused`;
- accepted: the view returns a response whose body iterator runs the connection inline
  (``ws.receive()`` -> ``hub.receive``). The server iterates it after the view returned, so
  no Flask context is held meanwhile (:func:`run_inline`).

gevent-websocket only answers with a subprotocol that the WSGI app object names through its
``app_protocol(path)`` hook; ``init_app`` installs one on the Flask app, naming the first
configured format (the only one negotiable there). Its ``close()`` puts the reason where the
status code belongs, so :class:`LegacySocket` writes close frames itself.
"""

from __future__ import annotations

import logging
import struct
import threading
from collections.abc import Iterator
from typing import Any

from mlsockets.exceptions import ConnectionClosedError
from mlsockets.hub import Hub
from mlsockets.typing import Message

from .context import FlaskConnection

__all__ = ["LegacySocket", "close_refused", "run_inline"]

logger = logging.getLogger("mlsockets.flask")

POLICY_VIOLATION = 1008
INTERNAL_ERROR = 1011
ABNORMAL_CLOSURE = 1006
_MAX_REASON = 123  # RFC 6455 section 5.5: control frame payloads are at most 125 bytes


class LegacySocket:
    """gevent-websocket's ``environ["wsgi.websocket"]`` as a :class:`~mlsockets.auth.RawWebSocket`.

    Sends are serialized by a lock (a broadcast from another greenlet may send while this
    connection's greenlet sends a reply) and, unlike mlsockets' own connections, block until
    the socket took the bytes: gevent-websocket has no outbound queue. The lock is a gevent
    lock in the monkey-patched worker.
    """

    def __init__(self, ws: Any, subprotocol: str | None = None) -> None:
        self._ws = ws
        self._subprotocol = subprotocol
        self._lock = threading.Lock()
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed or bool(getattr(self._ws, "closed", False))

    @property
    def subprotocol(self) -> str | None:
        return self._subprotocol

    def receive(self) -> Message | None:
        """The next message; None once the connection is closed or broken."""
        if self._closed:
            return None
        try:
            message = self._ws.receive()
        except Exception:  # gevent-websocket raises WebSocketError on a closed socket
            return None
        if isinstance(message, bytearray | memoryview):
            return bytes(message)
        return message if isinstance(message, str | bytes) else None

    def send(self, message: Message, binary: bool | None = None) -> None:
        with self._lock:
            if self.closed:
                raise ConnectionClosedError(ABNORMAL_CLOSURE, "connection closed")
            try:
                self._ws.send(message, binary=binary)
            except Exception as exc:
                self._closed = True
                raise ConnectionClosedError(ABNORMAL_CLOSURE, "connection lost") from exc

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Send a Close frame with ``code`` and ``reason``; the server closes the socket."""
        with self._lock:
            if self.closed:
                self._closed = True
                return
            self._closed = True
            ws = self._ws
            opcode = getattr(ws, "OPCODE_CLOSE", None)
            if opcode is None or not callable(getattr(ws, "send_frame", None)):
                ws.close(code, reason)
                return
            payload = struct.pack("!H", code) + reason.encode()[:_MAX_REASON]
            try:
                ws.send_frame(payload, opcode)
            except Exception:
                logger.debug("could not send the Close frame", exc_info=True)
            # gevent-websocket's own close() would send a second, malformed Close frame.
            ws.closed = True

    def __iter__(self) -> Iterator[Message]:
        while (message := self.receive()) is not None:
            yield message


def close_refused(ws: Any, status: int, phrase: str) -> None:
    """Close a connection whose handshake the app answered with HTTP ``status`` instead of
    accepting it: 1011 for a 5xx, else 1008 (policy violation); the reason is the status."""
    code = INTERNAL_ERROR if status >= 500 else POLICY_VIOLATION
    LegacySocket(ws).close(code, f"{status} {phrase}")


def run_inline(hub: Hub, conn: FlaskConnection, socket: LegacySocket) -> Iterator[bytes]:
    """The accepted handshake's response body: the connection's whole life, then nothing.

    Iterated by the server after the view returned and its request context was popped.
    """
    if not hub.connect(conn):
        refusal = hub.last_refusal
        code, reason = (refusal.code, refusal.reason) if refusal else (POLICY_VIOLATION, "refused")
        socket.close(code, reason)
        return
    try:
        while (message := socket.receive()) is not None:
            hub.receive(conn, message)
    except Exception:
        logger.exception("WebSocket connection %s failed", conn.id)
        socket.close(INTERNAL_ERROR, "internal error")
    finally:
        hub.disconnect(conn)
        socket.close(1000, "")
    yield from ()
