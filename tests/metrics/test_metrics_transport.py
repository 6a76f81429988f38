"""Transport metrics on a real server: exact message, byte, handshake and close-code counts
for a raw WebSocket endpoint, read back by scraping ``Server(metrics_bind=...)`` over HTTP."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import gevent
import pytest
from metrics_support import FAST, Scrape, scrape

from mlsockets.client import connect
from mlsockets.exceptions import InvalidHandshake
from mlsockets.transport.gevent import Server, ServerOptions


def _flood(ws: Any, message: str | bytes) -> None:
    """The first message asks for 40 MB that the client never reads: a slow consumer."""
    if message == "flood":
        chunk = "x" * 65536
        for _ in range(640):
            if ws.closed:
                return
            ws.send(chunk)
    else:
        ws.send(message)


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    upgrade = environ.get("mlsockets.upgrade")
    path = environ.get("PATH_INFO")
    if upgrade is None or path == "/refuse":
        start_response("403 Forbidden", [("Content-Type", "text/plain")])
        return [b"no\n"]
    upgrade.accept(on_message=_flood if path == "/flood" else lambda ws, m: ws.send(m))
    return []


class Raw:
    def __init__(self, server: Server) -> None:
        self.server = server
        host, port = server.addresses[0]
        self.address = (host, port)
        self.url = f"ws://{host}:{port}"
        mhost, mport = server.metrics_address
        self.metrics_url = f"http://{mhost}:{mport}/metrics"

    def scrape(self) -> Scrape:
        return scrape(self.metrics_url)

    def wait(self, predicate: Callable[[Scrape], bool], what: str) -> Scrape:
        """Scrape until ``predicate`` holds (the server finishes closing after the client
        returned); generous bound, never a timing assertion."""
        with gevent.Timeout(20, AssertionError(f"timed out waiting for {what}")):
            while True:
                current = self.scrape()
                if predicate(current):
                    return current
                gevent.sleep(0.02)


@pytest.fixture
def raw() -> Iterator[Raw]:
    server = Server(
        app,
        ["127.0.0.1:0"],
        options=ServerOptions(**FAST, compression=None, max_queue=65536),
        metrics_bind="127.0.0.1:0",
    )
    server.start()
    yield Raw(server)
    server.shutdown(grace=1)


def test_echo_session_counts_exactly(raw: Raw) -> None:
    before = raw.scrape()
    ws = connect(raw.url + "/echo", compression=None)
    opened = raw.scrape()
    assert (opened - before)("mlsockets_connections_open") == 1
    for _ in range(3):
        ws.send("hello")  # 6 + 5 bytes in (masked), 2 + 5 bytes out
        assert ws.recv(timeout=10) == "hello"
    ws.send(b"\x00" * 200)  # 8 + 200 in (16-bit length), 4 + 200 out
    assert ws.recv(timeout=10) == b"\x00" * 200
    ws.close()  # Close 1000: 6 + 2 in, 2 + 2 out
    after = raw.wait(
        lambda s: (s - before)("mlsockets_close_codes_received_total", code="1000") >= 1,
        "the close to be counted",
    )
    grew = after - before
    assert grew("mlsockets_handshakes_total", status="101") == 1
    assert grew("mlsockets_connections_total") == 1
    assert grew("mlsockets_connections_open") == 0
    assert grew("mlsockets_messages_received_total") == 4
    assert grew("mlsockets_messages_sent_total") == 4
    assert grew("mlsockets_bytes_received_total") == 3 * 11 + 208 + 8
    assert grew("mlsockets_bytes_sent_total") == 3 * 7 + 204 + 4
    assert grew("mlsockets_close_codes_sent_total", code="1000") == 1
    assert grew("mlsockets_close_codes_received_total", code="1000") == 1


def _http(address: tuple[str, int], request: bytes) -> int:
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(request)
        with sock.makefile("rb") as response:
            status_line = response.readline()
    return int(status_line.split()[1])


def test_handshakes_are_counted_by_status(raw: Raw) -> None:
    before = raw.scrape()
    connect(raw.url + "/echo", compression=None).close()
    with pytest.raises(InvalidHandshake):
        connect(raw.url + "/refuse")
    head = (
        b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    )
    assert _http(raw.address, head + b"Sec-WebSocket-Version: 8\r\n\r\n") == 426
    no_key = head.replace(b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", b"")
    assert _http(raw.address, no_key + b"Sec-WebSocket-Version: 13\r\n\r\n") == 400
    grew = raw.scrape() - before
    assert grew("mlsockets_handshakes_total", status="101") == 1
    assert grew("mlsockets_handshakes_total", status="403") == 1
    assert grew("mlsockets_handshakes_total", status="426") == 1
    assert grew("mlsockets_handshakes_total", status="400") == 1
    # A plain HTTP request is not a handshake.
    assert _http(raw.address, b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n") == 403
    assert (raw.scrape() - before)("mlsockets_handshakes_total", status="403") == 1


def test_slow_consumer_and_abnormal_close(raw: Raw) -> None:
    before = raw.scrape()
    ws = connect(raw.url + "/flood", compression=None)
    ws.send("flood")  # and never read
    after = raw.wait(
        lambda s: (s - before)("mlsockets_slow_consumer_disconnects_total") >= 1,
        "the slow consumer to be dropped",
    )
    grew = after - before
    assert grew("mlsockets_slow_consumer_disconnects_total") == 1
    assert grew("mlsockets_close_codes_sent_total", code="1008") == 1
    assert grew("mlsockets_connections_open") == 0
    ws._sock.close()  # type: ignore[attr-defined]

    # A client that vanishes without a Close frame: 1006 received, nothing sent.
    before = raw.scrape()
    gone = connect(raw.url + "/echo", compression=None)
    gone._sock.close()  # type: ignore[attr-defined]
    after = raw.wait(
        lambda s: (s - before)("mlsockets_close_codes_received_total", code="1006") >= 1,
        "the dropped connection to be counted",
    )
    assert (after - before)("mlsockets_connections_open") == 0


def test_metrics_listener_serves_only_get_metrics(raw: Raw) -> None:
    base = raw.metrics_url.rsplit("/", 1)[0]
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(base + "/other", timeout=10)
    missing.value.close()
    assert missing.value.code == 404
    with pytest.raises(urllib.error.HTTPError) as post:
        urllib.request.urlopen(urllib.request.Request(raw.metrics_url, data=b"x"), timeout=10)
    post.value.close()
    assert post.value.code == 405
    text = raw.scrape().text
    assert "# TYPE mlsockets_connections_open gauge" in text
    assert "# TYPE mlsockets_event_handler_seconds histogram" in text
