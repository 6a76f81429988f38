"""Event handlers in Flask contexts, broadcasts from views, channels with the logged-in user,
and several apps in one process: a real in-process server and real clients."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flaskapps import create_app, login_cookie

from flask_mlsockets import broadcaster
from mlsockets.client import Client, ErrorReply

Serve = Callable[[Flask], str]
Connect = Callable[..., Client]


def user_client(app: Flask, address: str, connect: Connect, user_id: str, **options: Any) -> Client:
    return connect(f"ws://{address}/ws", headers={"Cookie": login_cookie(app, user_id)}, **options)


def test_each_event_gets_a_fresh_app_context_and_teardown(
    app: Flask, serve: Serve, connect: Connect
) -> None:
    client = user_client(app, serve(app), connect, "1")
    app.config["TEARDOWNS"].clear()
    assert [client.emit("g.count", ack=True) for _ in range(3)] == [1, 1, 1]  # g never leaks
    assert app.config["TEARDOWNS"] == [None, None, None]  # teardown_appcontext per event


def test_teardown_sees_the_handler_exception_and_the_client_sees_no_detail(
    app: Flask, serve: Serve, connect: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    client = user_client(app, serve(app), connect, "1")
    app.config["TEARDOWNS"].clear()
    with pytest.raises(ErrorReply) as info:
        client.emit("fail", ack=True)
    assert (info.value.code, info.value.message) == ("internal", "internal error")
    assert "secret" not in str(info.value)
    assert app.config["TEARDOWNS"] == ["RuntimeError"]  # e.g. a DB session rolls back
    assert "handler bug: secret detail" in caplog.text  # logged with its traceback
    with pytest.raises(ErrorReply) as refused:
        client.emit("refuse", ack=True)
    assert (refused.value.code, refused.value.message) == ("forbidden", "not for you")


def test_schema_validation_errors_are_invalid_replies(
    app: Flask, serve: Serve, connect: Connect
) -> None:
    client = user_client(app, serve(app), connect, "1")
    with pytest.raises(ErrorReply) as info:
        client.emit("chat.send", {"room": "lobby"}, ack=True)
    assert info.value.code == "invalid"
    assert "text" in info.value.fields


def test_session_writes_in_handlers_are_not_persisted_and_warn_once(
    app: Flask, serve: Serve, connect: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    client = user_client(app, serve(app), connect, "1")
    with caplog.at_level(logging.WARNING, logger="mlsockets.flask"):
        assert client.emit("session.write", "x", ack=True) == "written"
        assert client.emit("session.write", "y", ack=True) == "written"
        assert client.emit("session.read", ack=True) is None  # each event gets a fresh copy
        client.emit("whoami", ack=True)  # reads only: no warning
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "session.write modified flask.session" in warnings[0].getMessage()
    assert "not persisted" in warnings[0].getMessage()


def test_connect_and_disconnect_hooks_run_in_the_app(serve: Serve, connect: Connect) -> None:
    app = create_app(REFUSE_USER="2")
    address = serve(app)
    client = user_client(app, address, connect, "1")
    with pytest.raises(Exception) as info:  # the 101 was sent, then the hook refused: 1008
        user_client(app, address, connect, "2")
    assert getattr(info.value, "code", None) == 1008
    client.close()
    _wait_for(lambda: ("disconnect", "1") in app.config["EVENTS"])
    assert app.config["EVENTS"][:2] == [("connect", "1"), ("disconnect", "1")]


def _wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_broadcaster_emit_from_a_view_skips_the_sender_by_x_socket_id(
    app: Flask, client: Any, serve: Serve, connect: Connect
) -> None:
    address = serve(app)
    alice = user_client(app, address, connect, "1")
    bob = user_client(app, address, connect, "2")
    for ws in (alice, bob):
        assert ws.emit("room.join", "lobby", ack=True) == "room:lobby"
    response = client.post(
        "/notify",
        json={"text": "hello", "to": "room:lobby"},
        headers={"X-Socket-ID": alice.connection_id},
    )
    assert response.json == {"delivered": 1}
    event = bob.receive(timeout=5)
    assert (event.event, event.data, event.channel) == ("notice", "hello", "room:lobby")
    with pytest.raises(TimeoutError):
        alice.receive(timeout=0.2)
    # Without the header, everyone in the room gets it.
    assert client.post("/notify", json={"text": "all", "to": "room:lobby"}).json == {"delivered": 2}
    assert alice.receive(timeout=5).data == "all"


def test_skip_sender_inside_a_handler_skips_the_connection_that_sent_the_event(
    app: Flask, serve: Serve, connect: Connect
) -> None:
    address = serve(app)
    alice = user_client(app, address, connect, "1")
    bob = user_client(app, address, connect, "2")
    for ws in (alice, bob):
        ws.emit("room.join", "r1", ack=True)
    assert alice.emit("chat.send", {"room": "r1", "text": "hi bob"}, ack=True) == {
        "delivered": True
    }
    assert bob.receive(timeout=5).data == {"text": "hi bob"}
    with pytest.raises(TimeoutError):
        alice.receive(timeout=0.2)


def test_broadcaster_in_a_cli_like_app_context(app: Flask, serve: Serve, connect: Connect) -> None:
    address = serve(app)
    alice = user_client(app, address, connect, "1")
    with app.app_context():  # a CLI command or a background job of the app
        assert broadcaster.emit("notice", "to everyone") == 1
        assert broadcaster.hub.registry.count_user("1") == 1  # type: ignore[arg-type]
    assert alice.receive(timeout=5).data == "to everyone"
    with pytest.raises(RuntimeError):  # no app context: a clear error
        broadcaster.emit("notice", "lost")


def test_private_user_channel_with_the_logged_in_user(
    app: Flask, serve: Serve, connect: Connect
) -> None:
    address = serve(app)
    alice = user_client(app, address, connect, "1")
    assert alice.subscribe("private-user.1") == {"channel": "private-user.1"}
    with pytest.raises(ErrorReply) as info:
        alice.subscribe("private-user.2")
    assert info.value.code == "forbidden"
    assert ("authorize", "2") in app.config["EVENTS"]  # the authorizer saw current_app
    with app.app_context():
        assert broadcaster.emit("notice", "only you", to="private-user.1") == 1
    assert alice.receive(timeout=5).channel == "private-user.1"


def test_presence_channel_members_carry_user_info(
    app: Flask, serve: Serve, connect: Connect
) -> None:
    address = serve(app)
    alice = user_client(app, address, connect, "1")
    bob = user_client(app, address, connect, "2")
    alice.subscribe("presence-room.7")
    reply = bob.subscribe("presence-room.7")
    names = sorted(member["info"]["name"] for member in reply["members"])
    assert names == ["alice", "bob"]
    joined = [e for e in _drain(alice) if e.event == "mls.joined"]
    assert joined[0].data["member"] == {"user_id": "2", "info": {"name": "bob"}}


def _drain(client: Client) -> list[Any]:
    events = []
    while True:
        try:
            events.append(client.receive(timeout=0.3))
        except TimeoutError:
            return events


def test_two_apps_in_one_process_are_isolated(serve: Serve, connect: Connect) -> None:
    first = create_app(name="first")
    second = create_app(name="second", MLSOCKETS_PATH="/socket", MLSOCKETS_ALLOW_ANONYMOUS=True)
    a1, a2 = serve(first), serve(second)
    one = user_client(first, a1, connect, "1")
    two = connect(f"ws://{a2}/socket")
    assert one.emit("whoami", ack=True)["app"] == "first"
    assert two.emit("whoami", ack=True)["app"] == "second"
    assert first.extensions["mlsockets"].hub() is not second.extensions["mlsockets"].hub()
    with second.app_context():
        assert broadcaster.emit("notice", "second only") == 1
    assert two.receive(timeout=5).data == "second only"
    with pytest.raises(TimeoutError):
        one.receive(timeout=0.2)
    assert first.url_map.bind("x").match("/ws")[0] == "mlsockets"
    assert second.config["MLSOCKETS_PATH"] == "/socket"
