"""Serve a :class:`~mlsockets.hub.Hub` from any WSGI stack (no Flask needed).

``SocketApp(hub, path="/ws", admission=..., app=my_wsgi_app)`` answers WebSocket handshakes
on ``path`` and passes every other request to ``app``. A handshake is admitted by
:class:`~mlsockets.admission.Admission` (Origin 403, rate limit 429, authentication 401: real
HTTP responses, never a 101 first), must offer ``mlsockets.json.v1`` or
``mlsockets.msgpack.v1``, and then lives in the hub in callback mode (no greenlet while idle).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any

from mlsockets import metrics
from mlsockets.admission import Admission
from mlsockets.auth import UPGRADE_ENVIRON_KEY, Principal, RawWebSocket, Upgrade
from mlsockets.exceptions import ConnectionClosed, Forbidden, TooManyRequests, Unauthorized
from mlsockets.formatters.base import FORMATTERS, Formatter, choose
from mlsockets.hub import Hub
from mlsockets.publish_api import PublishAPI, PublishOptions
from mlsockets.typing import ConnectionId, Message

__all__ = ["HubConnection", "SocketApp", "new_connection_id"]

logger = logging.getLogger("mlsockets.wsgi")

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def new_connection_id() -> ConnectionId:
    """A random, URL-safe id, unique across processes and nodes (96 bits)."""
    return ConnectionId(secrets.token_urlsafe(12))


class HubConnection:
    """The hub's view of one WebSocket (implements :class:`mlsockets.hub.Connection`)."""

    __slots__ = ("id", "principal", "formatter", "ws")

    def __init__(
        self, principal: Principal, formatter: Formatter, ws: RawWebSocket | None = None
    ) -> None:
        self.id = new_connection_id()
        self.principal = principal
        self.formatter = formatter
        self.ws = ws

    def send(self, message: Message) -> None:
        ws = self.ws
        if ws is None:
            return
        try:
            ws.send(message)
        except ConnectionClosed:
            pass  # closing already; the hub hears about it through disconnect()

    @property
    def close_code(self) -> int | None:
        """The WebSocket's close code once closed (the hub logs it), else None."""
        code = getattr(self.ws, "close_code", None)
        return code if isinstance(code, int) else None

    @classmethod
    def send_bulk(cls, connections: Iterable[HubConnection], message: Message) -> None:
        """One message to many connections: through the WebSocket class's ``broadcast``
        (encode the frame once, write without blocking) when it has one."""
        connections = list(connections)  # iterated twice when the fallback runs
        sockets = [c.ws for c in connections if c.ws is not None]
        if not sockets:
            return
        bulk = getattr(type(sockets[0]), "broadcast", None)
        if bulk is not None and all(type(ws) is type(sockets[0]) for ws in sockets):
            bulk(sockets, message)
            return
        for conn in connections:
            conn.send(message)

    def close(self, code: int, reason: str) -> None:
        if self.ws is not None:
            self.ws.close(code, reason)

    def __repr__(self) -> str:
        return f"<HubConnection {self.id} user={self.principal.user_id!r}>"


def accept_into_hub(
    upgrade: Upgrade,
    hub: Hub,
    principal: Principal,
    formatter: Formatter,
    *,
    make_connection: Callable[[Principal, Formatter], HubConnection] = HubConnection,
) -> HubConnection:
    """Accept ``upgrade`` and attach the connection to ``hub`` (callback mode).

    ``make_connection(principal, formatter)`` builds the hub's connection object: an adapter
    passes a :class:`HubConnection` subclass carrying its own per-connection state (the Flask
    extension keeps the handshake's request snapshot there).
    """
    conn = make_connection(principal, formatter)

    def on_open(ws: RawWebSocket) -> None:
        conn.ws = ws
        if not hub.connect(conn):
            refusal = hub.last_refusal
            code, reason = (refusal.code, refusal.reason) if refusal else (1008, "refused")
            ws.close(code, reason)

    upgrade.accept(
        principal,
        formatter.subprotocol,
        on_open=on_open,
        on_message=lambda ws, message: hub.receive(conn, message),
        on_close=lambda ws: hub.disconnect(conn),
    )
    return conn


class SocketApp:
    """WSGI application: WebSocket handshakes on ``path`` go to the hub, the rest to ``app``.

    Args:
        hub: the hub connections join.
        path: where the WebSocket endpoint lives.
        admission: who may connect (default: anyone, anonymous allowed).
        app: the WSGI app for every other request (default: 404).
        publish: serve the HTTP publish API (:mod:`mlsockets.publish_api`) at
            ``{path}/api/publish`` into ``hub.emit`` with these credentials (default: off).
        metrics_path: serve Prometheus metrics at this path (e.g. ``"/metrics"``; needs
            prometheus-client), or None.
    """

    def __init__(
        self,
        hub: Hub,
        *,
        path: str = "/ws",
        admission: Admission | None = None,
        app: WSGIApp | None = None,
        publish: PublishOptions | None = None,
        metrics_path: str | None = None,
    ) -> None:
        self.hub = hub
        # The server returns once its connections are closed, then the process exits: the
        # hub's presence timers are cancelled and its broadcaster closed then (Hub.close).
        hub.close_at_exit()
        self.metrics_path = metrics_path
        if metrics_path is not None:
            metrics.enable()  # ConfigurationError without prometheus-client
        self.path = path
        self.admission = admission or Admission(allow_anonymous=True)
        self.app = app
        self.publish_api = (
            PublishAPI(hub.emit, publish, path=path.rstrip("/") + "/api/publish")
            if publish is not None
            else None
        )

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        if self.publish_api is not None and self.publish_api.handles(environ.get("PATH_INFO")):
            return self.publish_api(environ, start_response)  # plain HTTP: no admission
        if self.metrics_path is not None and environ.get("PATH_INFO") == self.metrics_path:
            return metrics.metrics_app(environ, start_response)
        if environ.get("PATH_INFO") != self.path:
            if self.app is not None:
                return self.app(environ, start_response)
            return _respond(start_response, 404, "not found")
        upgrade: Upgrade | None = environ.get(UPGRADE_ENVIRON_KEY)
        if upgrade is None:
            return _respond(start_response, 426, "this endpoint speaks WebSocket only")
        request = upgrade.request
        formatter = choose(request.subprotocols)
        if formatter is None:
            supported = ", ".join(s for s in FORMATTERS if choose([s]) is not None)
            return _respond(start_response, 400, f"offer a subprotocol: {supported}")
        try:
            principal = self.admission.admit(request)
        except (Unauthorized, Forbidden, TooManyRequests) as exc:
            status, message = self.admission.status_for(exc)
            headers = self.admission.headers_for(exc)
            return _respond(start_response, status, message, headers)
        accept_into_hub(upgrade, self.hub, principal, formatter)
        return []


def _respond(
    start_response: Callable[..., Any],
    status: int,
    message: str,
    headers: Iterable[tuple[str, str]] = (),
) -> list[bytes]:
    body = (message + "\n").encode()
    start_response(
        f"{status} {HTTPStatus(status).phrase}",
        [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
            *headers,
        ],
    )
    return [body]
