"""Fixtures for tests/flask: the app, a Flask test client, real servers on port 0 in greenlets
of the test process (the suite runs monkey-patched), and WebSocket clients that are always
closed."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import flaskapps
import pytest
from flask import Flask
from flask.testing import FlaskClient

from mlsockets.client import Client
from mlsockets.transport.gevent import Server, ServerOptions

FAST = {"ping_interval": None, "close_timeout": 0.5, "handshake_timeout": 1.0}


@pytest.fixture
def app() -> Flask:
    return flaskapps.create_app()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def serve() -> Iterator[Callable[[Flask], str]]:
    """``serve(app)`` starts a real mlsockets Server on 127.0.0.1:0; returns ``host:port``."""
    servers: list[Server] = []

    def start(app: Flask) -> str:
        server = Server(app, ["127.0.0.1:0"], options=ServerOptions(**FAST))
        server.start()
        servers.append(server)
        host, port = server.addresses[0]
        return f"{host}:{port}"

    yield start
    for server in servers:
        server.shutdown(grace=1.0)


@pytest.fixture
def connect() -> Iterator[Callable[..., Client]]:
    """``connect(url, **options)``: an open mlsockets Client, closed after the test."""
    clients: list[Client] = []

    def open_client(url: str, **options: Any) -> Client:
        options.setdefault("timeout", 5.0)
        client = Client.connect(url, **options)
        clients.append(client)
        return client

    yield open_client
    for client in clients:
        client.close()
