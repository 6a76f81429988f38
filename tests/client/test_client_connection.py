"""The raw client (``mlsockets.client.connect``) against our gevent server, run in greenlets
of the test process (the suite runs monkey-patched), and against independent servers: the
``websockets`` library and hand-written sockets for answers no real server gives."""

from __future__ import annotations

import base64
import hashlib
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest

from mlsockets.client import ClientConnection, connect, parse_url
from mlsockets.exceptions import (
    ConnectionClosedError,
    ConnectionClosedOK,
    InvalidHandshake,
)
from mlsockets.protocol.deflate import DeflateConfig
from mlsockets.transport.gevent import Server, ServerOptions, WebSocket

FAST = {"ping_interval": None, "close_timeout": 0.5, "handshake_timeout": 0.5}

StartServer = Callable[..., Server]


@pytest.fixture
def serve() -> Iterator[StartServer]:
    """``serve(app, binds=None, certfile=None, keyfile=None, **options)``: a Server on
    127.0.0.1:0, shut down after the test."""
    servers: list[Server] = []

    def start(app: Any, binds: list[str] | None = None, **kwargs: Any) -> Server:
        tls = {k: kwargs.pop(k) for k in ("certfile", "keyfile") if k in kwargs}
        options = ServerOptions(**{**FAST, **kwargs})
        server = Server(app, binds or ["127.0.0.1:0"], options=options, **tls)
        server.reaper.tick = 0.05
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown(grace=1.0)


def ws_url(server: Server, path: str = "/echo", scheme: str = "ws") -> str:
    host, port = server.addresses[0][:2]
    return f"{scheme}://{host}:{port}{path}"


# -- the application under test ---------------------------------------------------------

#: What handlers saw, for assertions on the server's side.
seen: list[object] = []


