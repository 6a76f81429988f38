"""``from flask_mlsockets import broadcaster``: emit to WebSocket clients from any app context.

Views, CLI commands and background jobs of the app emit with
``broadcaster.emit(event, data, to=...)``; the current app (``current_app``) picks the hub of
this process. "To others": the browser client sends its connection id in an ``X-Socket-ID``
header on its ``fetch`` calls, and ``skip_sender=True`` excludes that connection. Inside an
event handler the request context carries the handler's own connection id in that header,
so ``skip_sender=True`` excludes the connection that sent the event.

Without Redis (``MLSOCKETS_REDIS_URL``) an emit reaches only the connections of the process
it runs in: a CLI command or a job in another process reaches nobody.
"""

from __future__ import annotations

from flask import current_app, has_request_context, request

from mlsockets.broadcast.base import Target
from mlsockets.hub import Hub
from mlsockets.typing import ConnectionId

from .context import SOCKET_ID_HEADER
from .state import get_state

__all__ = ["Broadcaster", "broadcaster", "sender_id"]

_MAX_ID_LENGTH = 64


def sender_id() -> ConnectionId | None:
    """The ``X-Socket-ID`` of the current request, or None (no request, no header)."""
    if not has_request_context():
        return None
    value = request.headers.get(SOCKET_ID_HEADER, "").strip()
    if not value or len(value) > _MAX_ID_LENGTH:
        return None
    return ConnectionId(value)


class Broadcaster:
    """Emits through the current app's hub; needs an app context (``RuntimeError`` without)."""

    def emit(
        self,
        event: str,
        data: object = None,
        to: str | Target | None = None,
        skip_sender: bool = False,
    ) -> int:
        """Send ``event`` with ``data`` to ``to``.

        Args:
            event: the event name clients listen to.
            data: anything the connections' formats can encode (JSON / msgpack values).
            to: a channel name (``"room:lobby"``), a target from
                :mod:`mlsockets.broadcast.base` (``User(id)``, ``ConnectionTarget(id)``,
                ``Tag(name)``, ``Everyone()``), or None for every connection.
            skip_sender: exclude the connection named by the request's ``X-Socket-ID``.

        Returns:
            The number of this process's connections it was delivered to.

        Raises:
            RuntimeError: no app context, or MLSockets is not initialised on the app.
            InvalidChannel: ``to`` is not a valid channel name.
        """
        state = get_state(current_app)
        return state.emit(event, data, to=to, skip=sender_id() if skip_sender else None)

    @property
    def hub(self) -> Hub:
        """The current app's hub in this process (presence, members, connection counts)."""
        return get_state(current_app).hub()

    def __repr__(self) -> str:
        return "<flask_mlsockets.broadcaster>"


#: The module-level broadcaster: ``from flask_mlsockets import broadcaster``.
broadcaster = Broadcaster()
