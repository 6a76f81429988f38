"""``sockets.test_client(app, user=...)``: a WebSocket client for tests, with no network.

The client is accepted into the app's real hub through the same code as a server connection
(:func:`mlsockets.wsgi.accept_into_hub`, with an in-memory :class:`MemoryUpgrade`), so its
handlers run in app and request contexts exactly as in production, and a view's
``broadcaster.emit`` reaches it. Everything happens synchronously in the calling thread: an
``emit(..., ack=True)`` returns the handler's ack when it returns.

Two ways to connect:

- ``user=`` (None, a user id, a :class:`~mlsockets.auth.Principal` or a Flask-Login user
  object): that principal is accepted directly; the handshake checks (Origin, rate limit,
  authentication, ``before_request``) do not run. With Flask-Login the handlers' session
  holds the user (``login_user`` for a user object, its id otherwise), so ``current_user``
  works in handlers.
- ``headers=`` (e.g. ``{"Cookie": "session=..."}`` from a Flask test client): the real
  handshake view runs through the whole WSGI app; a refusal raises ``InvalidHandshake`` with
  the HTTP status.
"""

from __future__ import annotations

import importlib
import itertools
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

from flask import Flask, current_app, session
from flask.ctx import RequestContext
from werkzeug.test import EnvironBuilder

from mlsockets.auth import ANONYMOUS, UPGRADE_ENVIRON_KEY, HandshakeRequest, Principal, RawWebSocket
from mlsockets.client.events import ErrorReply, ReceivedEvent
from mlsockets.exceptions import (
    ConnectionClosedError,
    ConnectionClosedOK,
    InvalidHandshake,
    InvalidState,
)
from mlsockets.formatters.base import FORMATTERS, Formatter, get_formatter
from mlsockets.typing import ConnectionId, Message, UserId
from mlsockets.wsgi import HubConnection, accept_into_hub

from .context import FlaskConnection, HandlerSession, RequestSnapshot
from .state import AppState

if TYPE_CHECKING:
    from .extension import MLSockets

__all__ = ["MemorySocket", "MemoryUpgrade", "SocketTestClient", "make_test_client"]

_NORMAL = 1000


class MemorySocket:
    """The server side of an in-memory connection: what the hub sends goes to ``deliver``."""

    def __init__(self) -> None:
        self.subprotocol_chosen: str | None = None
        #: Where sent messages go (set by the client); dropped until then.
        self.deliver: Callable[[Message], None] = lambda message: None
        self.close_code: int | None = None
        self.close_reason = ""

    @property
    def closed(self) -> bool:
        return self.close_code is not None

    @property
    def subprotocol(self) -> str | None:
        return self.subprotocol_chosen

    def receive(self) -> Message | None:
        raise InvalidState("an in-memory test connection runs in callback mode only")

    def send(self, message: Message, binary: bool | None = None) -> None:
        if self.close_code is not None:
            raise ConnectionClosedError(self.close_code, self.close_reason)
        self.deliver(message)

    def close(self, code: int = _NORMAL, reason: str = "") -> None:
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason

    def __iter__(self) -> Iterator[Message]:
        return iter(())


class MemoryUpgrade:
    """An :class:`~mlsockets.auth.Upgrade` for one in-memory handshake (callback mode only)."""

    def __init__(self, request: HandshakeRequest) -> None:
        self._request = request
        self.ws = MemorySocket()
        self.principal: Principal | None = None
        self.on_message: Callable[[RawWebSocket, Message], object] | None = None
        self.on_close: Callable[[RawWebSocket], object] | None = None
        self.on_open: Callable[[RawWebSocket], object] | None = None

    @property
    def request(self) -> HandshakeRequest:
        return self._request

    @property
    def accepted(self) -> bool:
        return self.principal is not None

    def accept(
        self,
        principal: Principal | None = None,
        subprotocol: str | None = None,
        handler: Callable[[RawWebSocket], object] | None = None,
        *,
        on_message: Callable[[RawWebSocket, Message], object] | None = None,
        on_close: Callable[[RawWebSocket], object] | None = None,
        on_open: Callable[[RawWebSocket], object] | None = None,
    ) -> RawWebSocket:
        if self.principal is not None:
            raise InvalidState("this handshake was already accepted")
        if on_message is None or handler is not None:
            raise InvalidState("the test client supports callback mode (on_message) only")
        self.principal = principal or ANONYMOUS
        self.ws.subprotocol_chosen = subprotocol
        self.on_message, self.on_close, self.on_open = on_message, on_close, on_open
        return self.ws


