"""``sockets.test_client(app, ...)``: no network, the app's real hub and contexts."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from flask import Flask
from flaskapps import ACCOUNTS, SECRET_KEY, create_app, login_cookie, sockets

from flask_mlsockets import MLSockets, Principal
from mlsockets.client import ErrorReply
from mlsockets.exceptions import ConnectionClosedError, ConnectionClosedOK, InvalidHandshake


def test_emit_returns_the_ack_and_runs_in_the_app(app: Flask) -> None:
    with sockets.test_client(app, user="1") as ws:
        assert ws.user_id == "1"
        assert ws.emit("echo", {"a": [1, 2]}) == {"a": [1, 2]}
        who = ws.emit("whoami")
        assert who["app"] == app.name
        assert who["current_user"] == "1"  # Flask-Login loads the user from the session
        assert who["socket_id"] == ws.connection_id
        assert ws.emit("g.count") == 1
        assert ws.emit("g.count") == 1


def test_a_flask_login_user_object_brings_its_info(app: Flask) -> None:
    ws = sockets.test_client(app, user=ACCOUNTS["2"])
    assert ws.emit("whoami")["info"] == {"name": "bob"}
    assert ws.emit("whoami")["current_user"] == "2"


def test_errors_raise_error_reply(app: Flask, caplog: pytest.LogCaptureFixture) -> None:
    ws = sockets.test_client(app, user=Principal(user_id="1"))
    with pytest.raises(ErrorReply) as invalid:
        ws.emit("chat.send", {"room": 1})
    assert invalid.value.code == "invalid"
    assert set(invalid.value.fields) == {"room", "text"}
    with pytest.raises(ErrorReply) as unknown:
        ws.emit("nope")
    assert unknown.value.code == "unknown_event"
    with pytest.raises(ErrorReply) as internal:
        ws.emit("fail")
    assert internal.value.code == "internal"
    assert ws.emit("echo", 1, ack=False) is None
    ws.emit("nope", ack=False)
    error = ws.receive()
    assert error.event == "mls.error"
    assert error.data["code"] == "unknown_event"


def test_subscribe_receive_and_broadcasts_from_views(app: Flask, client: Any) -> None:
    alice = sockets.test_client(app, user="1")
    bob = sockets.test_client(app, user="2")
    assert alice.subscribe("private-user.1") == {"channel": "private-user.1"}
    with pytest.raises(ErrorReply) as info:
        bob.subscribe("private-user.1")
    assert info.value.code == "forbidden"
    for ws in (alice, bob):
        ws.emit("room.join", "lobby")
    response = client.post(
        "/notify",
        json={"text": "hi", "to": "room:lobby"},
        headers={"X-Socket-ID": bob.connection_id},
    )
    assert response.json == {"delivered": 1}
    assert [(e.event, e.data, e.channel) for e in alice.get_received()] == [
        ("notice", "hi", "room:lobby")
    ]
    assert bob.get_received() == []
    with pytest.raises(TimeoutError):
        bob.receive(timeout=0.05)
    assert bob.emit("notify.user", {"user": "1", "text": "psst"}) == 1
    assert alice.receive().data == "psst"


def test_presence_between_test_clients(app: Flask) -> None:
    alice = sockets.test_client(app, user=ACCOUNTS["1"])
    bob = sockets.test_client(app, user=ACCOUNTS["2"])
    alice.subscribe("presence-room.1")
    members = bob.subscribe("presence-room.1")["members"]
    assert [m["info"]["name"] for m in members] == ["alice", "bob"]
    bob.disconnect()
    left = [e for e in alice.get_received() if e.event == "mls.left"]
    assert left[0].data["member"]["user_id"] == "2"


def test_disconnect_runs_the_hooks_and_closes(app: Flask) -> None:
    ws = sockets.test_client(app, user="1")
    ws.disconnect()
    assert ws.closed and ws.close_code == 1000
    assert app.config["EVENTS"][-2:] == [("connect", "1"), ("disconnect", "1")]
    with pytest.raises(ConnectionClosedOK):
        ws.emit("echo", 1)


def test_a_refusing_connect_hook_raises() -> None:
    app = create_app(REFUSE_USER="2")
    with pytest.raises(ConnectionClosedError) as info:
        sockets.test_client(app, user="2")
    assert (info.value.code, info.value.reason) == (1008, "banned")


def test_msgpack_format(app: Flask) -> None:
    ws = sockets.test_client(app, user="1", format="msgpack")
    assert ws.emit("echo", {"n": 1}) == {"n": 1}
    with pytest.raises(ValueError):
        sockets.test_client(app, format="xml")


def test_session_for_handlers_and_the_write_warning(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    ws = sockets.test_client(app, user="1", session={"written": "before"})
    assert ws.emit("session.read") == "before"
    with caplog.at_level(logging.WARNING, logger="mlsockets.flask"):
        ws.emit("session.write", "after")
    assert ws.emit("session.read") == "before"
    assert "not persisted" in caplog.text


def test_the_real_handshake_with_a_session_cookie(app: Flask) -> None:
    ws = sockets.test_client(app, headers={"Cookie": login_cookie(app, "2")})
    assert ws.user_id == "2"
    assert ws.emit("whoami")["info"] == {"name": "bob"}
    with pytest.raises(InvalidHandshake) as anonymous:
        sockets.test_client(app, headers={})
    assert anonymous.value.status == 401
    with pytest.raises(InvalidHandshake) as evil:
        sockets.test_client(app, headers={"Origin": "https://evil.example"})
    assert evil.value.status == 403
    with pytest.raises(TypeError):
        sockets.test_client(app, user="1", headers={})


def test_a_rate_limited_connection_is_closed(app: Flask) -> None:
    strict = create_app(MLSOCKETS_RATE=0.001, MLSOCKETS_BURST=1, MLSOCKETS_RATE_STRIKES=1)
    ws = sockets.test_client(strict, user="1")
    assert ws.emit("echo", 1) == 1
    with pytest.raises(ErrorReply) as info:
        ws.emit("echo", 2)
    assert info.value.code == "rate_limited"
    with pytest.raises(ConnectionClosedError) as closed:
        ws.emit("echo", 3)
    assert closed.value.code == 1008
    assert ("disconnect", "1") in strict.config["EVENTS"]


def test_anonymous_test_client_without_flask_login() -> None:
    ext = MLSockets()

    @ext.on("who")
    def who(conn: Any, data: Any) -> Any:
        return conn.principal.user_id

    app = Flask("plain")
    app.config["SECRET_KEY"] = SECRET_KEY
    ext.init_app(app)
    assert ext.test_client(app).emit("who") is None
    assert ext.test_client(app, user=7).emit("who") == "7"


def test_presence_grace_runs_on_a_timer_without_a_server() -> None:
    app = create_app(MLSOCKETS_PRESENCE_GRACE=0.05)
    alice = sockets.test_client(app, user=ACCOUNTS["1"])
    bob = sockets.test_client(app, user=ACCOUNTS["2"])
    alice.subscribe("presence-room.2")
    bob.subscribe("presence-room.2")
    alice.get_received()
    bob.disconnect()
    assert alice.get_received() == []  # still present during the grace period
    left = alice.receive(timeout=5)
    assert (left.event, left.data["member"]["user_id"]) == ("mls.left", "2")


def test_a_failing_disconnect_hook_is_logged_and_the_others_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ext = MLSockets(allow_anonymous=True)
    ran: list[str] = []

    @ext.on_disconnect
    def broken(conn: Any) -> None:
        raise RuntimeError("hook bug")

    @ext.on_disconnect
    def fine(conn: Any) -> None:
        ran.append(conn.id)

    app = Flask("hooks")
    ext.init_app(app)
    ws = ext.test_client(app)
    ws.disconnect()
    assert ran == [ws.connection_id]
    assert "hook bug" in caplog.text