def echo(ws: WebSocket) -> None:
    for message in ws:
        ws.send(message)
    seen.append(("closed", ws.close_code, ws.close_reason))


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Endpoints: /echo, /refuse (401), /close?code=&reason=&send=, /big?size=, /headers."""
    path = environ["PATH_INFO"]
    query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    upgrade = environ.get("mlsockets.upgrade")
    if upgrade is None:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"plain HTTP"]
    if path == "/refuse":
        body = b"token required"
        start_response(
            "401 Unauthorized",
            [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))],
        )
        return [body]
    # Select the server's preferred subprotocol among those offered.
    offered = upgrade.request.subprotocols
    subprotocol = next((p for p in ("chat.v2", "chat.v1") if p in offered), None)
    if path == "/echo":
        upgrade.accept(subprotocol=subprotocol, handler=echo)
    elif path == "/close":

        def close(ws: WebSocket) -> None:
            for message in query.get("send", "").split(",") if query.get("send") else []:
                ws.send(message)
            ws.close(int(query["code"]), query.get("reason", ""))

        upgrade.accept(handler=close)
    elif path == "/big":
        upgrade.accept(handler=lambda ws: (ws.send(b"x" * int(query["size"])), list(ws)))
    elif path == "/headers":
        upgrade.accept(
            handler=lambda ws: (
                ws.send(f"{environ.get('HTTP_X_TEST')}|{environ.get('HTTP_AUTHORIZATION')}"),
                list(ws),
            )
        )
    else:
        start_response("404 Not Found", [("Content-Length", "0")])
    return []


@pytest.fixture
def server(serve: StartServer) -> Server:
    seen.clear()
    return serve(app, max_message_size=4 << 20)


# -- messages ----------------------------------------------------------------------------


def test_text_and_binary_echo_keep_their_types(server: Server) -> None:
    with connect(ws_url(server), timeout=5) as ws:
        ws.send("text é")
        ws.send(b"\x00\xffbytes")
        ws.send(bytearray(b"array"))
        assert ws.recv(timeout=5) == "text é"
        assert ws.recv(timeout=5) == b"\x00\xffbytes"
        assert ws.recv(timeout=5) == b"array"


@pytest.mark.parametrize("compression", [True, None], ids=["deflate", "plain"])
def test_large_messages(server: Server, compression: bool | None) -> None:
    text = "".join(chr(0x41 + i % 26) + "é" for i in range(300_000))
    blob = bytes(range(256)) * 8192  # 2 MiB
    with connect(
        ws_url(server), timeout=5, compression=compression, max_message_size=4 << 20
    ) as ws:
        ws.send(text)
        ws.send(blob)
        assert ws.recv(timeout=5) == text
        assert ws.recv(timeout=5) == blob


@pytest.mark.parametrize(
    ("client", "server_side", "negotiated"),
    [
        (True, DeflateConfig(), True),
        (DeflateConfig(client_no_context_takeover=True), DeflateConfig(), True),
        (None, DeflateConfig(), False),
        (True, None, False),
    ],
    ids=["on", "client-options", "client-off", "server-off"],
)
def test_compression_negotiation(
    serve: StartServer,
    client: bool | DeflateConfig | None,
    server_side: DeflateConfig | None,
    negotiated: bool,
) -> None:
    server = serve(app, compression=server_side)
    with connect(ws_url(server), timeout=5, compression=client) as ws:
        extensions = ws.response_headers.get("sec-websocket-extensions", "")
        assert extensions.startswith("permessage-deflate") is negotiated
        for message in ("short", "long " * 1000, b"\x00" * 5000):
            ws.send(message)
            assert ws.recv(timeout=5) == message


def test_subprotocol_is_the_servers_choice(server: Server) -> None:
    with connect(ws_url(server), subprotocols=["chat.v1", "chat.v2"], timeout=5) as ws:
        assert ws.subprotocol == "chat.v2"
    with connect(ws_url(server), subprotocols=["chat.v1", "other"], timeout=5) as ws:
        assert ws.subprotocol == "chat.v1"
    with connect(ws_url(server), timeout=5) as ws:
        assert ws.subprotocol is None


def test_headers_and_url_credentials_are_sent(server: Server) -> None:
    url = ws_url(server, "/headers").replace("ws://", "ws://alice:s%3Acret@")
    with connect(url, headers={"X-Test": "yes"}, timeout=5) as ws:
        expected = "Basic " + base64.b64encode(b"alice:s:cret").decode()
        assert ws.recv(timeout=5) == f"yes|{expected}"
    with connect(ws_url(server, "/headers"), headers=[("Authorization", "Bearer t")]) as ws:
        assert ws.recv(timeout=5) == "None|Bearer t"


# -- the handshake -----------------------------------------------------------------------


def test_refused_handshake_raises_with_the_status_and_body(server: Server) -> None:
    with pytest.raises(InvalidHandshake) as info:
        connect(ws_url(server, "/refuse"), timeout=5)
    assert info.value.status == 401
    assert "token required" in str(info.value)


def test_unknown_path_is_a_404(server: Server) -> None:
    with pytest.raises(InvalidHandshake) as info:
        connect(ws_url(server, "/nowhere"), timeout=5)
    assert info.value.status == 404


def test_handshake_timeout(tmp_path: Path) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)  # never accepted, never answered
    try:
        port = listener.getsockname()[1]
        with pytest.raises(TimeoutError):
            connect(f"ws://127.0.0.1:{port}/", timeout=0.2)
    finally:
        listener.close()


def test_bad_urls_and_headers() -> None:
    for url in ("http://example.com/", "ws:///path", "ws://host/#frag", "ws://host:99999/"):
        with pytest.raises(ValueError):
            connect(url)
    with pytest.raises(ValueError):
        connect("ws://127.0.0.1:9/", headers={"X-Evil": "a\r\nHost: b"})
    with pytest.raises(ValueError):
        connect("ws://127.0.0.1:9/", ssl_context=ssl.create_default_context())


def test_parse_url() -> None:
    target = parse_url("wss://example.com/a/b?x=1")
    assert (target.secure, target.host, target.port) == (True, "example.com", 443)
    assert (target.resource, target.host_header) == ("/a/b?x=1", "example.com")
    target = parse_url("ws://[::1]:8080")
    assert (target.host, target.port, target.resource) == ("::1", 8080, "/")
    assert target.host_header == "[::1]:8080"
    assert parse_url("ws://h:80/").host_header == "h"
    assert parse_url("ws://h/").authorization is None


# -- closing -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "reason", "exception"),
    [(1000, "done", ConnectionClosedOK), (1001, "", ConnectionClosedOK)]
    + [(4001, "bye", ConnectionClosedError), (1011, "oops", ConnectionClosedError)],
)
def test_server_close_code_surfaces_after_pending_messages(
    server: Server, code: int, reason: str, exception: type[Exception]
) -> None:
    ws = connect(ws_url(server, f"/close?code={code}&reason={reason}&send=a,b"), timeout=5)
    assert ws.recv(timeout=5) == "a"
    assert ws.recv(timeout=5) == "b"
    with pytest.raises(exception) as info:
        ws.recv(timeout=5)
    assert (info.value.code, info.value.reason) == (code, reason)  # type: ignore[attr-defined]
    assert (ws.close_code, ws.close_reason, ws.closed) == (code, reason, True)
    with pytest.raises(exception):
        ws.send("too late")
    ws.close()  # a no-op now


def test_client_close_completes_the_handshake(server: Server) -> None:
    ws = connect(ws_url(server), timeout=5)
    ws.send("last")
    assert ws.recv(timeout=5) == "last"
    ws.close(1000, "bye")
    assert ws.close_code == 1000
    with pytest.raises(ConnectionClosedOK):
        ws.recv(timeout=1)
    with pytest.raises(ConnectionClosedOK):
        ws.send("x")
    ws.close()
    server.shutdown(grace=1.0)
    assert ("closed", 1000, "bye") in seen


def test_iteration_ends_on_a_normal_close(server: Server) -> None:
    with connect(ws_url(server, "/close?code=1000&send=x,y,z"), timeout=5) as ws:
        assert list(ws) == ["x", "y", "z"]


def test_iteration_raises_on_an_error_close(server: Server) -> None:
    with connect(ws_url(server, "/close?code=4000&send=x"), timeout=5) as ws:
        received = []
        with pytest.raises(ConnectionClosedError):
            for message in ws:
                received.append(message)
        assert received == ["x"]


def test_message_over_the_client_limit_fails_with_1009(server: Server) -> None:
    with connect(ws_url(server, "/big?size=2000"), max_message_size=1000, timeout=5) as ws:
        with pytest.raises(ConnectionClosedError) as info:
            ws.recv(timeout=5)
        assert info.value.code == 1009
        assert ws.close_code == 1009


def test_server_shutdown_is_going_away(serve: StartServer) -> None:
    server = serve(app)
    ws = connect(ws_url(server), timeout=5)
    codes: list[int | None] = []
    reader = threading.Thread(target=lambda: (list(ws), codes.append(ws.close_code)))
    reader.start()  # reads, so the closing handshake completes at once
    server.shutdown(grace=1.0)
    reader.join(5)
    assert codes == [1001]
    with pytest.raises(ConnectionClosedOK):
        ws.recv(timeout=5)


# -- timeouts, pings, concurrency ----------------------------------------------------------


def test_recv_timeout_leaves_the_connection_usable(server: Server) -> None:
    with connect(ws_url(server), timeout=5) as ws:
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.05)
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0)
        ws.send("still here")
        assert ws.recv(timeout=5) == "still here"


def test_ping_waits_for_the_pong_and_keeps_messages(server: Server) -> None:
    with connect(ws_url(server), timeout=5) as ws:
        ws.send("before")
        assert ws.ping(timeout=5) >= 0
        assert ws.ping(b"payload", timeout=5) >= 0
        assert ws.recv(timeout=5) == "before"


def test_send_and_close_from_another_thread_while_one_reads(server: Server) -> None:
    ws = connect(ws_url(server), timeout=5)
    received: list[object] = []
    reader = threading.Thread(target=lambda: received.extend(ws))
    reader.start()
    for i in range(20):
        ws.send(f"m{i}")
    assert ws.ping(timeout=5) >= 0  # waits while the reader reads
    ws.close()
    reader.join(5)
    assert not reader.is_alive()
    assert received == [f"m{i}" for i in range(20)]
    assert ws.close_code == 1000


def test_unix_socket(serve: StartServer, tmp_path: Path) -> None:
    path = str(tmp_path / "ws.sock")
    serve(app, [f"unix:{path}"])
    with connect("ws://localhost/echo", unix_path=path, timeout=5) as ws:
        ws.send("over unix")
        assert ws.recv(timeout=5) == "over unix"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    tmp = tmp_path_factory.mktemp("tls")
    cert, key = str(tmp / "cert.pem"), str(tmp / "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
        + ["-nodes", "-days", "1", "-subj", "/CN=localhost", "-keyout", key, "-out", cert]
        + ["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_wss(serve: StartServer, certificate: tuple[str, str]) -> None:
    cert, key = certificate
    server = serve(app, certfile=cert, keyfile=key)
    context = ssl.create_default_context(cafile=cert)
    with connect(ws_url(server, scheme="wss"), ssl_context=context, timeout=5) as ws:
        ws.send("secret " * 100)
        assert ws.recv(timeout=5) == "secret " * 100
        assert ws.ping(timeout=5) >= 0
    with pytest.raises(ssl.SSLError):  # the default context does not trust it
        connect(ws_url(server, scheme="wss"), timeout=5)


# -- independent servers ----------------------------------------------------------------


@pytest.fixture
def websockets_server() -> Iterator[Callable[[Callable[[Any], None]], str]]:
    """``start(handler)`` runs a ``websockets`` sync server; returns its ws:// URL."""
    from websockets.sync.server import serve as ws_serve

    started: list[tuple[Any, threading.Thread]] = []

    def start(handler: Callable[[Any], None]) -> str:
        server = ws_serve(handler, "127.0.0.1", 0, ping_interval=None, close_timeout=1)
        thread = threading.Thread(target=server.serve_forever)
        thread.start()
        started.append((server, thread))
        return f"ws://127.0.0.1:{server.socket.getsockname()[1]}/"

    yield start
    for server, thread in started:
        server.shutdown()
        thread.join(5)