class SocketTestClient:
    """A connected in-memory client. Create it with ``sockets.test_client(app, ...)``.

    Attributes:
        connection_id: from ``mls.welcome``; also the hub's ``conn.id``.
        user_id: the principal's user id (None when anonymous).
        welcome: the ``mls.welcome`` data.
        connection: the hub's connection object (for ``sockets.join(client.connection, room)``).
    """

    def __init__(self, state: AppState, upgrade: MemoryUpgrade, formatter: Formatter) -> None:
        self._formatter = formatter
        self._upgrade = upgrade
        self._events: deque[ReceivedEvent] = deque()
        self._replies: dict[int, dict[str, Any]] = {}
        self._ids = itertools.count(1)
        self._finished = False
        self._ws = upgrade.ws
        self._ws.deliver = self._incoming
        self._call(upgrade.on_open)
        if self._ws.closed or not self._events or self._events[0].event != "mls.welcome":
            raise ConnectionClosedError(self._ws.close_code or 1008, self._ws.close_reason)
        self.welcome: dict[str, Any] = dict(self._events.popleft().data)
        self.connection_id: str = self.welcome["connection_id"]
        self.user_id: str | None = self.welcome.get("user_id")
        connection = state.hub().registry.get(ConnectionId(self.connection_id))
        assert isinstance(connection, HubConnection)
        self.connection = connection

    # -- driving the server side --------------------------------------------------------------

    def _incoming(self, message: Message) -> None:
        envelope = self._formatter.decode(message)
        if not isinstance(envelope, dict):
            raise AssertionError(f"the server sent a non-envelope: {envelope!r}")
        if "reply" in envelope:
            self._replies[envelope["reply"]] = envelope
        else:
            self._events.append(
                ReceivedEvent(envelope["event"], envelope.get("data"), envelope.get("channel"))
            )

    def _call(self, callback: Callable[..., object] | None, *args: Any) -> None:
        if callback is not None:
            callback(self._ws, *args)
        self._finish_if_closed()

    def _finish_if_closed(self) -> None:
        # The transport calls on_close once the closing handshake is over; here, at once.
        if self._ws.closed and not self._finished:
            self._finished = True
            if self._upgrade.on_close is not None:
                self._upgrade.on_close(self._ws)

    def _check_open(self) -> None:
        if self._ws.close_code is not None:
            code, reason = self._ws.close_code, self._ws.close_reason
            if code == _NORMAL:
                raise ConnectionClosedOK(code, reason)
            raise ConnectionClosedError(code, reason)

    # -- the client API -------------------------------------------------------------------------

    def emit(self, event: str, data: Any = None, ack: bool = True) -> Any:
        """Send ``event``; with ``ack`` return the handler's return value.

        Raises:
            ErrorReply: the server answered with an error (``code``, ``message``, ``fields``).
            ConnectionClosed: the connection is (or got) closed.
        """
        self._check_open()
        envelope: dict[str, Any] = {"event": event, "data": data}
        msg_id = next(self._ids) if ack else None
        if msg_id is not None:
            envelope["id"] = msg_id
        self._call(self._upgrade.on_message, self._formatter.encode(envelope))
        if msg_id is None:
            return None
        reply = self._replies.pop(msg_id, None)
        if reply is None:
            self._check_open()
            raise InvalidState(f"no reply to {event!r}")
        error = reply.get("error")
        if error is not None:
            raise ErrorReply(
                error.get("code", "internal"), error.get("message", ""), error.get("fields")
            )
        return reply.get("data")

    def subscribe(self, channel: str) -> Any:
        """Subscribe to ``channel``; returns the ack (with ``members`` for presence channels)."""
        return self.emit("mls.subscribe", {"channel": channel})

    def unsubscribe(self, channel: str) -> Any:
        return self.emit("mls.unsubscribe", {"channel": channel})

    def receive(self, timeout: float = 0.0) -> ReceivedEvent:
        """The next server event (``mls.*`` events included), oldest first.

        With ``timeout``, wait up to that many seconds, sleeping in small steps so that other
        greenlets (a server, a view emitting) run meanwhile in a monkey-patched process.

        Raises:
            TimeoutError: no event arrived.
        """
        deadline = time.monotonic() + timeout
        while not self._events:
            if time.monotonic() >= deadline:
                raise TimeoutError("no event received")
            time.sleep(0.005)
        return self._events.popleft()

    def get_received(self) -> list[ReceivedEvent]:
        """Every event received and not yet read, oldest first; clears them."""
        events = list(self._events)
        self._events.clear()
        return events

    def disconnect(self) -> None:
        """Close the connection (1000); the hub runs the disconnect hooks now."""
        self._ws.close(_NORMAL, "")
        self._finish_if_closed()

    @property
    def closed(self) -> bool:
        return self._ws.closed

    @property
    def close_code(self) -> int | None:
        """The code the server (or :meth:`disconnect`) closed with, or None while open."""
        return self._ws.close_code

    @property
    def close_reason(self) -> str:
        return self._ws.close_reason

    def __enter__(self) -> SocketTestClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.disconnect()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<SocketTestClient {self.connection_id} user={self.user_id!r} {state}>"


