"""The gevent-websocket fallback in process, with a stand-in for its ``wsgi.websocket``
object (the real worker runs in test_flask_servers): refusals close with 1008 / 1011 after
the 101, an accepted connection runs inline once the view has returned; plus autodiscover
and server-side rooms."""

from __future__ import annotations

import json
import struct
from collections import deque
from typing import Any

import pytest
from flask import Flask, redirect, request
from flaskapps import create_app, login_cookie, sockets
from werkzeug.test import EnvironBuilder

from flask_mlsockets import MLSockets
from flask_mlsockets.legacy import LegacySocket
from mlsockets.exceptions import ConnectionClosedError

CLOSE = 8


class FakeGeventWebSocket:
    """What gevent-websocket 0.10 puts in environ["wsgi.websocket"], minus the socket."""

    OPCODE_CLOSE = CLOSE

    def __init__(self, *incoming: Any) -> None:
        self.incoming = deque(incoming)
        self.sent: list[Any] = []
        self.frames: list[tuple[int, bytes]] = []
        self.closed = False

    def receive(self) -> Any:
        if self.closed:
            raise RuntimeError("WebSocket is already closed")
        if not self.incoming:
            self.closed = True  # the peer closed
            return None
        return self.incoming.popleft()

    def send(self, message: Any, binary: bool | None = None) -> None:
        if self.closed:
            raise RuntimeError("socket is dead")
        self.sent.append(message)

    def send_frame(self, payload: bytes, opcode: int) -> None:
        self.frames.append((opcode, payload))

    def close(self, code: int = 1000, message: bytes = b"") -> None:
        raise AssertionError("its close() sends no status code: never call it")

    def decoded(self) -> list[Any]:
        return [json.loads(message) for message in self.sent]


def run(app: Flask, ws: FakeGeventWebSocket, **headers: str) -> int:
    """Call the app as gevent-websocket does (after its 101); returns the response status."""
    handshake = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Protocol": "mlsockets.json.v1",
        **headers,
    }
    builder = EnvironBuilder(path="/ws", headers=list(handshake.items()))
    environ = builder.get_environ()
    builder.close()
    environ["wsgi.websocket"] = ws
    status: list[int] = []
    body = app(environ, lambda line, headers, exc_info=None: status.append(int(line[:3])))
    list(body)  # gevent-websocket iterates the body: an accepted connection lives here
    getattr(body, "close", lambda: None)()
    return status[0]


def close_frame(code: int, reason: str) -> tuple[int, bytes]:
    return (CLOSE, struct.pack("!H", code) + reason.encode())


def message(event: str, data: Any = None, id: int | None = None) -> str:
    envelope: dict[str, Any] = {"event": event, "data": data}
    if id is not None:
        envelope["id"] = id
    return json.dumps(envelope)


def test_accepted_connection_runs_inline_after_the_view_returned(app: Flask) -> None:
    ws = FakeGeventWebSocket(message("echo", "hi", 1), message("whoami", None, 2))
    assert run(app, ws, Cookie=login_cookie(app, "1")) == 200
    welcome, echo, who = ws.decoded()
    assert welcome["event"] == "mls.welcome"
    assert welcome["data"]["user_id"] == "1"
    assert echo == {"reply": 1, "data": "hi"}
    assert who["data"]["current_user"] == "1"
    assert who["data"]["socket_id"] == welcome["data"]["connection_id"]
    assert app.config["EVENTS"] == [("connect", "1"), ("disconnect", "1")]
    assert ws.frames == []  # the peer closed first


def test_refusals_close_with_a_policy_code_after_the_101(app: Flask) -> None:
    anonymous = FakeGeventWebSocket()
    run(app, anonymous)
    assert anonymous.frames == [close_frame(1008, "401 Unauthorized")]
    assert anonymous.closed and anonymous.sent == []
    evil = FakeGeventWebSocket()
    run(app, evil, Cookie=login_cookie(app, "1"), Origin="http://evil.example")
    assert evil.frames == [close_frame(1008, "403 Forbidden")]
    wrong = FakeGeventWebSocket()
    run(app, wrong, Cookie=login_cookie(app, "1"), **{"Sec-WebSocket-Protocol": "chat"})
    assert wrong.frames == [close_frame(1008, "400 Bad Request")]
    assert app.config["EVENTS"] == []


