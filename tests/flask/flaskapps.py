"""The Flask app the tests in tests/flask use (imported as ``flaskapps``; the subprocess tests
serve ``flaskapps:create_app()``).

Flask-Login with two users, a login view, a view that broadcasts (``POST /notify``), and one
module-level extension whose handlers are shared by every app created here.
"""

from __future__ import annotations

from typing import Any

import marshmallow
from flask import Flask, current_app, g, request, session, url_for
from flask_login import LoginManager, UserMixin, current_user, login_user

from flask_mlsockets import Forbidden, MLSockets, User, broadcaster

SECRET_KEY = "tests-flask-secret-key"


class Account(UserMixin):
    def __init__(self, user_id: str, name: str) -> None:
        self.id = user_id
        self.name = name


ACCOUNTS = {"1": Account("1", "alice"), "2": Account("2", "bob")}

sockets = MLSockets()


class ChatMessage(marshmallow.Schema):
    room = marshmallow.fields.String(required=True)
    text = marshmallow.fields.String(required=True)


@sockets.user_info
def public_info(user: Account) -> dict[str, Any]:
    return {"name": user.name}


@sockets.on("echo")
def echo(conn: Any, data: Any) -> Any:
    return data


@sockets.on("whoami")
def whoami(conn: Any, data: Any) -> dict[str, Any]:
    return {
        "principal": conn.principal.user_id,
        "info": dict(conn.principal.info),
        "current_user": current_user.get_id() if current_user.is_authenticated else None,
        "app": current_app.name,
        "path": request.path,
        "socket_id": request.headers.get("X-Socket-ID"),
        "user_agent": request.headers.get("User-Agent"),
        "session_user": session.get("_user_id"),
        "url": url_for("ping"),
    }


@sockets.on("g.count")
def count_in_g(conn: Any, data: Any) -> int:
    g.count = getattr(g, "count", 0) + 1
    current_app.config["EVENTS"].append(("g.count", g.count))
    return int(g.count)


@sockets.on("session.write")
def write_session(conn: Any, data: Any) -> str:
    session["written"] = data
    return "written"


@sockets.on("session.read")
def read_session(conn: Any, data: Any) -> Any:
    return session.get("written")


@sockets.on("fail")
def fail(conn: Any, data: Any) -> None:
    raise RuntimeError("handler bug: secret detail")


@sockets.on("refuse")
def refuse(conn: Any, data: Any) -> None:
    raise Forbidden("not for you")


@sockets.on("chat.send", schema=ChatMessage)
def chat_send(conn: Any, data: dict[str, str]) -> dict[str, bool]:
    delivered = broadcaster.emit(
        "chat.message", {"text": data["text"]}, to=f"room:{data['room']}", skip_sender=True
    )
    return {"delivered": delivered > 0}


@sockets.on("room.join")
def join_room(conn: Any, data: str) -> str:
    sockets.join(conn, f"room:{data}")
    return f"room:{data}"


@sockets.on("notify.user")
def notify_user(conn: Any, data: dict[str, str]) -> int:
    return broadcaster.emit("notice", data["text"], to=User(data["user"]))


@sockets.on_connect
def on_connect(conn: Any) -> None:
    refused = current_app.config.get("REFUSE_USER")
    if refused is not None and refused == conn.principal.user_id:
        raise Forbidden("banned")
    current_app.config["EVENTS"].append(("connect", conn.principal.user_id))


@sockets.on_disconnect
def on_disconnect(conn: Any) -> None:
    current_app.config["EVENTS"].append(("disconnect", conn.principal.user_id))


@sockets.channel("private-user.{id}")
def own_channel(principal: Any, id: str) -> bool:
    current_app.config["EVENTS"].append(("authorize", id))
    return bool(principal.user_id == id)


@sockets.channel("presence-room.{room}")
def room_member(principal: Any, room: str) -> dict[str, Any]:
    return {"name": principal.info.get("name")}


def create_app(**config: Any) -> Flask:
    """A fresh app; ``config`` is applied before ``init_app``."""
    app = Flask(config.pop("name", "flaskapps"))
    app.config.update(SECRET_KEY=SECRET_KEY, EVENTS=[], TEARDOWNS=[])
    app.config.update(config)
    manager = LoginManager(app)

    @manager.user_loader
    def load_user(user_id: str) -> Account | None:
        return ACCOUNTS.get(user_id)

    @app.post("/login/<user_id>")
    def login(user_id: str) -> str:
        login_user(ACCOUNTS[user_id])
        return "logged in"

    @app.post("/notify")
    def notify() -> dict[str, int]:
        payload = request.get_json()
        delivered = broadcaster.emit(
            "notice", payload["text"], to=payload.get("to"), skip_sender=True
        )
        return {"delivered": delivered}

    @app.get("/ping")
    def ping() -> str:
        return "pong"

    @app.teardown_appcontext
    def teardown(exc: BaseException | None) -> None:
        current_app.config["TEARDOWNS"].append(type(exc).__name__ if exc else None)

    sockets.init_app(app)
    return app


def login_cookie(app: Flask, user_id: str) -> str:
    """A ``Cookie`` header value for a session logged in as ``user_id`` (through a real view)."""
    flask_client = app.test_client()
    assert flask_client.post(f"/login/{user_id}").status_code == 200
    cookie = flask_client.get_cookie(app.config["SESSION_COOKIE_NAME"])
    assert cookie is not None
    return f"{cookie.key}={cookie.value}"
