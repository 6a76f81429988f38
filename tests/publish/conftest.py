"""Fixtures for tests/publish: real servers on port 0 (and on a Unix socket) in greenlets of
the test process (the suite runs monkey-patched), WebSocket clients that are always closed,
an HTTP helper, and the Redis and subprocess fixtures of tests/cluster/conftest.py, reused
as they are."""

from __future__ import annotations

import importlib.util
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from publish_support import Served

from mlsockets.client import Client
from mlsockets.transport.gevent import Server, ServerOptions

CLUSTER = Path(__file__).resolve().parents[1] / "cluster"
if str(CLUSTER) not in sys.path:
    sys.path.insert(0, str(CLUSTER))  # cluster_support, imported by the cluster conftest


def _cluster_fixtures() -> Any:
    spec = importlib.util.spec_from_file_location(
        "publish_cluster_conftest", CLUSTER / "conftest.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_cluster = _cluster_fixtures()
private_redis = _cluster.private_redis
processes = _cluster.processes

FAST = ServerOptions(ping_interval=None, close_timeout=0.5, handshake_timeout=2.0)


@pytest.fixture
def serve() -> Iterator[Callable[..., Served]]:
    """``serve(app, unix=False)``: a real mlsockets Server on 127.0.0.1:0 (and a Unix socket)."""
    servers: list[Server] = []
    dirs: list[str] = []

    def start(app: Any, *, unix: bool = False) -> Served:
        binds = ["127.0.0.1:0"]
        unix_path = None
        if unix:
            where = tempfile.mkdtemp(prefix="mlsp-", dir="/tmp")  # short: sun_path is 108 bytes
            dirs.append(where)
            unix_path = f"{where}/app.sock"
            binds.append(f"unix:{unix_path}")
        server = Server(app, binds, options=FAST)
        server.start()
        servers.append(server)
        return Served(server, server.addresses[0][1], unix_path)

    yield start
    for server in servers:
        server.shutdown(grace=1.0)
    for where in dirs:
        shutil.rmtree(where, ignore_errors=True)


@pytest.fixture
def connect() -> Iterator[Callable[..., Client]]:
    """``connect(url, **options)``: an open mlsockets Client, closed after the test."""
    clients: list[Client] = []

    def open_client(url: str, **options: Any) -> Client:
        options.setdefault("timeout", 10.0)
        client = Client.connect(url, **options)
        clients.append(client)
        return client

    yield open_client
    for client in clients:
        client.close()
