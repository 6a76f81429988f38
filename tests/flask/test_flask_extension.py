"""Extension etiquette (STYLE.md principle 9): init_app, config defaults, per-app state, the
app factory, per-process hubs, the Redis hook and the browser client route."""

from __future__ import annotations

import os
import sys
import types
from collections.abc import Mapping
from typing import Any

import pytest
from flask import Flask
from flaskapps import SECRET_KEY, create_app, sockets

import flask_mlsockets
from flask_mlsockets import AppState, MLSockets, option_defaults
from mlsockets.broadcast.base import Deliver, Target
from mlsockets.broadcast.local import LocalBroadcaster
from mlsockets.exceptions import ConfigurationError, InvalidHandshake, InvalidState
from mlsockets.typing import ConnectionId

DOCUMENTED_DEFAULTS = {
    "MLSOCKETS_PATH": "/ws",
    "MLSOCKETS_ALLOWED_ORIGINS": None,
    "MLSOCKETS_REQUIRE_ORIGIN": False,
    "MLSOCKETS_ALLOW_ANONYMOUS": False,
    "MLSOCKETS_HANDSHAKE_RATE": 10.0,
    "MLSOCKETS_HANDSHAKE_BURST": 50,
    "MLSOCKETS_FORMATS": None,
    "MLSOCKETS_REDIS_URL": None,
    "MLSOCKETS_SERVE_CLIENT": True,
    "MLSOCKETS_BROADCAST": None,
    "MLSOCKETS_BROADCAST_DIR": None,
    "MLSOCKETS_PUBLISH_KEY": None,
    "MLSOCKETS_PUBLISH_SECRET": None,
    "MLSOCKETS_PUBLISH_WINDOW": 300.0,
    "MLSOCKETS_PUBLISH_MAX_BODY": 1 << 20,
    "MLSOCKETS_METRICS_PATH": None,
    "MLSOCKETS_HEARTBEAT": 20.0,
    "MLSOCKETS_RATE": 100.0,
    "MLSOCKETS_BURST": 200,
    "MLSOCKETS_RATE_STRIKES": 20,
    "MLSOCKETS_MAX_BAD_ENVELOPES": 10,
    "MLSOCKETS_BAD_WINDOW": 60.0,
    "MLSOCKETS_MAX_CONNECTIONS_PER_USER": None,
    "MLSOCKETS_MAX_CHANNELS_PER_CONNECTION": 256,
    "MLSOCKETS_PRESENCE_GRACE": 0.0,
}


def new_app(name: str = "etiquette", **config: Any) -> Flask:
    app = Flask(name)
    app.config.update(SECRET_KEY=SECRET_KEY, **config)
    return app


def test_init_app_sets_every_documented_default_with_setdefault() -> None:
    app = new_app(MLSOCKETS_RATE=5.0)
    MLSockets().init_app(app)
    for key, value in DOCUMENTED_DEFAULTS.items():
        assert app.config[key] == (5.0 if key == "MLSOCKETS_RATE" else value), key
    assert {f"MLSOCKETS_{name.upper()}" for name in option_defaults()} == set(DOCUMENTED_DEFAULTS)
    state = app.extensions["mlsockets"]
    assert isinstance(state, AppState)
    assert state.settings.hub.rate == 5.0


def test_options_are_defaults_and_the_app_config_wins() -> None:
    ext = MLSockets(path="/socket", allow_anonymous=True)
    first = new_app("first")
    second = new_app("second", MLSOCKETS_PATH="/other")
    ext.init_app(first)
    ext.init_app(second, heartbeat=None)
    assert first.config["MLSOCKETS_PATH"] == "/socket"
    assert first.config["MLSOCKETS_ALLOW_ANONYMOUS"] is True
    assert second.config["MLSOCKETS_PATH"] == "/other"
    assert second.config["MLSOCKETS_HEARTBEAT"] is None
    assert first.config["MLSOCKETS_HEARTBEAT"] == 20.0
    with pytest.raises(TypeError, match="nope"):
        MLSockets(nope=1)


def test_the_extension_never_stores_an_app() -> None:
    ext = MLSockets()
    app = new_app()
    ext.init_app(app)
    assert not any(isinstance(value, Flask) for value in vars(ext).values())
    assert ext.state(app).extension is ext


