"""Fixtures for tests/metrics: scrapes over real HTTP, a hub on a real server with its own
metrics listener, and the Redis fixtures of tests/cluster (reused, not copied).

Metrics are per process and the test process serves many tests, so every assertion is on
the difference between two scrapes.
"""

from __future__ import annotations

import importlib.util
import sys
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mlsockets.broadcast.base import Broadcaster
from mlsockets.client import Client
from mlsockets.events import EventRouter
from mlsockets.hub import Hub, HubOptions
from mlsockets.transport.gevent import Server, ServerOptions
from mlsockets.wsgi import SocketApp

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "tests" / "cluster"

# tests/cluster's fixtures (redis-server on a free port, reaped subprocesses), loaded from
# its conftest so that both suites start Redis the same way (and fail alike in CI).
sys.path.insert(0, str(CLUSTER))
_spec = importlib.util.spec_from_file_location("_cluster_conftest", CLUSTER / "conftest.py")
assert _spec is not None and _spec.loader is not None
_cluster = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_cluster)
private_redis = _cluster.private_redis
processes = _cluster.processes

FAST = {"ping_interval": None, "close_timeout": 0.5, "handshake_timeout": 2.0}


class Scrape:
    """One scrape: ``scrape.value("mlsockets_handshakes_total", status="101")`` (0 if absent)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                self.samples[(sample.name, frozenset(sample.labels.items()))] = sample.value

    def value(self, name: str, **labels: str) -> float:
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def __sub__(self, before: Scrape) -> Callable[..., float]:
        """``(after - before)(name, **labels)``: how much a sample grew."""
        return lambda name, **labels: self.value(name, **labels) - before.value(name, **labels)


def scrape(url: str) -> Scrape:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        return Scrape(response.read().decode())


@dataclass
class Served:
    hub: Hub
    server: Server
    url: str  # ws://.../ws
    metrics_url: str  # http://.../metrics
    clients: list[Client] = field(default_factory=list)

    def client(self, **options: Any) -> Client:
        options.setdefault("timeout", 10.0)
        client = Client.connect(self.url, **options)
        self.clients.append(client)
        return client

    def scrape(self) -> Scrape:
        return scrape(self.metrics_url)


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
