"""The Flask extension and the settings model: file and environment below ``MLSockets(**options)``
below ``app.config``; reloads followed only for the keys the app left to them."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

from flask_mlsockets import MLSockets
from mlsockets import config
from mlsockets.auth import HandshakeRequest
from mlsockets.exceptions import ConfigurationError, Forbidden, TooManyRequests


@pytest.fixture(autouse=True)
def defaults_after() -> Iterator[None]:
    """Reloads reach every live app of this process (other tests' module-level apps too):
    put the defaults back, which is what those apps follow in a test run."""
    try:
        yield
    finally:
        config.notify_reload(config.load(environ={}))


def new_app(sockets: MLSockets, **app_config: object) -> Flask:
    app = Flask(__name__)
    app.config.update(app_config)
    sockets.init_app(app)
    return app


def handshake(origin: str, remote: str = "192.0.2.1") -> HandshakeRequest:
    return HandshakeRequest.from_environ(
        {"PATH_INFO": "/ws", "HTTP_HOST": "app.test", "HTTP_ORIGIN": origin, "REMOTE_ADDR": remote}
    )


def admit(app: Flask, origin: str, remote: str = "192.0.2.1") -> None:
    """Run the endpoint's admission checks (origin, rate, anonymous authentication)."""
    with app.test_request_context("/ws"):
        app.extensions["mlsockets"].admissions["mlsockets"].admit(handshake(origin, remote))


def test_environment_then_options_then_app_config(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cfg = tmp_path / "mlsockets.toml"
    cfg.write_text('allowed_origins = ["https://file.example"]\npublish_window = 60\n')
    monkeypatch.setenv("MLSOCKETS_CONFIG", str(cfg))
    monkeypatch.setenv("MLSOCKETS_HANDSHAKE_BURST", "7")
    app = new_app(MLSockets(allow_anonymous=True))
    assert app.config["MLSOCKETS_ALLOWED_ORIGINS"] == ("https://file.example",)
    assert app.config["MLSOCKETS_PUBLISH_WINDOW"] == 60.0
    assert app.config["MLSOCKETS_HANDSHAKE_BURST"] == 7
    by_option = new_app(MLSockets(allow_anonymous=True, handshake_burst=3))
    assert by_option.config["MLSOCKETS_HANDSHAKE_BURST"] == 3
    by_config = new_app(MLSockets(handshake_burst=3), MLSOCKETS_HANDSHAKE_BURST=2)
    assert by_config.config["MLSOCKETS_HANDSHAKE_BURST"] == 2


def test_a_bad_environment_value_stops_init_app(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLSOCKETS_HANDSHAKE_RATE", "fast")
    with pytest.raises(ConfigurationError, match="MLSOCKETS_HANDSHAKE_RATE"):
        new_app(MLSockets())
    monkeypatch.delenv("MLSOCKETS_HANDSHAKE_RATE")
    monkeypatch.setenv("MLSOCKETS_ALOWED_ORIGINS", "https://a.example")
    with pytest.raises(ConfigurationError, match="did you mean MLSOCKETS_ALLOWED_ORIGINS"):
        new_app(MLSockets())


def test_reloads_apply_to_the_keys_the_app_left_to_the_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MLSOCKETS_ALLOWED_ORIGINS", "https://a.example")
    follows = new_app(MLSockets(allow_anonymous=True))
    pinned = new_app(
        MLSockets(allow_anonymous=True), MLSOCKETS_ALLOWED_ORIGINS=["https://a.example"]
    )
    for app in (follows, pinned):
        admit(app, "https://a.example")
        with pytest.raises(Forbidden):
            admit(app, "https://b.example")

    reloaded = config.load(
        environ={
            "MLSOCKETS_ALLOWED_ORIGINS": "https://b.example",
            "MLSOCKETS_HANDSHAKE_RATE": "1",
            "MLSOCKETS_HANDSHAKE_BURST": "1",
        }
    )
    assert config.notify_reload(reloaded) >= 2
    admit(follows, "https://b.example", remote="198.51.100.1")  # the new list, the new burst
    with pytest.raises(TooManyRequests):
        admit(follows, "https://b.example", remote="198.51.100.1")
    with pytest.raises(Forbidden):
        admit(follows, "https://a.example")
    assert follows.extensions["mlsockets"].settings.allowed_origins == ("https://b.example",)
    admit(pinned, "https://a.example")  # the app's own config is not overridden by a reload
    with pytest.raises(Forbidden):
        admit(pinned, "https://b.example")

    rate_off = config.load(environ={"MLSOCKETS_HANDSHAKE_RATE": "0"})
    config.notify_reload(rate_off)
    for _ in range(5):  # no limiter any more; the origin list went back to same origin only
        admit(follows, "http://app.test", remote="198.51.100.1")


def test_the_reload_hook_does_not_keep_an_app_alive() -> None:
    app = new_app(MLSockets(allow_anonymous=True))
    state = weakref.ref(app.extensions["mlsockets"])
    config.notify_reload(config.load(environ={}))
    del app
    gc.collect()
    assert state() is None
    config.notify_reload(config.load(environ={}))  # its dead entry is dropped quietly
