"""Flask contexts for event handlers, rebuilt per event from a snapshot of the handshake.

No Flask context lives as long as a connection (STYLE.md, principle 9). At the handshake the
extension keeps a :class:`RequestSnapshot`: the request's plain WSGI variables (path, query,
headers, remote address; no body, no WebSocket headers) and a deep copy of the session. Then,
for every event, :class:`ContextRunner` pushes a fresh ``app.app_context()`` and a request
context built from the snapshot, so ``current_app``, ``g``, ``request``, ``session`` and
Flask-Login's ``current_user`` work, and ``teardown_request`` / ``teardown_appcontext`` run
after each event (with the handler's exception, if it raised).

``session`` in a handler is a per-event copy of the handshake's session: writes are never
saved (there is no response to carry a cookie). A handler that writes is logged once per
event name at WARNING on ``mlsockets.flask``.
"""

from __future__ import annotations

import copy
import io
import logging
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, TypeVar

from flask import Flask
from flask.ctx import RequestContext
from flask.sessions import SecureCookieSession

from mlsockets.auth import Principal, RawWebSocket
from mlsockets.formatters.base import Formatter
from mlsockets.wsgi import HubConnection

__all__ = [
    "SOCKET_ID_HEADER",
    "ContextRunner",
    "FlaskConnection",
    "HandlerSession",
    "RequestSnapshot",
    "snapshot_environ",
]

logger = logging.getLogger("mlsockets.flask")

T = TypeVar("T")

#: The header carrying a connection id: the browser client sends it on ``fetch`` calls, and
#: handlers' request contexts have it, so ``emit(..., skip_sender=True)`` skips the sender.
SOCKET_ID_HEADER = "X-Socket-ID"
_SOCKET_ID_KEY = "HTTP_X_SOCKET_ID"
# Handshake-only headers: meaningless once the connection is open.
_DROPPED = frozenset({"HTTP_UPGRADE", "HTTP_CONNECTION", "CONTENT_LENGTH", "CONTENT_TYPE"})


def snapshot_environ(environ: Mapping[str, Any]) -> dict[str, str]:
    """The plain string variables of a WSGI environ, without the WebSocket handshake headers.

    Server objects (``wsgi.input``, ``wsgi.websocket``, ``mlsockets.upgrade``...) are not
    strings and are left out, so the snapshot holds no socket and no request object.
    """
    kept = {
        key: value
        for key, value in environ.items()
        if isinstance(value, str)
        and key not in _DROPPED
        and not key.startswith("HTTP_SEC_WEBSOCKET_")
    }
    kept["REQUEST_METHOD"] = "GET"
    return kept


@dataclass(frozen=True, slots=True)
class RequestSnapshot:
    """What handlers' request contexts are built from; taken once, at the handshake.

    Attributes:
        environ: string WSGI variables (see :func:`snapshot_environ`).
        session: a deep copy of the session as the handshake view left it.
    """

    environ: Mapping[str, str]
    session: Mapping[str, Any]

    @classmethod
    def take(cls, environ: Mapping[str, Any], session: Mapping[str, Any]) -> RequestSnapshot:
        try:
            data = copy.deepcopy(dict(session))
        except Exception:  # an exotic session value: a shallow copy still isolates the keys
            data = dict(session)
        return cls(MappingProxyType(snapshot_environ(environ)), MappingProxyType(data))

    def environ_for(self, connection_id: str) -> dict[str, Any]:
        """A fresh WSGI environ for one event of ``connection_id`` (empty body)."""
        environ: dict[str, Any] = dict(self.environ)
        environ.update(
            {
                "wsgi.version": (1, 0),
                "wsgi.input": io.BytesIO(),
                "wsgi.errors": sys.stderr,
                "wsgi.multithread": True,
                "wsgi.multiprocess": False,
                "wsgi.run_once": False,
                _SOCKET_ID_KEY: connection_id,
            }
        )
        environ.setdefault("wsgi.url_scheme", "http")
        return environ


class HandlerSession(SecureCookieSession):
    """``session`` inside an event handler: a per-event copy, never saved.

    ``modified`` becomes True on any write to the session dict itself (not to values nested
    inside it), which is what the write warning checks.
    """


class FlaskConnection(HubConnection):
    """The hub's connection for a Flask app: a :class:`~mlsockets.wsgi.HubConnection` that also
    carries the handshake's :class:`RequestSnapshot`.

    Handlers receive it as ``conn``: ``conn.id`` (the connection id, also the
    ``X-Socket-ID`` value), ``conn.principal`` (who connected), ``conn.formatter``.
    """

    __slots__ = ("snapshot",)

    def __init__(
        self,
        principal: Principal,
        formatter: Formatter,
        ws: RawWebSocket | None = None,
        *,
        snapshot: RequestSnapshot,
    ) -> None:
        super().__init__(principal, formatter, ws)
        self.snapshot = snapshot


class ContextRunner:
    """Runs one app's handlers, hooks and authorizers inside fresh Flask contexts.

    Args:
        app: the application whose contexts are pushed.
    """

    def __init__(self, app: Flask) -> None:
        self.app = app
        self._warned: set[str] = set()

    def call(self, conn: Any, what: str, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` inside a fresh app context and ``conn``'s request context.

        ``what`` names the call in the session-write warning (an event name, a hook).
        Exceptions propagate, after the teardown functions have seen them.
        """
        app = self.app
        snapshot = getattr(conn, "snapshot", None)
        # The app context first, explicitly: a request context would reuse one of the same
        # app that happens to be pushed already (a test), and g would leak between events.
        with app.app_context():
            if not isinstance(snapshot, RequestSnapshot):
                return fn(*args)
            session = HandlerSession(copy.deepcopy(dict(snapshot.session)))
            try:
                with RequestContext(app, snapshot.environ_for(conn.id), session=session):
                    return fn(*args)
            finally:
                if session.modified:
                    self._warn_session_write(what)

    def app_call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` inside a fresh app context only (no connection to build a request)."""
        with self.app.app_context():
            return fn(*args)

    def _warn_session_write(self, what: str) -> None:
        if what in self._warned:
            return
        self._warned.add(what)
        logger.warning(
            "%s modified flask.session in app %r: session writes in WebSocket handlers are "
            "not persisted (the session is a copy taken at the handshake); store the data "
            "elsewhere. Logged once per event.",
            what,
            self.app.name,
        )
