"""The same Flask app (``flaskapps:create_app()``) served three ways, each a real subprocess:
``mlsockets serve``, ``gunicorn -k mlsockets.gunicorn.GeventWebSocketWorker`` and
``gunicorn -k geventwebsocket.gunicorn.workers.GeventWebSocketWorker``. A session cookie from
a real login decides the handshake; a view's broadcast skips the sender named by X-Socket-ID."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlsockets.client import Client
from mlsockets.exceptions import ConnectionClosedError, InvalidHandshake

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
GUNICORN = Path(sys.executable).with_name("gunicorn")
APP = "flaskapps:create_app()"


def _no_control_socket() -> list[str]:
    """gunicorn >= 27 opens a control socket in ~/.gunicorn by default; tests must not share one."""
    try:
        from gunicorn import config
    except ImportError:
        return []
    return ["--no-control-socket"] if hasattr(config, "ControlSocketDisable") else []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Served:
    """A server subprocess on ``port``; killed and reaped by the fixture."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = free_port()

    def start(self, *command: str) -> Served:
        self.log = self.tmp_path / "server.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                command,
                cwd=HERE,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1", "MLSOCKETS_CLOSE_TIMEOUT": "1"},
            )
        deadline = time.monotonic() + 15
        while True:
            assert self.proc.poll() is None, self.output()
            try:
                with urllib.request.urlopen(f"{self.http}/ping", timeout=1) as response:
                    if response.read() == b"pong":
                        return self
            except OSError:
                pass
            assert time.monotonic() < deadline, self.output()
            time.sleep(0.05)

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def login(self, user_id: str) -> str:
        request = urllib.request.Request(f"{self.http}/login/{user_id}", method="POST")
        with urllib.request.urlopen(request, timeout=5) as response:
            return str(response.headers["Set-Cookie"]).split(";")[0]

    def notify(self, text: str, to: str, sender: str) -> dict[str, int]:
        request = urllib.request.Request(
            f"{self.http}/notify",
            data=json.dumps({"text": text, "to": to}).encode(),
            headers={"Content-Type": "application/json", "X-Socket-ID": sender},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            result: dict[str, int] = json.loads(response.read())
            return result

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    server = Served(tmp_path)
    yield server
    server.stop()


def gunicorn(served: Served, worker: str) -> Served:
    if not GUNICORN.exists():
        pytest.skip("gunicorn is not installed")
    return served.start(
        str(GUNICORN),
        "-k",
        worker,
        "-w",
        "1",
        "--bind",
        f"127.0.0.1:{served.port}",
        "--graceful-timeout",
        "2",
        *_no_control_socket(),
        APP,
    )


def check_chat(served: Served) -> None:
    """Logged-in users connect, handlers run in the app, a view's broadcast skips the sender."""
    alice = Client.connect(served.ws, headers={"Cookie": served.login("1")}, timeout=5)
    bob = Client.connect(served.ws, headers={"Cookie": served.login("2")}, timeout=5)
    try:
        assert (alice.user_id, bob.user_id) == ("1", "2")
        who = alice.emit("whoami", ack=True, timeout=5)
        assert (who["current_user"], who["info"], who["app"]) == (
            "1",
            {"name": "alice"},
            "flaskapps",
        )
        for client in (alice, bob):
            assert client.emit("room.join", "lobby", ack=True, timeout=5) == "room:lobby"
        assert served.notify("hello", "room:lobby", sender=alice.connection_id or "") == {
            "delivered": 1
        }
        event = bob.receive(timeout=5)
        assert (event.event, event.data, event.channel) == ("notice", "hello", "room:lobby")
        with pytest.raises(TimeoutError):
            alice.receive(timeout=0.2)
    finally:
        alice.close()
        bob.close()


def test_mlsockets_serve(served: Served) -> None:
    served.start(
        sys.executable, "-m", "mlsockets", "serve", APP, "--bind", f"127.0.0.1:{served.port}"
    )
    check_chat(served)
    with pytest.raises(InvalidHandshake) as info:
        Client.connect(served.ws, timeout=5)
    assert info.value.status == 401  # refused with HTTP: no 101 was sent


def test_gunicorn_with_the_mlsockets_worker(served: Served) -> None:
    gunicorn(served, "mlsockets.gunicorn.GeventWebSocketWorker")
    check_chat(served)
    with pytest.raises(InvalidHandshake) as info:
        Client.connect(served.ws, timeout=5, headers={"Origin": "http://evil.example"})
    assert info.value.status == 403


def test_gunicorn_with_the_gevent_websocket_worker(served: Served) -> None:
    pytest.importorskip("geventwebsocket")
    gunicorn(served, "geventwebsocket.gunicorn.workers.GeventWebSocketWorker")
    check_chat(served)
    # The 101 goes out before the app runs: a refused user is closed with 1008 right after.
    for headers, reason in [
        ({}, "401 Unauthorized"),
        ({"Cookie": served.login("1"), "Origin": "http://evil.example"}, "403 Forbidden"),
    ]:
        with pytest.raises(ConnectionClosedError) as info:
            Client.connect(served.ws, timeout=5, headers=headers)
        assert (info.value.code, info.value.reason) == (1008, reason)
    assert "Traceback" not in served.output()