def test_init_app_twice_and_late_routes_are_errors() -> None:
    ext = MLSockets()
    app = new_app()
    ext.init_app(app)
    with pytest.raises(ConfigurationError, match="already initialised"):
        ext.init_app(app)
    with pytest.raises(ConfigurationError, match="before init_app"):
        ext.add_route("/late")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("MLSOCKETS_PATH", "ws", "must start with '/'"),
        ("MLSOCKETS_RATE", 0, "MLSOCKETS_RATE"),
        ("MLSOCKETS_BURST", 0, "MLSOCKETS_BURST"),
        ("MLSOCKETS_HEARTBEAT", -1, "MLSOCKETS_HEARTBEAT"),
        ("MLSOCKETS_FORMATS", ["xml"], "unknown format 'xml'"),
        ("MLSOCKETS_ALLOWED_ORIGINS", ["example.com/path"], "invalid allowed origin"),
        ("MLSOCKETS_ALLOW_ANONYMOUS", "yes", "MLSOCKETS_ALLOW_ANONYMOUS"),
        ("MLSOCKETS_HANDSHAKE_RATE", -1.0, "MLSOCKETS_HANDSHAKE_RATE"),
        ("MLSOCKETS_REDIS_URL", 42, "MLSOCKETS_REDIS_URL"),
    ],
)
def test_invalid_config_fails_at_init_app(key: str, value: object, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        MLSockets().init_app(new_app(**{key: value}))


def test_handlers_registered_after_init_app_serve_every_app() -> None:
    ext = MLSockets(allow_anonymous=True)
    first, second = new_app("first"), new_app("second")
    ext.init_app(first)
    ext.init_app(second)

    @ext.on("late")
    def late(conn: Any, data: Any) -> str:
        from flask import current_app

        return current_app.name

    assert ext.test_client(first).emit("late") == "first"
    assert ext.test_client(second).emit("late") == "second"
    with pytest.raises(InvalidState):  # the apps' routers take no registrations themselves
        ext.hub(first).router.add("x", late)


def test_the_hub_is_per_app_and_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    app = create_app()
    state: AppState = app.extensions["mlsockets"]
    hub = state.hub()
    assert state.hub() is hub
    monkeypatch.setattr(os, "getpid", lambda: -1)  # as in a forked gunicorn worker
    forked = state.hub()
    assert forked is not hub
    assert state.hub() is forked


def test_formats_restrict_the_negotiated_subprotocols() -> None:
    app = create_app(MLSOCKETS_FORMATS=["msgpack"], MLSOCKETS_ALLOW_ANONYMOUS=True)
    assert sockets.test_client(app, headers={}, format="msgpack").emit("echo", 1) == 1
    with pytest.raises(InvalidHandshake) as info:
        sockets.test_client(app, headers={}, format="json")
    assert info.value.status == 400
    # gevent-websocket's subprotocol hook names the first format, on the handshake paths only.
    assert app.app_protocol("/ws") == "mlsockets.msgpack.v1"  # type: ignore[attr-defined]
    assert app.app_protocol("/elsewhere") is None  # type: ignore[attr-defined]


class RelayingBroadcaster(LocalBroadcaster):
    urls: list[str] = []
    published: list[tuple[Target, Mapping[str, object]]] = []

    @classmethod
    def from_url(cls, url: str) -> RelayingBroadcaster:
        cls.urls.append(url)
        return cls()

    def publish(
        self, target: Target, envelope: Mapping[str, object], skip: ConnectionId | None
    ) -> int:
        self.published.append((target, envelope))
        return super().publish(target, envelope, skip)

    def attach(self, deliver: Deliver) -> None:
        super().attach(deliver)


class RecordingEmitter:
    urls: list[str] = []
    emitted: list[tuple[str, object, object, object]] = []

    @classmethod
    def from_url(cls, url: str) -> RecordingEmitter:
        cls.urls.append(url)
        return cls()

    def emit(self, event: str, data: object = None, *, to: Any = None, skip: Any = None) -> int:
        self.emitted.append((event, data, to, skip))
        return 3


def fake_module(monkeypatch: pytest.MonkeyPatch, name: str, **attributes: Any) -> None:
    module = types.ModuleType(name)
    for attribute, value in attributes.items():
        setattr(module, attribute, value)
    monkeypatch.setitem(sys.modules, name, module)


def fake_cluster_layer(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_module(monkeypatch, "mlsockets.broadcast.redis", RedisBroadcaster=RelayingBroadcaster)
    fake_module(monkeypatch, "mlsockets.broadcast.emitter", Emitter=RecordingEmitter)


def test_redis_url_uses_the_cluster_layer_broadcaster(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_cluster_layer(monkeypatch)
    app = create_app(MLSOCKETS_REDIS_URL="redis://127.0.0.1:1/0")
    ws = sockets.test_client(app, user="1")  # this process now has a hub
    assert RelayingBroadcaster.urls == ["redis://127.0.0.1:1/0"]
    with app.app_context():
        assert flask_mlsockets.broadcaster.emit("notice", "via redis") == 1
    assert RelayingBroadcaster.published[-1][1]["data"] == "via redis"
    assert ws.receive().data == "via redis"
    assert RecordingEmitter.emitted == []


def test_redis_url_without_a_hub_publishes_through_an_emitter(
    monkeypatch: pytest.MonkeyPatch, client: Any
) -> None:
    fake_cluster_layer(monkeypatch)
    RecordingEmitter.emitted.clear()
    app = create_app(MLSOCKETS_REDIS_URL="redis://127.0.0.1:1/0")
    with app.app_context():  # a CLI command or a job: no relay started for it
        assert flask_mlsockets.broadcaster.emit("notice", "from a job", to="room:a") == 0
    view = app.test_client().post(
        "/notify", json={"text": "from a view", "to": "room:a"}, headers={"X-Socket-ID": "c1"}
    )
    assert view.json == {"delivered": 0}
    assert RecordingEmitter.emitted == [
        ("notice", "from a job", "room:a", None),
        ("notice", "from a view", "room:a", "c1"),
    ]
    assert RecordingEmitter.urls[-1] == "redis://127.0.0.1:1/0"
    assert app.extensions["mlsockets"]._hub is None


def test_redis_url_without_the_cluster_layer_names_the_missing_piece(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "mlsockets.broadcast.redis", None)
    with pytest.raises(ConfigurationError, match=r"mlsockets\.broadcast\.redis cannot be imported"):
        MLSockets().init_app(new_app(MLSOCKETS_REDIS_URL="redis://localhost"))
    fake_module(monkeypatch, "mlsockets.broadcast.redis")
    with pytest.raises(ConfigurationError, match=r"RedisBroadcaster\.from_url"):
        MLSockets().init_app(new_app(MLSOCKETS_REDIS_URL="redis://localhost"))
    fake_module(monkeypatch, "mlsockets.broadcast.redis", RedisBroadcaster=RelayingBroadcaster)
    fake_module(monkeypatch, "mlsockets.broadcast.emitter")
    with pytest.raises(ConfigurationError, match=r"Emitter\.from_url"):
        MLSockets().init_app(new_app(MLSOCKETS_REDIS_URL="redis://localhost"))


def test_the_browser_client_is_served_under_the_path(monkeypatch: pytest.MonkeyPatch) -> None:
    from flask_mlsockets import handshake

    client = create_app().test_client()
    monkeypatch.setattr(handshake, "client_script", lambda: b"export class Socket {}\n")
    response = client.get("/ws/mlsockets.js")
    assert response.status_code == 200
    assert response.mimetype == "text/javascript"
    assert response.data == b"export class Socket {}\n"
    again = client.get("/ws/mlsockets.js", headers={"If-None-Match": response.headers["ETag"]})
    assert again.status_code == 304
    monkeypatch.setattr(handshake, "client_script", lambda: None)
    assert client.get("/ws/mlsockets.js").status_code == 404
    quiet = create_app(MLSOCKETS_SERVE_CLIENT=False).test_client()
    assert quiet.get("/ws/mlsockets.js").status_code == 404


def test_importing_the_package_loads_no_flask_until_used() -> None:
    import subprocess

    code = (
        "import sys, flask_mlsockets\n"
        "assert not [m for m in sys.modules if m.split('.')[0] in ('flask', 'gevent')]\n"
        "flask_mlsockets.MLSockets\n"
        "assert 'flask' in sys.modules and 'gevent' not in sys.modules\n"
        "from flask_mlsockets import broadcaster\n"
        "assert type(broadcaster).__name__ == 'Broadcaster'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)
