"""Fixtures for tests/e2e: a hub behind ``SocketApp`` on a real gevent server (port 0, in a
greenlet of the test process), and envelope clients that are closed after each test.

The suite runs monkey-patched (``python -m gevent.monkey --module pytest``), so the blocking
:class:`mlsockets.client.Client` yields to the server under test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from mlsockets.admission import Admission
from mlsockets.client import Client
from mlsockets.hub import Hub
from mlsockets.transport.gevent import Server, ServerOptions
from mlsockets.wsgi import SocketApp

#: Short deadlines, so closing handshakes and shutdowns finish within a test.
FAST = {
    "ping_interval": None,
    "close_timeout": 0.5,
    "handshake_timeout": 2.0,
    "shutdown_grace": 1.0,
}


@dataclass
class Running:
    """A hub served on a real socket."""

    hub: Hub
    server: Server
    url: str  # ws://127.0.0.1:<port>/ws
    http: tuple[str, int]  # (host, port), for plain HTTP requests
    clients: list[Client] = field(default_factory=list)

    def client(self, **options: Any) -> Client:
        """An opened envelope client (``Client.connect``), closed after the test."""
        options.setdefault("timeout", 5.0)
        client = Client.connect(self.url, **options)
        self.clients.append(client)
        return client


StartHub = Callable[..., Running]


@pytest.fixture
def serve_hub() -> Iterator[StartHub]:
    """``serve_hub(hub, admission=None, path="/ws", app=None, **server_options)`` serves the
    hub; every client opened through :meth:`Running.client` is closed, then every server is
    shut down (``grace=1``), after the test."""
    running: list[Running] = []

    def start(
        hub: Hub,
        *,
        admission: Admission | None = None,
        path: str = "/ws",
        app: Any = None,
        **changes: Any,
    ) -> Running:
        wsgi = SocketApp(hub, path=path, admission=admission, app=app)
        server = Server(wsgi, ["127.0.0.1:0"], options=ServerOptions(**{**FAST, **changes}))
        server.reaper.tick = 0.05
        server.start()
        host, port = server.addresses[0]
        served = Running(hub, server, f"ws://{host}:{port}{path}", (host, port))
        running.append(served)
        return served

    yield start
    for served in running:
        for client in served.clients:
            client.close()
        served.server.shutdown(grace=1)
