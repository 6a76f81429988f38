"""Callback mode, ``upgrade.accept(on_message=..., on_close=...)``: no greenlet is held while
a connection is idle; messages reach ``on_message`` in order and ``on_close`` runs once."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import gevent
import pytest
from gevent.queue import Queue
from websockets.exceptions import ConnectionClosed as ClientClosed
from wsclients import CLOSE, TEXT, RawClient, frame, request, url, ws_connect

from mlsockets.exceptions import InvalidState
from mlsockets.transport.gevent import WebSocket

events: Queue[tuple[str, Any]] = Queue()


def on_message(ws: WebSocket, message: str | bytes) -> None:
    if message == "slow":
        gevent.sleep(0.05)  # a blocking handler delays the next message, never reorders it
    ws.send(message)


def on_close(ws: WebSocket) -> None:
    events.put(("closed", ws.close_code))


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    environ["mlsockets.upgrade"].accept(on_message=on_message, on_close=on_close)
    return []


@pytest.fixture(autouse=True)
def _drain() -> None:
    while not events.empty():
        events.get()


def test_echo_in_order_and_on_close_once(serve: Any) -> None:
    server = serve(app)
    with ws_connect(url(server)) as client:
        for message in ["a", "slow", b"b", "c"]:
            client.send(message)
        assert [client.recv(timeout=5) for _ in range(4)] == ["a", "slow", b"b", "c"]
    assert events.get(timeout=5) == ("closed", 1000)
    gevent.sleep(0.1)
    assert events.empty()  # once
    assert len(server._pool) == 0  # no handler greenlet stayed behind
    assert server.reaper.connections == set()


def test_pipelined_frames_reach_on_message(serve: Any) -> None:
    server = serve(app)
    with RawClient(server.addresses[0]) as client:
        client.send(request() + frame(TEXT, b"one") + frame(TEXT, b"two"))
        assert client.read_response().status == 101
        assert [client.recv_frame().payload for _ in range(2)] == [b"one", b"two"]


def test_abrupt_disconnect_calls_on_close_with_1006(serve: Any) -> None:
    server = serve(app)
    client = RawClient(server.addresses[0])
    client.handshake()
    client.abort()
    assert events.get(timeout=5) == ("closed", 1006)


def test_shutdown_closes_with_1001(serve: Any) -> None:
    server = serve(app)
    with ws_connect(url(server)) as client:
        client.send("x")
        assert client.recv(timeout=5) == "x"
        shutdown = gevent.spawn(server.shutdown, 5.0)
        with pytest.raises(ClientClosed) as info:
            client.recv(timeout=10)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1001
    shutdown.get(timeout=10)
    assert events.get(timeout=5) == ("closed", 1001)


def test_over_tls(serve: Any, certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    server = serve(app, certfile=cert, keyfile=key)
    context = ssl.create_default_context(cafile=str(cert))
    with ws_connect(url(server, scheme="wss"), ssl=context) as client:
        client.send("over tls")
        assert client.recv(timeout=5) == "over tls"
    assert events.get(timeout=5) == ("closed", 1000)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"on_message": on_message, "handler": on_close},
        {"on_close": on_close},
    ],
    ids=["handler-and-on_message", "on_close-alone"],
)
def test_invalid_combinations_fail_the_app(serve: Any, kwargs: dict[str, Any]) -> None:
    raised: list[BaseException] = []

    def bad_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        try:
            environ["mlsockets.upgrade"].accept(**kwargs)
        except InvalidState as exc:
            raised.append(exc)
            raise
        return []

    server = serve(bad_app)
    with RawClient(server.addresses[0]) as client:
        client.send(request())
        assert client.read_response().status == 500
    assert len(raised) == 1


@pytest.mark.parametrize("fails", [False, True], ids=["greets", "raises"])
def test_on_open_runs_right_after_the_101(serve: Any, fails: bool) -> None:
    def on_open(ws: WebSocket) -> None:
        if fails:
            raise RuntimeError("secret detail")
        ws.send("welcome")

    def greeting_app(
        environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        environ["mlsockets.upgrade"].accept(
            on_open=on_open, on_message=on_message, on_close=on_close
        )
        return []

    server = serve(greeting_app)
    with RawClient(server.addresses[0]) as client:
        client.handshake()
        first = client.recv_frame()
        if fails:
            assert (first.opcode, first.close_code) == (CLOSE, 1011)
            assert client.at_eof()
        else:
            assert (first.opcode, first.payload) == (TEXT, b"welcome")
    assert events.get(timeout=5)[0] == "closed"
