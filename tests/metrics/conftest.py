"""Fixtures for tests/metrics: a hub on a real server with its own metrics listener, and the
Redis fixtures of tests/cluster (reused, not copied). Helpers are in metrics_support.

Metrics are per process and the test process serves many tests, so every assertion is on
the difference between two scrapes.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from metrics_support import CLUSTER, FAST, Served

from mlsockets.broadcast.base import Broadcaster
from mlsockets.events import EventRouter
from mlsockets.hub import Hub, HubOptions
from mlsockets.transport.gevent import Server, ServerOptions
from mlsockets.wsgi import SocketApp

# tests/cluster's fixtures (redis-server on a free port, reaped subprocesses), loaded from
# its conftest so that both suites start Redis the same way (and fail alike in CI).
_spec = importlib.util.spec_from_file_location("_cluster_conftest", CLUSTER / "conftest.py")
assert _spec is not None and _spec.loader is not None
_cluster = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_cluster)
private_redis = _cluster.private_redis
processes = _cluster.processes


@pytest.fixture
def serve() -> Iterator[Callable[..., Served]]:
    """``serve(router, hub_options=None, broadcaster=None, **server_options)``: a hub behind
    SocketApp on port 0, its metrics on another port 0 (``Server(metrics_bind=...)``); all
    closed after the test (the hub too, and with it the broadcaster)."""
    running: list[Served] = []

    def start(
        router: EventRouter | None = None,
        hub_options: HubOptions | None = None,
        broadcaster: Broadcaster | None = None,
        **changes: Any,
    ) -> Served:
        hub = Hub(router, options=hub_options, broadcaster=broadcaster)
        server = Server(
            SocketApp(hub),
            ["127.0.0.1:0"],
            options=ServerOptions(**{**FAST, **changes}),
            metrics_bind="127.0.0.1:0",
        )
        server.start()
        host, port = server.addresses[0]
        mhost, mport = server.metrics_address
        served = Served(hub, server, f"ws://{host}:{port}/ws", f"http://{mhost}:{mport}/metrics")
        running.append(served)
        return served

    yield start
    for served in running:
        for client in served.clients:
            client.close()
        served.server.shutdown(grace=1)
        served.hub.close()
