"""Applications written for gevent-websocket run unchanged: they use
``environ["wsgi.websocket"]`` inline and never look at ``mlsockets.upgrade``."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import gevent
import pytest
from gevent import pywsgi
from websockets.exceptions import ConnectionClosed as ClientClosed
from wsclients import TEXT, RawClient, frame, request, url, ws_connect

from mlsockets.transport.gevent import WebSocketHandler

seen: list[dict[str, Any]] = []


def gevent_websocket_app(
    environ: dict[str, Any], start_response: Callable[..., Any]
) -> Iterable[bytes]:
    """Written the way gevent-websocket's README shows it."""
    ws = environ.get("wsgi.websocket")
    if ws is None:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"plain page"]
    seen.append(
        {
            "path": ws.path,
            "origin": ws.origin,
            "version": ws.version,
            "wsgi.websocket_version": environ["wsgi.websocket_version"],
        }
    )
    while True:
        message = ws.receive()
        if message is None:
            break
        if message == "frame":
            ws.send_frame("via send_frame", 1)
        else:
            ws.send(message)
    return []


@pytest.fixture(autouse=True)
def _clear_seen() -> Iterator[None]:
    seen.clear()
    yield
    seen.clear()


@pytest.fixture(params=["mlsockets-server", "pywsgi-server"])
def address(request: pytest.FixtureRequest, serve: Any) -> Iterator[tuple[str, int]]:
    """The app under our Server, and under a plain pywsgi.WSGIServer with our handler."""
    if request.param == "mlsockets-server":
        yield serve(gevent_websocket_app).addresses[0]
        return
    server = pywsgi.WSGIServer(
        ("127.0.0.1", 0), gevent_websocket_app, handler_class=WebSocketHandler, log=None
    )
    server.start()
    try:
        yield server.address
    finally:
        server.stop(timeout=1)
        reaper = getattr(server, "ws_reaper", None)  # attached on the first request
        if reaper is not None:
            reaper.stop()


def test_echo_with_websockets_client(address: tuple[str, int]) -> None:
    host, port = address
    with ws_connect(f"ws://{host}:{port}/compat", origin="http://example.test") as client:
        client.send("text")
        assert client.recv(timeout=5) == "text"
        client.send(b"\x00binary")
        assert client.recv(timeout=5) == b"\x00binary"
        client.send("frame")
        assert client.recv(timeout=5) == "via send_frame"
    assert seen == [
        {
            "path": "/compat",
            "origin": "http://example.test",
            "version": "13",
            "wsgi.websocket_version": "13",
        }
    ]


def test_plain_http_still_served(address: tuple[str, int]) -> None:
    with RawClient(address) as client:
        client.send(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        data = client.read_to_eof()
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert data.endswith(b"plain page")


def test_pipelined_frame_reaches_inline_receive(address: tuple[str, int]) -> None:
    with RawClient(address) as client:
        client.send(request("/compat") + frame(TEXT, b"early bird"))
        assert client.read_response().status == 101
        reply = client.recv_frame()
        assert (reply.opcode, reply.payload) == (TEXT, b"early bird")


def test_shutdown_closes_inline_connections_with_1001(serve: Any) -> None:
    server = serve(gevent_websocket_app)
    with ws_connect(url(server, "/compat")) as client:
        client.send("before")
        assert client.recv(timeout=5) == "before"
        shutdown = gevent.spawn(server.shutdown, 5.0)
        with pytest.raises(ClientClosed) as info:
            client.recv(timeout=10)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1001
    shutdown.get(timeout=10)
    assert server.reaper.connections == set()
