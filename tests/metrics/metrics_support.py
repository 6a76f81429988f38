"""Helpers of tests/metrics (imported by name, like tests/cluster's cluster_support: a test
module's ``from conftest import`` would find whichever conftest is first on sys.path)."""

from __future__ import annotations

import sys
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from mlsockets.client import Client
from mlsockets.hub import Hub
from mlsockets.transport.gevent import Server

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "tests" / "cluster"
if str(CLUSTER) not in sys.path:
    sys.path.append(str(CLUSTER))  # cluster_support: redis-server and subprocess helpers

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