def test_interop_with_websockets_server(
    websockets_server: Callable[[Callable[[Any], None]], str],
) -> None:
    def handler(conn: Any) -> None:
        waiter = conn.ping(b"from server")
        if waiter.wait(5):  # answered by the client while it was in recv()
            conn.send("pong received")
        for message in conn:
            conn.send(message)

    url = websockets_server(handler)
    with connect(url, timeout=5) as ws:
        assert ws.recv(timeout=5) == "pong received"
        for message in ("text", b"binary", "compressed " * 500):
            ws.send(message)
            assert ws.recv(timeout=5) == message
        assert ws.ping(timeout=5) >= 0
    assert ws.close_code == 1000


@pytest.fixture
def raw_server() -> Iterator[Callable[[Callable[[socket.socket, dict[str, str]], None]], str]]:
    """``start(respond)``: a one-connection server that reads the request head and calls
    ``respond(conn, headers)``; returns its ws:// URL."""
    threads: list[threading.Thread] = []
    listeners: list[socket.socket] = []

    def start(respond: Callable[[socket.socket, dict[str, str]], None]) -> str:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listeners.append(listener)

        def run() -> None:
            conn, _ = listener.accept()
            with conn:
                head = b""
                while b"\r\n\r\n" not in head:
                    head += conn.recv(4096)
                lines = head.decode().split("\r\n")[1:]
                headers = {
                    k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines)
                }
                respond(conn, headers)

        thread = threading.Thread(target=run)
        thread.start()
        threads.append(thread)
        return f"ws://127.0.0.1:{listener.getsockname()[1]}/"

    yield start
    for thread in threads:
        thread.join(5)
    for listener in listeners:
        listener.close()