# -- construction ----------------------------------------------------------------------------


def make_test_client(
    extension: MLSockets,
    app: Flask,
    state: AppState,
    user: object = None,
    *,
    format: str = "json",
    session_data: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> SocketTestClient:
    """See :meth:`flask_mlsockets.MLSockets.test_client`."""
    formatter = _formatter_named(format)
    if headers is not None:
        if user is not None or session_data is not None:
            raise TypeError("pass either headers= (a real handshake) or user= / session=")
        return _handshake_client(app, state, formatter, headers)
    builder = EnvironBuilder(path=state.settings.path, headers=[("User-Agent", "mlsockets-test")])
    try:
        environ = builder.get_environ()
    finally:
        builder.close()
    data = HandlerSession(dict(session_data or {}))
    with app.app_context(), RequestContext(app, environ, session=data):
        principal, user_object = _principal(extension, user)
        _log_in(principal, user_object)
        snapshot = RequestSnapshot.take(environ, session)
    upgrade = MemoryUpgrade(HandshakeRequest.from_environ(environ))
    accept_into_hub(
        upgrade,
        state.hub(),
        principal,
        formatter,
        make_connection=lambda p, f: FlaskConnection(p, f, snapshot=snapshot),
    )
    return SocketTestClient(state, upgrade, formatter)


def _formatter_named(name: str) -> Formatter:
    for formatter in FORMATTERS.values():
        if formatter.name == name:
            return get_formatter(formatter.subprotocol)
    raise ValueError(
        f"unknown format {name!r}; known: {', '.join(f.name for f in FORMATTERS.values())}"
    )


def _principal(extension: MLSockets, user: object) -> tuple[Principal, object | None]:
    if user is None:
        return ANONYMOUS, None
    if isinstance(user, Principal):
        return user, None
    if isinstance(user, str | int):
        return Principal(user_id=UserId(str(user))), None
    if callable(getattr(user, "get_id", None)):
        return extension.principal_of(user), user
    raise TypeError(f"user must be None, a user id, a Principal or a user object, not {user!r}")


def _log_in(principal: Principal, user_object: object | None) -> None:
    """With Flask-Login on the app, put the user in the (snapshot) session as login_user would."""
    if principal.user_id is None or getattr(current_app, "login_manager", None) is None:
        return
    if "_user_id" in session:
        return
    try:
        flask_login = importlib.import_module("flask_login")
    except ImportError:
        return
    if user_object is not None:
        flask_login.login_user(user_object)
    else:
        # No user object to log in: the user loader loads it from the id in each handler.
        # "_fresh" False: session protection then has nothing to downgrade (no write).
        session["_user_id"] = principal.user_id
        session["_fresh"] = False


def _handshake_client(
    app: Flask, state: AppState, formatter: Formatter, headers: Mapping[str, str]
) -> SocketTestClient:
    handshake_headers = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Protocol": formatter.subprotocol,
        **headers,
    }
    builder = EnvironBuilder(path=state.settings.path, headers=list(handshake_headers.items()))
    try:
        environ = builder.get_environ()
    finally:
        builder.close()
    upgrade = MemoryUpgrade(HandshakeRequest.from_environ(environ))
    environ[UPGRADE_ENVIRON_KEY] = upgrade
    status: list[str] = []

    def start_response(line: str, response_headers: Any, exc_info: Any = None) -> Any:
        status.append(line)
        return lambda data: None

    body = app(environ, start_response)
    try:
        text = b"".join(body).decode(errors="replace").strip()
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()
    if not upgrade.accepted:
        line = status[-1] if status else "500 INTERNAL SERVER ERROR"
        raise InvalidHandshake(
            f"server refused the handshake: HTTP {line}: {text[:200]}", int(line.split()[0])
        )
    return SocketTestClient(state, upgrade, formatter)
