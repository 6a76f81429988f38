"""The gevent transport: the only part of mlsockets that knows sockets and greenlets.

Names are loaded on first use, so ``mlsockets.transport.gevent.monkey`` can patch the
process before gevent's socket machinery is imported.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlsockets.transport.gevent.connection import WebSocket, broadcast
    from mlsockets.transport.gevent.handler import WebSocketHandler
    from mlsockets.transport.gevent.options import ServerOptions
    from mlsockets.transport.gevent.server import Server, serve

__all__ = ["ServerOptions", "WebSocket", "WebSocketHandler", "Server", "serve", "broadcast"]

_WHERE = {
    "ServerOptions": "options",
    "WebSocket": "connection",
    "broadcast": "connection",
    "WebSocketHandler": "handler",
    "Server": "server",
    "serve": "server",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