def test_before_request_refusals_and_connect_hooks_close_too() -> None:
    app = create_app(REFUSE_USER="2")

    @app.before_request
    def maintenance() -> Any:
        flag = request.headers.get("X-Maintenance")
        if flag == "redirect":
            return redirect("/login")
        return ("later", 503) if flag else None

    down = FakeGeventWebSocket()
    run(app, down, Cookie=login_cookie(app, "1"), **{"X-Maintenance": "1"})
    assert down.frames == [close_frame(1011, "503 Service Unavailable")]
    redirected = FakeGeventWebSocket()
    run(app, redirected, Cookie=login_cookie(app, "1"), **{"X-Maintenance": "redirect"})
    assert redirected.frames == [close_frame(1008, "302 Found")]
    banned = FakeGeventWebSocket(message("echo", 1, 1))
    run(app, banned, Cookie=login_cookie(app, "2"))
    assert banned.frames == [close_frame(1008, "banned")]
    assert banned.sent == []


def test_autodiscover_and_server_side_rooms() -> None:
    ext = MLSockets(allow_anonymous=True)
    assert ext.autodiscover("flask_autodiscovered") == ["auto.ping"]
    assert ext.autodiscover("flask_autodiscovered") == []  # twice is harmless
    app = Flask("auto")
    ext.init_app(app)
    ws = ext.test_client(app)
    assert ws.emit("auto.ping", 3) == {"pong": 3, "app": "auto"}
    ext.join(ws.connection, "room:a", app=app)
    with app.app_context():
        assert ext.emit("news", 1, to="room:a") == 1
        ext.leave(ws.connection, "room:a")
        assert ext.emit("news", 2, to="room:a") == 0
    assert [e.data for e in ws.get_received()] == [1]


def test_the_shared_extension_serves_its_apps_separately() -> None:
    first, second = create_app(name="one"), create_app(name="two")
    a = sockets.test_client(first, user="1")
    b = sockets.test_client(second, user="1")
    assert (a.emit("whoami")["app"], b.emit("whoami")["app"]) == ("one", "two")
    with first.app_context():
        assert sockets.emit("notice", "first") == 1
    assert [e.data for e in a.get_received()] == ["first"]
    assert b.get_received() == []


class BrokenSocket:
    """A gevent-websocket object whose socket died; no send_frame (another server)."""

    closed = False

    def __init__(self, incoming: Any = None) -> None:
        self.incoming = incoming
        self.closes: list[tuple[int, str]] = []

    def receive(self) -> Any:
        if isinstance(self.incoming, Exception):
            raise self.incoming
        return self.incoming

    def send(self, message: Any, binary: bool | None = None) -> None:
        raise OSError("broken pipe")

    def close(self, code: int = 1000, reason: str = "") -> None:
        self.closes.append((code, reason))


def test_legacy_socket_edges() -> None:
    assert LegacySocket(BrokenSocket(bytearray(b"\x01"))).receive() == b"\x01"
    assert LegacySocket(BrokenSocket(RuntimeError("closed"))).receive() is None
    assert list(LegacySocket(BrokenSocket(None))) == []
    broken = BrokenSocket()
    socket = LegacySocket(broken, "mlsockets.json.v1")
    assert socket.subprotocol == "mlsockets.json.v1"
    with pytest.raises(ConnectionClosedError):
        socket.send("x")
    assert socket.closed
    with pytest.raises(ConnectionClosedError):
        socket.send("y")
    socket.close(1008, "late")
    assert broken.closes == []  # closed already: nothing more is sent
    other = BrokenSocket()
    LegacySocket(other).close(1001, "bye")
    assert other.closes == [(1001, "bye")]  # a server whose close() sends the code


def test_a_broken_legacy_connection_is_dropped_from_broadcasts(app: Flask) -> None:
    class Dies(FakeGeventWebSocket):
        def send(self, message: Any, binary: bool | None = None) -> None:
            if self.sent:
                raise RuntimeError("socket is dead")
            self.sent.append(message)

    ws = Dies(message("room.join", "x", 1))
    run(app, ws, Cookie=login_cookie(app, "1"))  # joined, then its reply could not be sent
    assert app.config["EVENTS"] == [("connect", "1"), ("disconnect", "1")]
