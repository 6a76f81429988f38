"""RFC 6455 section 4 over real sockets: the app decides on a valid upgrade, with any HTTP
answer it likes; malformed upgrades are refused before the app runs."""

from __future__ import annotations

import http.client
import zlib
from collections.abc import Callable, Iterable
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus
from websockets.extensions.permessage_deflate import PerMessageDeflate as ClientDeflate
from wsclients import BINARY, TEXT, RawClient, request, url, ws_connect

from mlsockets.exceptions import InvalidState

StartResponse = Callable[..., Any]


def echo(ws: Any) -> None:
    for message in ws:
        ws.send(message)


def deferred_app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    environ["mlsockets.upgrade"].accept(handler=echo)
    return []


def inline_app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    ws = environ["mlsockets.upgrade"].accept()
    echo(ws)
    return []


def refusing_app(status: str, body: bytes) -> Callable[..., Iterable[bytes]]:
    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        start_response(status, [("Content-Type", "text/plain"), ("X-Refused-By", "app")])
        return [body]

    return app


class RecordingApp:
    """Echoes on upgrade, says hello to plain HTTP; remembers every request it saw."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        self.calls.append(environ["PATH_INFO"])
        upgrade = environ.get("mlsockets.upgrade")
        if upgrade is not None:
            upgrade.accept(handler=echo)
            return []
        body = f"hello {environ['PATH_INFO']}".encode()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]


class TestAccept:
    @pytest.mark.parametrize("app", [deferred_app, inline_app], ids=["deferred", "inline"])
    def test_echo_through_websockets_client(self, serve: Any, app: Any) -> None:
        server = serve(app)
        with ws_connect(url(server)) as client:
            client.send("hello")
            assert client.recv(timeout=5) == "hello"
            client.send(b"\x00\xff")
            assert client.recv(timeout=5) == b"\x00\xff"

    @pytest.mark.parametrize("app", [deferred_app, inline_app], ids=["deferred", "inline"])
    def test_101_response_on_the_wire(self, serve: Any, app: Any) -> None:
        server = serve(app)
        with RawClient(server.addresses[0]) as client:
            response = client.handshake()
            assert response.head.startswith(b"HTTP/1.1 101 ")
            assert response.headers["upgrade"].lower() == "websocket"
            assert response.headers["connection"].lower() == "upgrade"
            assert "sec-websocket-protocol" not in response.headers
            assert "sec-websocket-extensions" not in response.headers  # none offered


class TestLenientButValid:
    @pytest.mark.parametrize(
        "headers",
        [
            {"Connection": "keep-alive, Upgrade"},  # what Firefox sends
            {"Upgrade": "WebSocket", "Connection": "upgrade"},  # tokens are case-insensitive
            {"Sec-WebSocket-Protocol": "a, b", "Origin": "http://example.test"},
        ],
        ids=["keep-alive-upgrade", "case", "extra-headers"],
    )
    def test_accepted(self, serve: Any, headers: dict[str, str]) -> None:
        server = serve(deferred_app)
        with RawClient(server.addresses[0]) as client:
            client.handshake(headers=headers)
            client.send_frame(TEXT, b"ok")
            assert client.recv_frame().payload == b"ok"


class TestAppRefuses:
    @pytest.mark.parametrize(
        ("status", "body"),
        [("401 Unauthorized", b"log in first"), ("403 Forbidden", b"not for you")],
    )
    def test_raw_client_gets_exactly_the_apps_response(
        self, serve: Any, status: str, body: bytes
    ) -> None:
        server = serve(refusing_app(status, body))
        with RawClient(server.addresses[0]) as client:
            client.send(request())
            response = client.read_response()
            assert response.status == int(status[:3])
            assert response.body == body
            assert response.headers["x-refused-by"] == "app"
            assert b"101" not in response.head
            assert client.at_eof()  # no keep-alive after a refused upgrade, and no 101 later

    @pytest.mark.parametrize("code", [401, 403])
    def test_websockets_client_raises_invalid_status(self, serve: Any, code: int) -> None:
        server = serve(refusing_app(f"{code} No", b"refused"))
        with pytest.raises(InvalidStatus) as info:
            ws_connect(url(server))
        assert info.value.response.status_code == code
        assert info.value.response.body == b"refused"

    def test_app_ignoring_the_upgrade_answers_200(self, serve: Any) -> None:
        server = serve(refusing_app("200 OK", b"just a page"))
        with RawClient(server.addresses[0]) as client:
            client.send(request())
            response = client.read_response()
        assert response.status == 200
        assert response.body == b"just a page"
        with pytest.raises(InvalidStatus) as info:
            ws_connect(url(server))
        assert info.value.response.status_code == 200


class TestMalformedHandshake:
    """Section 4.2.1: the server refuses these itself; the app never sees them."""

    @pytest.mark.parametrize(
        ("method", "headers", "status", "answer_header"),
        [
            ("POST", {}, 405, ("allow", "GET")),
            ("GET", {"Sec-WebSocket-Version": "8"}, 426, ("sec-websocket-version", "13")),
            ("GET", {"Sec-WebSocket-Version": None}, 426, ("sec-websocket-version", "13")),
            ("GET", {"Sec-WebSocket-Key": "not a key"}, 400, None),
            ("GET", {"Sec-WebSocket-Key": "c2hvcnQ="}, 400, None),  # 5 bytes, not 16
            ("GET", {"Sec-WebSocket-Key": None}, 400, None),
            ("GET", {"Connection": "keep-alive"}, 400, None),
            ("GET", {"Connection": None}, 400, None),
            ("GET", {"Sec-WebSocket-Extensions": 'permessage-deflate; x="'}, 400, None),
        ],
        ids=[
            "post",
            "version-8",
            "no-version",
            "bad-key",
            "short-key",
            "no-key",
            "no-connection-upgrade",
            "no-connection",
            "bad-extensions",
        ],
    )
    def test_refused_before_the_app(
        self,
        serve: Any,
        method: str,
        headers: dict[str, str | None],
        status: int,
        answer_header: tuple[str, str] | None,
    ) -> None:
        app = RecordingApp()
        server = serve(app)
        with RawClient(server.addresses[0]) as client:
            if method == "POST":
                headers = {**headers, "Content-Length": "0"}
            client.send(request(method=method, headers=headers))
            response = client.read_response()
            assert response.status == status
            assert b"101" not in response.head
            if answer_header is not None:
                name, value = answer_header
                assert response.headers[name] == value
            assert client.at_eof()
        assert app.calls == []


class TestSubprotocol:
    @staticmethod
    def app(choice: str) -> Callable[..., Iterable[bytes]]:
        seen: list[BaseException] = []

        def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
            upgrade = environ["mlsockets.upgrade"]
            assert upgrade.request.subprotocols == ("chat.v1", "chat.v2")
            try:
                upgrade.accept(subprotocol=choice, handler=echo)
            except InvalidState as exc:
                seen.append(exc)
                raise
            return []

        app.seen = seen  # type: ignore[attr-defined]
        return app

    def test_offered_subprotocol_is_selected(self, serve: Any) -> None:
        server = serve(self.app("chat.v2"))
        with ws_connect(url(server), subprotocols=["chat.v1", "chat.v2"]) as client:
            assert client.subprotocol == "chat.v2"
            client.send("hi")
            assert client.recv(timeout=5) == "hi"

    def test_subprotocol_not_offered_fails_the_app_with_500(self, serve: Any) -> None:
        app = self.app("other")
        server = serve(app)
        with pytest.raises(InvalidStatus) as info:
            ws_connect(url(server), subprotocols=["chat.v1", "chat.v2"])
        assert info.value.response.status_code == 500
        assert len(app.seen) == 1  # type: ignore[attr-defined]
        assert isinstance(app.seen[0], InvalidState)  # type: ignore[attr-defined]


class TestPerMessageDeflate:
    """RFC 7692: negotiated with an independent client; messages cross compressed."""

    def test_negotiated_with_websockets_and_round_trips(self, serve: Any) -> None:
        server = serve(deferred_app)
        with ws_connect(url(server)) as client:
            extensions = client.protocol.extensions
            assert [type(e) for e in extensions] == [ClientDeflate]
            for message in ["x" * 5000, b"\x01\x02" * 3000, "short", "é" * 1000]:
                client.send(message)
                assert client.recv(timeout=5) == message

    def test_refused_when_compression_is_off(self, serve: Any) -> None:
        server = serve(deferred_app, compression=None)
        with ws_connect(url(server)) as client:
            assert client.protocol.extensions == []
            client.send("x" * 5000)
            assert client.recv(timeout=5) == "x" * 5000

    def test_frames_on_the_wire_are_compressed(self, serve: Any) -> None:
        server = serve(deferred_app)
        offer = "permessage-deflate; client_max_window_bits"
        with RawClient(server.addresses[0]) as client:
            response = client.handshake(headers={"Sec-WebSocket-Extensions": offer})
            assert response.headers["sec-websocket-extensions"].startswith("permessage-deflate")
            message = b"compress me " * 500
            compressor = zlib.compressobj(wbits=-15)
            body = compressor.compress(message) + compressor.flush(zlib.Z_SYNC_FLUSH)
            assert body.endswith(b"\x00\x00\xff\xff")
            client.send_frame(TEXT, body[:-4], rsv1=True)  # RFC 7692 section 7.2.1
            reply = client.recv_frame()
            assert (reply.opcode, reply.rsv1, reply.fin, reply.masked) == (TEXT, True, True, False)
            assert len(reply.payload) < len(message) // 10
            inflated = zlib.decompressobj(wbits=-15).decompress(reply.payload + b"\x00\x00\xff\xff")
            assert inflated == message
            client.send_frame(BINARY, b"tiny")  # below the threshold: sent as is
            assert client.recv_frame()[1:4] == (False, BINARY, b"tiny")


class TestPlainHTTP:
    def test_http_and_websocket_share_the_port_with_keep_alive(self, serve: Any) -> None:
        app = RecordingApp()
        server = serve(app)
        host, port = server.addresses[0]
        conn = http.client.HTTPConnection(host, port, timeout=5)
        try:
            for path in ["/a", "/b", "/c"]:
                conn.request("GET", path)
                response = conn.getresponse()
                assert response.status == 200
                assert response.read() == f"hello {path}".encode()
                assert not response.will_close
                if path == "/a":
                    first_socket = conn.sock
                assert conn.sock is first_socket  # the same TCP connection every time
        finally:
            conn.close()
        with ws_connect(url(server, "/ws")) as client:
            client.send("ws")
            assert client.recv(timeout=5) == "ws"
        assert app.calls == ["/a", "/b", "/c", "/ws"]

    def test_pipelined_plain_requests_on_one_socket(self, serve: Any) -> None:
        server = serve(RecordingApp())
        plain = b"GET /%d HTTP/1.1\r\nHost: localhost\r\n\r\n"
        with RawClient(server.addresses[0]) as client:
            client.send(plain % 1 + plain % 2)
            assert client.read_response().body == b"hello /1"
            assert client.read_response().body == b"hello /2"
