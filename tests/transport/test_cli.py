"""``mlsockets serve`` as a real subprocess: TCP, Unix socket and TLS listeners, graceful
shutdown on SIGTERM, and clear exit status 2 for start-up errors."""

from __future__ import annotations

import re
import signal
import ssl
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import gevent
import pytest
from processes import ROOT, Processes
from websockets.exceptions import ConnectionClosed as ClientClosed
from websockets.sync.client import unix_connect
from wsclients import ws_connect

SERVING = re.compile(r"^mlsockets \S+ serving (\S+) on (\S+)$")


def serving_addresses(proc: Any, count: int = 1) -> list[str]:
    """Read the "serving ... on ADDRESS" lines the CLI prints once it listens."""
    addresses = []
    with gevent.Timeout(20):
        while len(addresses) < count:
            line = proc.stdout.readline()
            assert line, f"the server exited: {Processes.stderr(proc)}"
            match = SERVING.match(line.strip())
            if match:
                addresses.append(match.group(2))
    return addresses


def expect_going_away(client: Any) -> None:
    with pytest.raises(ClientClosed) as info:
        client.recv(timeout=10)
    assert info.value.rcvd is not None
    assert info.value.rcvd.code == 1001


def test_sigterm_closes_every_client_with_1001_and_exits_0(processes: Processes) -> None:
    proc = processes.cli("serve", "examples.echo:app", "--bind", "127.0.0.1:0")
    (address,) = serving_addresses(proc)
    assert re.fullmatch(r"127\.0\.0\.1:\d+", address) and not address.endswith(":0")
    with ExitStack() as stack:
        clients = [stack.enter_context(ws_connect(f"ws://{address}/ws")) for _ in range(3)]
        for i, client in enumerate(clients):
            client.send(f"client {i}")
            assert client.recv(timeout=10) == f"client {i}"
        proc.send_signal(signal.SIGTERM)
        for client in clients:
            expect_going_away(client)
    assert proc.wait(timeout=20) == 0
    assert "Traceback" not in Processes.stderr(proc)


def test_unix_socket_listener(processes: Processes, tmp_path: Path) -> None:
    path = tmp_path / "ws.sock"
    proc = processes.cli(
        "serve", "examples.echo:app", "--bind", f"unix:{path}", "--bind", "127.0.0.1:0"
    )
    unix, tcp = serving_addresses(proc, 2)
    assert unix == str(path)
    with unix_connect(str(path), "ws://localhost/ws", open_timeout=10, proxy=None) as client:
        client.send("over a unix socket")
        assert client.recv(timeout=10) == "over a unix socket"
        with ws_connect(f"ws://{tcp}/ws") as other:  # the TCP listener serves too
            other.send("over tcp")
            assert other.recv(timeout=10) == "over tcp"
        proc.send_signal(signal.SIGTERM)
        expect_going_away(client)
    assert proc.wait(timeout=20) == 0
    assert not path.exists()  # the socket file is removed on shutdown


def test_tls_listener(processes: Processes, certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    proc = processes.cli(
        "serve",
        "examples.echo:app",
        "--bind",
        "127.0.0.1:0",
        "--certfile",
        str(cert),
        "--keyfile",
        str(key),
    )
    (address,) = serving_addresses(proc)
    context = ssl.create_default_context(cafile=str(cert))
    with ws_connect(f"wss://{address}/ws", ssl=context) as client:
        client.send("secret " * 1000)
        assert client.recv(timeout=10) == "secret " * 1000
        proc.send_signal(signal.SIGTERM)
        expect_going_away(client)
    assert proc.wait(timeout=20) == 0
    # A client that does not trust the certificate is refused at the TLS handshake.
    proc = processes.cli(
        "serve", "examples.echo:app", "--bind", "127.0.0.1:0", "--certfile", str(cert),
        "--keyfile", str(key),
    )  # fmt: skip
    (address,) = serving_addresses(proc)
    with pytest.raises(ssl.SSLCertVerificationError):
        ws_connect(f"wss://{address}/ws", ssl=ssl.create_default_context())


class TestStartupErrors:
    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "mlsockets", "serve", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def test_app_that_cannot_be_imported(self) -> None:
        result = self.run("nonexistent:app", "--bind", "127.0.0.1:0")
        assert result.returncode == 2
        assert "cannot import 'nonexistent'" in result.stderr
        assert "Traceback" not in result.stderr
        assert result.stdout == ""

    def test_missing_attribute(self) -> None:
        result = self.run("examples.echo:nothing", "--bind", "127.0.0.1:0")
        assert result.returncode == 2
        assert "has no attribute 'nothing'" in result.stderr

    @pytest.mark.parametrize(
        ("bind", "message"),
        [
            ("localhost", "expected HOST:PORT or unix:PATH"),
            ("127.0.0.1:http", "is not a number"),
            ("127.0.0.1:70000", "port must be 0-65535"),
            ("unix:", "empty Unix socket path"),
            ("203.0.113.1:0", "cannot listen on 203.0.113.1:0"),
        ],
    )
    def test_bad_bind(self, bind: str, message: str) -> None:
        result = self.run("examples.echo:app", "--bind", bind)
        assert result.returncode == 2
        assert message in result.stderr
        assert "Traceback" not in result.stderr

    def test_bad_certificate(self, tmp_path: Path) -> None:
        missing = str(tmp_path / "missing.pem")
        result = self.run("examples.echo:app", "--bind", "127.0.0.1:0", "--certfile", missing)
        assert result.returncode == 2
        assert "cannot load TLS certificate" in result.stderr