def accept_head(headers: dict[str, str], *extra: str) -> bytes:
    key = headers["sec-websocket-key"] + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
    accept = base64.b64encode(hashlib.sha1(key.encode()).digest()).decode()
    lines = ["HTTP/1.1 101 Switching Protocols", "Upgrade: websocket", "Connection: Upgrade"]
    lines += [f"Sec-WebSocket-Accept: {accept}", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_tcp_drop_without_close_frame_is_1006(
    raw_server: Callable[[Callable[[socket.socket, dict[str, str]], None]], str],
) -> None:
    # The first message arrives in the same segment as the 101 response.
    url = raw_server(lambda conn, headers: conn.sendall(accept_head(headers) + b"\x81\x02hi"))
    ws = connect(url, timeout=5)
    assert ws.recv(timeout=5) == "hi"
    with pytest.raises(ConnectionClosedError) as info:
        ws.recv(timeout=5)
    assert info.value.code == 1006


def test_unrequested_subprotocol_is_refused(
    raw_server: Callable[[Callable[[socket.socket, dict[str, str]], None]], str],
) -> None:
    url = raw_server(
        lambda conn, headers: conn.sendall(accept_head(headers, "Sec-WebSocket-Protocol: evil"))
    )
    with pytest.raises(InvalidHandshake, match="subprotocol"):
        connect(url, subprotocols=["good"], timeout=5)


def test_masked_server_frame_fails_the_connection_with_1002(
    raw_server: Callable[[Callable[[socket.socket, dict[str, str]], None]], str],
) -> None:
    def respond(conn: socket.socket, headers: dict[str, str]) -> None:
        conn.sendall(accept_head(headers))
        conn.sendall(b"\x81\x82abcd" + bytes(a ^ b for a, b in zip(b"hi", b"ab", strict=True)))
        conn.recv(4096)  # the client's Close frame

    ws: ClientConnection = connect(raw_server(respond), timeout=5)
    with pytest.raises(ConnectionClosedError) as info:
        ws.recv(timeout=5)
    assert info.value.code == 1002


def test_close_gives_up_when_the_server_never_answers(
    raw_server: Callable[[Callable[[socket.socket, dict[str, str]], None]], str],
) -> None:
    def respond(conn: socket.socket, headers: dict[str, str]) -> None:
        conn.sendall(accept_head(headers))
        while conn.recv(4096):  # ignores the client's Close frame
            pass

    ws = connect(raw_server(respond), timeout=5, close_timeout=0.1)
    ws.close()
    assert ws.close_code == 1006
    with pytest.raises(ConnectionClosedError):
        ws.recv(timeout=1)
