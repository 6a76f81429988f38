"""1,000 connections opened and killed in every state leave nothing behind: no file
descriptor, no tracked WebSocket, no greenlet."""

from __future__ import annotations

import gc
import os
from collections.abc import Callable, Iterable
from typing import Any

import gevent
import greenlet
import pytest
from gevent.pool import Pool
from wsclients import CLOSE, TEXT, RawClient, close_payload, frame

from mlsockets.transport.gevent import Server, WebSocket

TOTAL = 1000


def echo(ws: WebSocket) -> None:
    for message in ws:
        ws.send(message)


def echo_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    upgrade = environ.get("mlsockets.upgrade")
    if upgrade is None:
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]
    upgrade.accept(handler=echo)
    return []


def callbacks_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """The same in callback mode: the connection holds no greenlet while idle."""
    environ["mlsockets.upgrade"].accept(on_message=lambda ws, m: ws.send(m))
    return []


def half_sent_head(address: Any) -> None:
    with RawClient(address) as client:
        client.send(b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websock")


def handshake_then_reset(address: Any) -> None:
    client = RawClient(address)
    client.handshake()
    client.abort()


def reset_mid_frame(address: Any) -> None:
    client = RawClient(address)
    client.handshake()
    client.send(frame(TEXT, b"x" * 1000)[:300])
    client.abort()


def clean_close(address: Any) -> None:
    with RawClient(address) as client:
        client.handshake()
        client.send_frame(TEXT, b"hello")
        assert client.recv_frame().payload == b"hello"
        client.send_frame(CLOSE, close_payload(1000))
        assert client.recv_frame().opcode == CLOSE
        assert client.at_eof()


STATES = [half_sent_head, handshake_then_reset, reset_mid_frame, clean_close]


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def greenlets() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, greenlet.greenlet) and not o.dead)


def settled(server: Server, fds: int) -> bool:
    return not server.reaper.connections and open_fds() <= fds and len(server._pool) == 0


@pytest.mark.usefixtures("no_hang")
@pytest.mark.parametrize("app", [echo_app, callbacks_app], ids=["handler", "callbacks"])
def test_connections_in_every_state_leave_nothing_behind(serve: Any, app: Any) -> None:
    server = serve(app, handshake_timeout=2.0)
    address = server.addresses[0]
    for state in STATES:  # warm up: the reaper greenlet, lazy imports, caches
        state(address)
    with gevent.Timeout(10):
        while server.reaper.connections or len(server._pool):
            gevent.sleep(0.02)
    fds, live = open_fds(), greenlets()

    clients = Pool(50)
    clients.map(lambda i: STATES[i % len(STATES)](address), range(TOTAL))

    with gevent.Timeout(10, False):
        while not settled(server, fds):
            gevent.sleep(0.05)
    assert server.reaper.connections == set()
    assert len(server._pool) == 0  # every handler greenlet ended
    assert open_fds() == fds
    assert greenlets() <= live + 3


@pytest.mark.usefixtures("no_hang")
def test_connections_cut_by_the_request_head_deadline_leave_nothing_behind(serve: Any) -> None:
    server = serve(echo_app, handshake_timeout=0.2)
    address = server.addresses[0]
    clean_close(address)
    with gevent.Timeout(10):
        while server.reaper.connections or len(server._pool):
            gevent.sleep(0.02)
    fds, live = open_fds(), greenlets()

    def stall(i: int) -> None:
        with RawClient(address, timeout=10) as client:
            client.send(b"GET / HTTP/1.1\r\nHost: localhost\r\n"[: i % 30])
            assert client.read_to_eof() == b""  # the server hung up on us

    Pool(100).map(stall, range(200))
    with gevent.Timeout(10, False):
        while not settled(server, fds):
            gevent.sleep(0.05)
    assert len(server._pool) == 0
    assert open_fds() == fds
    assert greenlets() <= live + 3
