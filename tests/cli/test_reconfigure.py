"""``Server.reconfigure`` (what SIGHUP applies): open connections take the new heartbeat and
keep their queue limit; new connections take every new option. In-process, on a real socket:
the test reads the server's frames raw, so it sees the pings a client library would hide."""

from __future__ import annotations

import base64
import os
import socket
from collections.abc import Iterator

import pytest

from examples.echo import app
from mlsockets.transport.gevent.options import ServerOptions
from mlsockets.transport.gevent.server import Server


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server(app, ["127.0.0.1:0"], options=ServerOptions(ping_interval=None, max_queue=4096))
    srv.start()
    try:
        yield srv
    finally:
        srv.shutdown(grace=2)


def open_raw(server: Server) -> socket.socket:
    host, port = server.addresses[0]
    sock = socket.create_connection((host, port), timeout=20)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        .encode()
    )  # fmt: skip
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        assert chunk, "closed during the handshake"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101")
    return sock


def test_open_connections_follow_the_new_heartbeat(server: Server) -> None:
    sock = open_raw(server)
    try:
        (ws,) = server.reaper.connections
        server.reconfigure(ServerOptions(ping_interval=0.2, ping_timeout=30, max_queue=1 << 20))
        # RFC 6455 section 5.5.2: a Ping is opcode 0x9; FIN set, so the first byte is 0x89.
        first = sock.recv(1)
        assert first == b"\x89"
        assert ws._options.ping_interval == 0.2
        assert ws._options.max_queue == 4096  # its queue limit stays
        assert server.options.max_queue == 1 << 20  # new connections get the new one
        for listener in server.servers:
            assert listener.ws_options is server.options
    finally:
        sock.close()
