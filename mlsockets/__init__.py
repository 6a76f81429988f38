"""mlsockets: real-time WebSockets for synchronous Python web apps.

Importing this package imports no gevent, Flask or redis and patches nothing; the server
entry points load the gevent transport when they are called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlsockets._version import __version__
from mlsockets.auth import ANONYMOUS, HandshakeRequest, Principal, RawWebSocket, Upgrade
from mlsockets.broadcast.base import BroadcastUnavailable, ClusterUnavailable
from mlsockets.exceptions import (
    ConfigurationError,
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    Forbidden,
    InvalidHandshake,
    InvalidState,
    MLSocketsError,
    PayloadTooBig,
    ProtocolError,
    Unauthorized,
    ValidationError,
)
from mlsockets.protocol.deflate import DeflateConfig
from mlsockets.protocol.frames import CloseCode

if TYPE_CHECKING:
    from mlsockets.broadcast.emitter import Emitter
    from mlsockets.transport.gevent.options import ServerOptions

__all__ = [
    "__version__",
    "ANONYMOUS",
    "BroadcastUnavailable",
    "CloseCode",
    "ClusterUnavailable",
    "ConfigurationError",
    "ConnectionClosed",
    "ConnectionClosedError",
    "ConnectionClosedOK",
    "DeflateConfig",
    "Emitter",
    "Forbidden",
    "HandshakeRequest",
    "InvalidHandshake",
    "InvalidState",
    "MLSocketsError",
    "PayloadTooBig",
    "Principal",
    "ProtocolError",
    "RawWebSocket",
    "ServerOptions",
    "Unauthorized",
    "Upgrade",
    "ValidationError",
    "serve",
]


def serve(app: Any, bind: str | list[str] = "127.0.0.1:8000", **kwargs: Any) -> None:
    """Serve a WSGI app (HTTP and WebSocket) until SIGTERM / SIGINT.

    Monkey-patch the process first (``from gevent import monkey; monkey.patch_all()`` at the
    top of your entry point), or run ``mlsockets serve module:app``, which does it for you.
    Keyword arguments are those of :func:`mlsockets.transport.gevent.server.serve`.
    """
    from mlsockets.transport.gevent.server import serve as _serve

    _serve(app, bind, **kwargs)


def __getattr__(name: str) -> Any:
    if name == "Emitter":  # loaded on use: it is the entry point to redis-py
        from mlsockets.broadcast.emitter import Emitter

        return Emitter
    if name == "ServerOptions":
        from mlsockets.transport.gevent.options import ServerOptions

        return ServerOptions
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
