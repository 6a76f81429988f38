"""What applications written for gevent-websocket expect of ``environ["wsgi.websocket"]``.

gevent-websocket's ``WebSocket`` exposes a few attributes beyond receive/send/close; the
mixin below provides them on our :class:`~mlsockets.transport.gevent.connection.WebSocket`,
so ``gunicorn -k geventwebsocket...`` apps run unchanged under mlsockets. Differences that
remain, by design: the 101 is sent when the app first uses the socket (or accepts through
``environ["mlsockets.upgrade"]``), not before the app runs; and ``close()`` sends a real
status code.
"""

from __future__ import annotations

from typing import Any

__all__ = ["GeventWebSocketCompat"]


class GeventWebSocketCompat:
    """gevent-websocket attribute names, read from the handshake's WSGI environ."""

    __slots__ = ()
    environ: dict[str, Any]
    subprotocol: str | None

    @property
    def path(self) -> str | None:
        return self.environ.get("PATH_INFO")

    @property
    def origin(self) -> str | None:
        return self.environ.get("HTTP_ORIGIN")

    @property
    def protocol(self) -> str | None:
        return self.subprotocol

    @property
    def version(self) -> str:
        return "13"

    def read_message(self) -> Any:
        """gevent-websocket's alias of ``receive()``."""
        return self.receive()  # type: ignore[attr-defined]

    def send_frame(self, message: Any, opcode: int) -> None:
        """gevent-websocket's low-level send: opcode 1 is text, 2 binary."""
        self.send(message, binary=opcode == 2)  # type: ignore[attr-defined]
