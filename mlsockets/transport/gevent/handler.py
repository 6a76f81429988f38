"""The pywsgi handler: validates an upgrade, lets the WSGI app decide, then sends the 101.

ARCHITECTURE.md, "The handshake": the app sees an ordinary request with an
:class:`~mlsockets.auth.Upgrade` in ``environ["mlsockets.upgrade"]`` and either accepts or
answers with any HTTP response (401, 403...), which the client receives exactly, with no 101.
A malformed handshake never reaches the app: it gets 400 / 405 / 426 here.

Works under our :class:`~mlsockets.transport.gevent.server.Server`, under a plain
``gevent.pywsgi.WSGIServer(..., handler_class=WebSocketHandler)`` and (through the mixin)
under gunicorn's pywsgi worker.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

import gevent
from gevent import pywsgi

from mlsockets import metrics
from mlsockets.auth import (
    ANONYMOUS,
    SCHEDULER_ENVIRON_KEY,
    UPGRADE_ENVIRON_KEY,
    HandshakeRequest,
    Principal,
    RawWebSocket,
)
from mlsockets.exceptions import ConnectionClosed, InvalidState
from mlsockets.metrics.redact import redact_query
from mlsockets.protocol import handshake
from mlsockets.protocol.connection import Protocol, Side
from mlsockets.protocol.frames import CloseCode
from mlsockets.transport.gevent.connection import WebSocket
from mlsockets.transport.gevent.headers import RequestHead
from mlsockets.transport.gevent.options import ServerOptions
from mlsockets.transport.gevent.reaper import Reaper
from mlsockets.transport.gevent.scheduling import GeventScheduler
from mlsockets.typing import Message

__all__ = ["GeventUpgrade", "WebSocketHandlerMixin", "WebSocketHandler"]

logger = logging.getLogger("mlsockets.transport")

_DEFAULT_OPTIONS = ServerOptions()
_SCHEDULER = GeventScheduler()


class GeventUpgrade:
    """The :class:`~mlsockets.auth.Upgrade` offered to the WSGI app for one handshake."""

    __slots__ = (
        "_handler",
        "_client_request",
        "_accepted",
        "_request",
        "ws",
        "principal",
        "handler",
        "on_message",
        "on_close",
        "on_open",
    )

    def __init__(
        self,
        handler: WebSocketHandlerMixin,
        client_request: handshake.ClientRequest,
        accepted: handshake.Accepted,
        ws: WebSocket,
    ) -> None:
        self._handler = handler
        self._client_request = client_request
        self._accepted: handshake.Accepted | None = accepted
        self._request: HandshakeRequest | None = None
        self.ws = ws
        self.principal: Principal | None = None
        self.handler: Callable[[RawWebSocket], object] | None = None
        self.on_message: Callable[[RawWebSocket, Message], object] | None = None
        self.on_close: Callable[[RawWebSocket], object] | None = None
        self.on_open: Callable[[RawWebSocket], object] | None = None

    @property
    def request(self) -> HandshakeRequest:
        if self._request is None:
            self._request = HandshakeRequest.from_environ(self.ws.environ)
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
    ) -> WebSocket:
        """See :meth:`mlsockets.auth.Upgrade.accept`."""
        accepted = self._accepted
        if accepted is None or self.principal is not None:
            raise InvalidState("this handshake was already accepted")
        if handler is not None and on_message is not None:
            raise InvalidState("pass either handler or on_message, not both")
        if (on_close is not None or on_open is not None) and on_message is None:
            raise InvalidState("on_close and on_open need on_message")
        if subprotocol is not None and subprotocol not in self._client_request.subprotocols:
            raise InvalidState(f"subprotocol {subprotocol!r} was not offered by the client")
        self.principal = principal or ANONYMOUS
        self.handler = handler
        self.on_message = on_message
        self.on_close = on_close
        self.on_open = on_open
        headers = accepted.headers
        if subprotocol is not None:
            headers += (("Sec-WebSocket-Protocol", subprotocol),)
        self._accepted = None
        deferred = handler is not None or on_message is not None
        self._handler.ws_switch(headers, accepted, subprotocol, now=not deferred)
        return self.ws


class WebSocketHandlerMixin:
    """Adds the WebSocket upgrade to a ``gevent.pywsgi.WSGIHandler`` subclass."""

    # Provided by pywsgi.WSGIHandler:
    socket: Any
    rfile: Any
    server: Any
    environ: dict[str, Any]
    command: str
    request_version: str
    application: Callable[..., Any]
    result: Any
    status: Any
    code: Any
    response_headers: Any
    response_length: int
    close_connection: bool
    start_response: Callable[..., Any]
    write: Callable[[bytes], None]
    process_result: Callable[[], None]

    wsgi_input: Any
    _ws_protocol: Protocol | None = None
    _ws_started = False
    headers: Any

    def MessageClass(self, fp: Any, *args: Any) -> RequestHead:  # noqa: N802 - pywsgi's name
        return RequestHead(fp)

    def format_request(self) -> str:
        # The access log line, without credentials: browsers can send a WebSocket token only
        # in the URL (?token=...), and access logs are kept and shipped.
        line: str = super().format_request()  # type: ignore[misc]
        return redact_query(line)

    def _ws_options(self) -> ServerOptions:
        options: ServerOptions = getattr(self.server, "ws_options", _DEFAULT_OPTIONS)
        return options

    def _ws_reaper(self) -> Reaper:
        reaper: Reaper | None = getattr(self.server, "ws_reaper", None)
        if reaper is None:  # a plain pywsgi.WSGIServer: attach one
            reaper = self.server.ws_reaper = Reaper()
        return reaper

    def handle_one_request(self) -> Any:
        # The request head must arrive within handshake_timeout (slowloris defence).
        self._ws_reaper().arm(self.socket, self._ws_options().handshake_timeout)
        try:
            result = super().handle_one_request()  # type: ignore[misc]
        finally:
            self._ws_reaper().disarm(self.socket)
        if isinstance(result, tuple) and getattr(self.socket, "closed", False):
            # An error answer (400...) for a head the deadline cut: the reaper closed the
            # socket, and writing to it would only raise BrokenPipeError in pywsgi.
            return None
        return result

    def read_request(self, raw_requestline: str) -> Any:
        if not raw_requestline.endswith("\n"):
            # EOF mid-line: the peer left, or the head deadline shut the socket. Nobody is
            # left to answer, and pywsgi's version check raises IndexError on "HTTP/1.".
            raise ConnectionAbortedError("request line cut short")
        result = super().read_request(raw_requestline)  # type: ignore[misc]
        self._ws_reaper().disarm(self.socket)
        return result

    def _handle_client_error(self, ex: Exception) -> Any:
        """pywsgi's hook for a request head it could not read. A socket error means the peer
        left, and a closed socket means the head deadline cut it (the reaper logged it):
        answer nothing. pywsgi would log, print a traceback and write a 400 to the dead socket,
        which raises again: a traceback pair per slowloris connection (tests/reliability)."""
        if isinstance(ex, OSError) or getattr(self.socket, "closed", False):
            logger.debug("request head not read: %s", ex)
            self.close_connection = True
            return None
        return super()._handle_client_error(ex)  # type: ignore[misc]

    def run_application(self) -> None:
        environ = self.environ
        if "websocket" not in environ.get("HTTP_UPGRADE", "").lower():
            super().run_application()  # type: ignore[misc]
            return
        self.close_connection = True  # no keep-alive after a handshake, whatever happens
        options = self._ws_options()
        head = self.headers
        lowered = head.lowered() if isinstance(head, RequestHead) else None
        request = handshake.validate_request(
            self.command,
            self.request_version,
            lowered if lowered is not None else handshake.headers_from_environ(environ),
        )
        if isinstance(request, handshake.Rejection):
            self._ws_reject(request)
            return
        accepted = handshake.accept(request, deflate=options.compression)
        if isinstance(accepted, handshake.Rejection):
            self._ws_reject(accepted)
            return
        ws = WebSocket(self.socket, options, self._ws_reaper(), environ)
        upgrade = GeventUpgrade(self, request, accepted, ws)
        # gevent-websocket apps use environ["wsgi.websocket"] directly: first use accepts.
        ws._activate = upgrade.accept
        environ[UPGRADE_ENVIRON_KEY] = upgrade
        environ["wsgi.websocket"] = ws
        environ["wsgi.websocket_version"] = "13"
        # Timers for adapters that may not import gevent (the hub's presence grace period).
        environ[SCHEDULER_ENVIRON_KEY] = _SCHEDULER
        try:
            self.result = self.application(environ, self.start_response)
            if not upgrade.accepted:
                self.process_result()  # the app's own answer: 401, 403, 200...
                metrics.handshake(abs(self.code or 500))  # metrics: handshakes by status
                return
        except BaseException:
            if not self._ws_started:
                metrics.handshake(500)  # metrics: pywsgi answers 500
                raise  # no 101 sent (not accepted, or accepted with a handler): pywsgi answers 500
            logger.exception("WebSocket application failed")
            ws.fail(CloseCode.INTERNAL_ERROR, "internal error")
            ws.wait_closed()  # pywsgi closes the socket next: flush the Close frame first
            return
        finally:
            close = getattr(self.result, "close", None)
            self.result = None
            if close is not None:
                close()
        if upgrade.on_message is not None:
            # TLS state lives in the socket object pywsgi closes when this greenlet ends, so a
            # TLS connection cannot be detached: it keeps this greenlet (joined below).
            tls = ws._raw_send is None
            self._ws_send_101(detach=not tls)
            if upgrade.on_open is not None:
                try:
                    upgrade.on_open(ws)
                except Exception:
                    logger.exception("WebSocket on_open handler failed")
                    ws.fail(CloseCode.INTERNAL_ERROR, "internal error")
            if ws.closed:
                # on_open refused (closed) the connection: finish closing, deliver no
                # messages, and still tell on_close, as for any other end.
                ws.wait_closed()
                ws._on_close = upgrade.on_close
                ws._notify_closed()
                return
            ws.serve_callbacks(upgrade.on_message, upgrade.on_close)
            worker = ws._worker
            if tls and isinstance(worker, gevent.Greenlet):
                worker.join()  # the greenlet that reads a TLS connection, until it closes
            return  # the connection lives on without this greenlet
        if upgrade.handler is not None:
            self.ws_switch_deferred(upgrade)
        self._ws_finish(ws)

    def _ws_reject(self, rejection: handshake.Rejection) -> None:
        metrics.handshake(rejection.status)  # metrics: handshakes by status
        body = (rejection.reason + "\n").encode()
        headers = [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
            *rejection.headers,
        ]
        self.start_response(f"{rejection.status} {_reason_phrase(rejection.status)}", headers)
        self.write(body)

    def ws_switch(
        self,
        headers: tuple[tuple[str, str], ...],
        accepted: handshake.Accepted,
        subprotocol: str | None,
        *,
        now: bool,
    ) -> None:
        """Called by :meth:`GeventUpgrade.accept`: build the Protocol; send the 101 now
        (inline use) or after the app returns (deferred handler)."""
        options = self._ws_options()
        self._ws_protocol = Protocol(
            Side.SERVER, max_message_size=options.max_message_size, deflate=accepted.deflate
        )
        self._ws_headers = headers
        self._ws_subprotocol = subprotocol
        if now:
            self._ws_send_101()

    def ws_switch_deferred(self, upgrade: GeventUpgrade) -> None:
        """Send the 101 and run the app's handler, outside the app's request context."""
        self._ws_send_101()
        assert upgrade.handler is not None
        try:
            upgrade.handler(upgrade.ws)
        except ConnectionClosed:
            pass  # the peer went away while the handler was sending: not an error
        except Exception:
            logger.exception("WebSocket handler failed")
            upgrade.ws.fail(CloseCode.INTERNAL_ERROR, "internal error")

    def _ws_send_101(self, *, detach: bool = False) -> None:
        """Send the 101 and open the WebSocket. With ``detach``, the WebSocket takes over the
        socket and pywsgi forgets it, so the handler greenlet can end (callback mode)."""
        if self._ws_started:
            return
        self._ws_started = True
        self.socket.sendall(handshake.serialize_response(101, self._ws_headers))
        metrics.handshake(101)  # metrics: handshakes by status
        self.status = b"101 Switching Protocols"
        self.code = 101
        self.response_headers = []
        ws: WebSocket = self.environ["wsgi.websocket"]
        assert self._ws_protocol is not None
        buffered = self._ws_take_buffered()
        # The connection now belongs to the WebSocket: pywsgi must not parse it as HTTP, and
        # its 8 KiB read buffer is freed (most of an idle connection's memory otherwise).
        rfile = self.rfile
        self.rfile = self.wsgi_input = _CLOSED_INPUT
        self.environ.pop("wsgi.input", None)
        rfile.close()
        if detach:
            sock = self.socket
            ws.rebind(type(sock)(sock.family, sock.type, sock.proto, fileno=sock.detach()))
            self.socket = None
        ws.open(self._ws_protocol, self._ws_subprotocol, buffered)

    def _ws_take_buffered(self) -> bytes:
        """Bytes the HTTP parser read past the request head (a client that pipelined its
        first frames right behind the handshake)."""
        rfile = self.rfile
        sock = self.socket
        timeout = sock.gettimeout()
        sock.settimeout(0.0)
        try:
            data: bytes = rfile.peek(1) if not rfile.closed else b""
            if data:
                data = rfile.read(len(data))
        except (OSError, ValueError):
            data = b""
        finally:
            sock.settimeout(timeout)
        return data

    def _ws_finish(self, ws: WebSocket) -> None:
        """The app (or its handler) returned: complete the closing handshake."""
        if ws._protocol is None:
            return
        if not ws.closed:
            ws.close(CloseCode.NORMAL_CLOSURE)
        ws.wait_closed()


class _ClosedInput:
    """Stands in for pywsgi's ``rfile`` and ``wsgi_input`` once the socket is upgraded."""

    closed = True

    def _discard(self) -> None:
        pass


_CLOSED_INPUT = _ClosedInput()


def _reason_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


class WebSocketHandler(WebSocketHandlerMixin, pywsgi.WSGIHandler):  # type: ignore[misc]
    """``handler_class`` for ``gevent.pywsgi.WSGIServer``: HTTP and WebSocket on one port."""
