"""``gunicorn -k mlsockets.gunicorn.GeventWebSocketWorker`` as a real subprocess: echo, a
handshake the app refuses, SIGTERM and a SIGHUP reload (each closing clients with 1001)."""

from __future__ import annotations

import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import gevent
import pytest
from gunicorn import config
from processes import ROOT, Processes
from websockets.exceptions import ConnectionClosed as ClientClosed
from wsclients import RawClient, request, ws_connect

GUNICORN = Path(sys.executable).with_name("gunicorn")

APP = """
import os


def handler(ws):
    for message in ws:
        ws.send(str(os.getpid()) if message == "pid" else message)


def app(environ, start_response):
    upgrade = environ.get("mlsockets.upgrade")
    if upgrade is not None and environ["PATH_INFO"] == "/ws":
        upgrade.accept(handler=handler)
        return []
    if upgrade is not None:
        start_response("403 Forbidden", [("Content-Type", "text/plain")])
        return [b"no websockets here"]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"plain"]
"""

pytestmark = pytest.mark.skipif(not GUNICORN.exists(), reason="gunicorn is not installed")

# gunicorn >= 27 opens a control socket in ~/.gunicorn by default; tests must not share one.
NO_CONTROL_SOCKET = ["--no-control-socket"] if hasattr(config, "ControlSocketDisable") else []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_gunicorn(processes: Processes, app: str, *args: str, cwd: Path = ROOT) -> tuple[Any, str]:
    port = free_port()
    proc = processes.start(
        str(GUNICORN),
        "-k",
        "mlsockets.gunicorn.GeventWebSocketWorker",
        "-w",
        "1",
        "--bind",
        f"127.0.0.1:{port}",
        "--graceful-timeout",
        "10",
        *NO_CONTROL_SOCKET,
        *args,
        app,
        cwd=cwd,
        env={"MLSOCKETS_CLOSE_TIMEOUT": "1", "PYTHONPATH": str(ROOT)},
    )
    with gevent.Timeout(20):  # the master listens before its worker boots: then it queues
        while True:
            assert proc.poll() is None, Processes.stderr(proc)
            try:
                socket.create_connection(("127.0.0.1", port)).close()
                break
            except ConnectionRefusedError:
                gevent.sleep(0.05)
    return proc, f"127.0.0.1:{port}"


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "gunicorn_test_app.py").write_text(APP)
    return tmp_path


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def expect_going_away(client: Any) -> None:
    with pytest.raises(ClientClosed) as info:
        client.recv(timeout=20)
    assert info.value.rcvd is not None
    assert info.value.rcvd.code == 1001


def test_echo_example_and_sigterm(processes: Processes) -> None:
    proc, address = start_gunicorn(processes, "examples.echo:app")
    with ws_connect(f"ws://{address}/ws", open_timeout=20) as client:
        for message in ["hello", b"\x00\x01", "x" * 100_000]:
            client.send(message)
            assert client.recv(timeout=10) == message
        proc.send_signal(signal.SIGTERM)
        expect_going_away(client)
    assert proc.wait(timeout=30) == 0
    assert "Traceback" not in Processes.stderr(proc)


def test_handshake_refused_by_the_app(processes: Processes, app_dir: Path) -> None:
    proc, address = start_gunicorn(processes, "gunicorn_test_app:app", cwd=app_dir)
    host, port = address.split(":")
    with ws_connect(f"ws://{address}/ws", open_timeout=20) as client:  # the worker is up
        client.send("up")
        assert client.recv(timeout=10) == "up"
    with RawClient((host, int(port)), timeout=10) as raw:
        raw.send(request("/elsewhere"))
        response = raw.read_response()
        assert response.status == 403
        assert b"101" not in response.head
        assert response.body == b"no websockets here"
    with RawClient((host, int(port)), timeout=10) as raw:  # a malformed one never reaches it
        raw.send(request("/ws", headers={"Sec-WebSocket-Version": "8"}))
        response = raw.read_response()
        assert response.status == 426
        assert response.headers["sec-websocket-version"] == "13"


def test_sighup_reload_replaces_the_worker(processes: Processes, app_dir: Path) -> None:
    proc, address = start_gunicorn(processes, "gunicorn_test_app:app", cwd=app_dir)
    with ws_connect(f"ws://{address}/ws", open_timeout=20) as client:
        client.send("pid")
        old_worker = int(client.recv(timeout=10))
        proc.send_signal(signal.SIGHUP)
        expect_going_away(client)  # the old worker stops gracefully
    with ws_connect(f"ws://{address}/ws", open_timeout=20) as client:
        client.send("pid")
        new_worker = int(client.recv(timeout=10))
        client.send("still echoing")
        assert client.recv(timeout=10) == "still echoing"
    assert new_worker != old_worker
    assert proc.poll() is None  # the master lives on
    with gevent.Timeout(20):  # and the old worker exits (reaped by the master)
        while alive(old_worker):
            gevent.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
