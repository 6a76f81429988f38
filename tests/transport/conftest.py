"""Fixtures for tests/transport: servers on port 0 in greenlets of the test process, clients
with short timeouts, and subprocesses that are always reaped.

The suite runs monkey-patched (``python -m gevent.monkey --module pytest``), so a blocking
client such as ``websockets.sync.client.connect`` yields to the server under test.
"""

from __future__ import annotations

import faulthandler
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from processes import Processes

from mlsockets.transport.gevent import Server, ServerOptions

#: Short deadlines, so heartbeats, close timeouts and slowloris defences act within a test.
FAST = {
    "ping_interval": None,
    "close_timeout": 0.5,
    "handshake_timeout": 0.5,
    "shutdown_grace": 1.0,
}

StartServer = Callable[..., Server]


@pytest.fixture
def serve() -> Iterator[StartServer]:
    """``serve(app, **options)`` starts a Server on 127.0.0.1:0 (reaper ticking every 50 ms),
    speaking TLS with ``certfile=`` and ``keyfile=``; every server started is shut down after
    the test."""
    servers: list[Server] = []

    def start(
        app: Any,
        binds: list[Any] | None = None,
        *,
        certfile: Path | None = None,
        keyfile: Path | None = None,
        **changes: Any,
    ) -> Server:
        server = Server(
            app,
            binds or ["127.0.0.1:0"],
            options=ServerOptions(**{**FAST, **changes}),
            certfile=certfile and str(certfile),
            keyfile=keyfile and str(keyfile),
        )
        server.reaper.tick = 0.05
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown(grace=1.0)


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and 127.0.0.1, and its key (PEM files)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is not installed")
    where = tmp_path_factory.mktemp("tls")
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def no_hang() -> Iterator[None]:
    """End the whole run, dumping every thread's stack, if this test is not done in 20 s.

    A greenlet that loops without yielding starves the hub: no ``gevent.Timeout`` fires, and
    pytest-timeout's signal lands in the looping greenlet, where the server swallows it.
    faulthandler's watchdog is an OS thread that gevent cannot starve.
    """
    faulthandler.dump_traceback_later(20, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(tmp_path)
    yield procs
    procs.close()
