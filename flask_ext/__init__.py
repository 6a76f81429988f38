"""flask_mlsockets: the Flask extension of mlsockets (imports no gevent).

::

    from flask_mlsockets import MLSockets, broadcaster

    sockets = MLSockets()

    @sockets.on("chat.send", schema=MessageSchema)
    def send(conn, data):
        broadcaster.emit("chat.message", data, to=data["room"], skip_sender=True)
        return {"ok": True}

    def create_app():
        app = Flask(__name__)
        sockets.init_app(app)
        return app

See docs/flask.md. Importing this package loads neither Flask nor gevent: the names that need
Flask are imported on first use (PEP 562), so ``import flask_mlsockets`` has no side effects.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from mlsockets._version import __version__
from mlsockets.auth import ANONYMOUS, HandshakeRequest, Principal
from mlsockets.broadcast.base import Channel, ConnectionTarget, Everyone, Tag, User
from mlsockets.exceptions import Forbidden, Unauthorized, ValidationError

if TYPE_CHECKING:
    from .broadcasting import Broadcaster, broadcaster
    from .context import SOCKET_ID_HEADER, FlaskConnection, HandlerSession
    from .extension import MLSockets
    from .settings import option_defaults
    from .state import AppState
    from .testing import SocketTestClient

__all__ = [
    "__version__",
    "ANONYMOUS",
    "AppState",
    "Broadcaster",
    "Channel",
    "ConnectionTarget",
    "Everyone",
    "FlaskConnection",
    "Forbidden",
    "HandlerSession",
    "HandshakeRequest",
    "MLSockets",
    "Principal",
    "SOCKET_ID_HEADER",
    "SocketTestClient",
    "Tag",
    "Unauthorized",
    "User",
    "ValidationError",
    "broadcaster",
    "option_defaults",
]

# Public names that need Flask, by the submodule defining them.
_LAZY = {
    "AppState": ".state",
    "Broadcaster": ".broadcasting",
    "FlaskConnection": ".context",
    "HandlerSession": ".context",
    "MLSockets": ".extension",
    "SOCKET_ID_HEADER": ".context",
    "SocketTestClient": ".testing",
    "broadcaster": ".broadcasting",
    "option_defaults": ".settings",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
