"""The Flask extension serves the metrics at ``MLSOCKETS_METRICS_PATH``: a real server, a real
client, a scrape through the app; a bad path stops ``init_app`` with the setting's name."""

from __future__ import annotations

import urllib.request

import pytest
from flask import Flask
from metrics_support import Scrape

from flask_mlsockets import MLSockets
from mlsockets.client import Client
from mlsockets.exceptions import ConfigurationError
from mlsockets.transport.gevent import Server


def create_app(**config: object) -> tuple[Flask, MLSockets]:
    app = Flask(__name__)
    app.config.update(MLSOCKETS_ALLOW_ANONYMOUS=True, **config)
    sockets = MLSockets()

    @sockets.on("double")
    def double(conn: object, data: int) -> int:
        return data * 2

    sockets.init_app(app)
    return app, sockets


def test_the_app_serves_metrics_at_its_path() -> None:
    app, _ = create_app(MLSOCKETS_METRICS_PATH="/internal/metrics")
    server = Server(app, ["127.0.0.1:0"])
    server.start()
    try:
        host, port = server.addresses[0]

        def scrape() -> Scrape:
            url = f"http://{host}:{port}/internal/metrics"
            with urllib.request.urlopen(url, timeout=10) as response:
                assert response.headers["Content-Type"].startswith("text/plain")
                return Scrape(response.read().decode())

        before = scrape()
        with Client.connect(f"ws://{host}:{port}/ws", timeout=10) as client:
            assert client.emit("double", 21, ack=True) == 42
        grew = scrape() - before
        assert grew("mlsockets_handshakes_total", status="101") == 1
        assert grew("mlsockets_event_handler_seconds_count", event="double") == 1
        assert grew("mlsockets_messages_received_total") == 1
    finally:
        server.shutdown(grace=1)


def test_no_metrics_route_unless_configured() -> None:
    app, _ = create_app()
    assert app.test_client().get("/metrics").status_code == 404


def test_a_relative_metrics_path_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="MLSOCKETS_METRICS_PATH"):
        create_app(MLSOCKETS_METRICS_PATH="metrics")
