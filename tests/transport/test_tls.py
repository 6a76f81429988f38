"""WebSockets over TLS in-process: every byte must go through the TLS record layer, including
the fast paths that write straight to the OS socket for plain connections."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import gevent
import pytest
from gevent.queue import Queue
from websockets.exceptions import ConnectionClosed as ClientClosed
from wsclients import url, ws_connect

from mlsockets.transport.gevent import WebSocket, broadcast

members: Queue[WebSocket] = Queue()


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    upgrade = environ.get("mlsockets.upgrade")
    if upgrade is None:
        start_response("200 OK", [("Content-Length", "5")])
        return [b"plain"]

    def echo(ws: WebSocket) -> None:
        members.put(ws)
        for message in ws:
            ws.send(message)

    upgrade.accept(handler=echo)
    return []


@pytest.fixture
def tls(serve: Any, certificate: tuple[Path, Path]) -> tuple[Any, ssl.SSLContext]:
    while not members.empty():
        members.get()
    cert, key = certificate
    server = serve(app, certfile=cert, keyfile=key, compression=None, max_message_size=None)
    return server, ssl.create_default_context(cafile=str(cert))


def test_echo_small_and_large_messages(tls: tuple[Any, ssl.SSLContext]) -> None:
    server, context = tls
    with ws_connect(url(server, scheme="wss"), ssl=context, max_size=None) as client:
        for message in ["small", b"\x00" * 10, "é" * 100_000, bytes(range(256)) * 16_384]:
            client.send(message)
            assert client.recv(timeout=10) == message


def test_broadcast(tls: tuple[Any, ssl.SSLContext]) -> None:
    server, context = tls
    with (
        ws_connect(url(server, scheme="wss"), ssl=context) as a,
        ws_connect(url(server, scheme="wss"), ssl=context) as b,
    ):
        targets = [members.get(timeout=5), members.get(timeout=5)]
        assert broadcast(targets, "to everyone") == 2
        assert broadcast(targets, b"\x01" * 70_000) == 2
        for client in (a, b):
            assert client.recv(timeout=10) == "to everyone"
            assert client.recv(timeout=10) == b"\x01" * 70_000


def test_shutdown_closes_with_1001(tls: tuple[Any, ssl.SSLContext]) -> None:
    server, context = tls
    with ws_connect(url(server, scheme="wss"), ssl=context) as client:
        client.send("hi")
        assert client.recv(timeout=10) == "hi"
        shutdown = gevent.spawn(server.shutdown, 5.0)
        with pytest.raises(ClientClosed) as info:
            client.recv(timeout=10)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1001
    shutdown.get(timeout=10)
    assert server.reaper.connections == set()


def test_heartbeat_over_tls(serve: Any, certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    server = serve(app, certfile=cert, keyfile=key, ping_interval=0.1, ping_timeout=0.3)
    context = ssl.create_default_context(cafile=str(cert))
    with ws_connect(url(server, scheme="wss"), ssl=context) as client:
        gevent.sleep(0.6)  # several intervals: pinged and answered, never timed out
        client.send("alive")
        assert client.recv(timeout=10) == "alive"
