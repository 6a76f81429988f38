"""The handshake is an ordinary Flask request, decided before any 101: a real mlsockets server
in this process, the real Python client, and session cookies from a Flask test client login."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask, request
from flaskapps import SECRET_KEY, create_app, login_cookie

from flask_mlsockets import MLSockets, Principal, Unauthorized
from mlsockets.client import Client, connect
from mlsockets.exceptions import InvalidHandshake
from mlsockets.tokens import TokenAuthenticator, make_token

Serve = Callable[[Flask], str]
Connect = Callable[..., Client]


def refused(connect: Connect, url: str, **options: Any) -> InvalidHandshake:
    with pytest.raises(InvalidHandshake) as info:
        connect(url, **options)
    return info.value


def test_anonymous_user_gets_401_and_no_101(app: Flask, serve: Serve, connect: Connect) -> None:
    address = serve(app)
    error = refused(connect, f"ws://{address}/ws")
    assert error.status == 401
    assert "authentication required" in str(error)
    assert app.config["EVENTS"] == []  # no connect hook ran: nothing was accepted


def test_logged_in_user_connects_with_the_session_cookie(
    app: Flask, serve: Serve, connect: Connect
) -> None:
    address = serve(app)
    client = connect(
        f"ws://{address}/ws", headers={"Cookie": login_cookie(app, "1"), "User-Agent": "ua/1"}
    )
    assert client.user_id == "1"
    assert client.subprotocol == "mlsockets.json.v1"
    who = client.emit("whoami", ack=True)
    assert who == {
        "principal": "1",
        "info": {"name": "alice"},  # from @sockets.user_info
        "current_user": "1",  # Flask-Login, loaded again in the handler's context
        "app": app.name,
        "path": "/ws",
        "socket_id": client.connection_id,
        "user_agent": "ua/1",
        "session_user": "1",
        "url": "/ping",  # url_for works in handlers
    }


def test_msgpack_subprotocol(app: Flask, serve: Serve, connect: Connect) -> None:
    address = serve(app)
    client = connect(
        f"ws://{address}/ws", headers={"Cookie": login_cookie(app, "2")}, format="msgpack"
    )
    assert client.subprotocol == "mlsockets.msgpack.v1"
    assert client.emit("echo", {"b": [1, 2]}, ack=True) == {"b": [1, 2]}


def test_origin_allow_list_defaults_to_same_origin(
    app: Flask, serve: Serve, connect: Connect
) -> None:
    address = serve(app)
    cookie = login_cookie(app, "1")
    url = f"ws://{address}/ws"
    error = refused(connect, url, headers={"Cookie": cookie, "Origin": "http://evil.example"})
    assert error.status == 403
    assert "origin not allowed" in str(error)
    same = connect(url, headers={"Cookie": cookie, "Origin": f"http://{address}"})
    assert same.user_id == "1"


def test_allowed_origins_from_config(serve: Serve, connect: Connect) -> None:
    app = create_app(MLSOCKETS_ALLOWED_ORIGINS=["https://*.example.com"])
    address = serve(app)
    cookie = login_cookie(app, "1")
    url = f"ws://{address}/ws"
    assert connect(url, headers={"Cookie": cookie, "Origin": "https://chat.example.com"})
    assert (
        refused(connect, url, headers={"Cookie": cookie, "Origin": "https://x.org"}).status == 403
    )


def test_before_request_hook_refuses_the_handshake(
    app: Flask, serve: Serve, connect: Connect
) -> None:
    @app.before_request
    def maintenance() -> Any:
        if request.endpoint == "mlsockets":
            return "down for maintenance", 503
        return None

    address = serve(app)
    error = refused(connect, f"ws://{address}/ws", headers={"Cookie": login_cookie(app, "1")})
    assert error.status == 503
    assert "maintenance" in str(error)


def test_the_request_context_is_gone_before_the_connection_opens(
    app: Flask, serve: Serve, connect: Connect
) -> None:
    order: list[str] = []

    @app.teardown_request
    def done(exc: BaseException | None) -> None:
        order.append(f"teardown {request.path}")

    app.config["EVENTS"] = _Recorder(order)
    address = serve(app)
    connect(f"ws://{address}/ws", headers={"Cookie": login_cookie(app, "1")})
    # login, then the handshake's request is torn down before the connect hook runs (in a
    # request context of its own, rebuilt from the snapshot).
    assert order[:4] == ["teardown /login/1", "teardown /ws", "event connect", "teardown /ws"]


class _Recorder(list[Any]):
    def __init__(self, order: list[str]) -> None:
        super().__init__()
        self._order = order

    def append(self, item: Any) -> None:
        self._order.append(f"event {item[0]}")
        super().append(item)


def test_allow_anonymous_for_the_whole_extension(serve: Serve, connect: Connect) -> None:
    app = create_app(MLSOCKETS_ALLOW_ANONYMOUS=True)
    address = serve(app)
    client = connect(f"ws://{address}/ws")
    assert client.user_id is None
    assert client.emit("whoami", ack=True)["current_user"] is None


def bare_app(ext: MLSockets, **config: Any) -> Flask:
    app = Flask("bare")
    app.config.update(SECRET_KEY=SECRET_KEY, **config)
    ext.init_app(app)
    return app


def test_allow_anonymous_per_route(serve: Serve, connect: Connect) -> None:
    ext = MLSockets()
    ext.add_route("/ws/public", allow_anonymous=True)

    @ext.on("echo")
    def echo(conn: Any, data: Any) -> Any:
        return data

    address = serve(bare_app(ext))
    assert refused(connect, f"ws://{address}/ws").status == 401
    public = connect(f"ws://{address}/ws/public")
    assert public.user_id is None
    assert public.emit("echo", "hi", ack=True) == "hi"


def test_authenticate_hook_replaces_the_rule(serve: Serve, connect: Connect) -> None:
    ext = MLSockets()
    secret = b"s" * 32

    @ext.authenticate
    def by_query(handshake: Any) -> Principal | None:
        assert request.path == "/ws"  # inside the handshake's request context
        if handshake.query.get("ban"):
            raise Unauthorized("banned token")
        return (
            TokenAuthenticator(secret)(handshake)
            if "token" not in handshake.query
            else (Principal(user_id=handshake.query["token"]))
        )

    address = serve(bare_app(ext))
    url = f"ws://{address}/ws"
    assert connect(f"{url}?token=42").user_id == "42"
    assert connect(url, token=make_token(secret, "7")).user_id == "7"
    error = refused(connect, f"{url}?ban=1&token=1")
    assert error.status == 401
    assert "banned token" in str(error)
    assert refused(connect, url, token="garbage").status == 401


def test_no_known_subprotocol_is_a_400(app: Flask, serve: Serve) -> None:
    address = serve(app)
    with pytest.raises(InvalidHandshake) as info:
        connect(f"ws://{address}/ws", headers={"Cookie": login_cookie(app, "1")}, timeout=5)
    assert info.value.status == 400
    assert "mlsockets.json.v1" in str(info.value)


def test_handshake_rate_limit_is_a_429(serve: Serve, connect: Connect) -> None:
    app = create_app(MLSOCKETS_HANDSHAKE_RATE=0.01, MLSOCKETS_HANDSHAKE_BURST=1)
    address = serve(app)
    cookie = login_cookie(app, "1")
    connect(f"ws://{address}/ws", headers={"Cookie": cookie})
    assert refused(connect, f"ws://{address}/ws", headers={"Cookie": cookie}).status == 429


def test_a_plain_request_to_the_endpoint_is_a_426(client: Any) -> None:
    response = client.get("/ws")
    assert response.status_code == 426
    assert response.headers["Upgrade"] == "websocket"
