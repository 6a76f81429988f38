"""RFC 6455 section 4: the opening handshake, server and client side, as pure functions."""

from __future__ import annotations

import base64
from types import ModuleType

import pytest

from mlsockets.exceptions import InvalidHandshake, InvalidState
from mlsockets.protocol.deflate import DeflateConfig, PerMessageDeflate
from mlsockets.protocol.handshake import (
    GUID,
    Accepted,
    ClientRequest,
    Rejection,
    accept,
    accept_key,
    build_request,
    check_response,
    headers_from_environ,
    serialize_response,
    validate_request,
)

# Section 1.3's example key.
KEY = "dGhlIHNhbXBsZSBub25jZQ=="
ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def request_headers(**overrides: str | None) -> dict[str, str]:
    """A valid upgrade request's headers (lower-case names); None removes a header."""
    headers = {
        "host": "server.example.com",
        "upgrade": "websocket",
        "connection": "Upgrade",
        "sec-websocket-key": KEY,
        "sec-websocket-version": "13",
    }
    for name, value in overrides.items():
        name = name.replace("_", "-")
        if value is None:
            headers.pop(name, None)
        else:
            headers[name] = value
    return headers


def response_headers(**overrides: str | None) -> dict[str, str]:
    headers = {"upgrade": "websocket", "connection": "Upgrade", "sec-websocket-accept": ACCEPT}
    for name, value in overrides.items():
        name = name.replace("_", "-")
        if value is None:
            headers.pop(name, None)
        else:
            headers[name] = value
    return headers


class TestSection1_3AcceptKey:
    def test_rfc_example(self) -> None:
        assert accept_key(KEY) == ACCEPT

    def test_guid(self) -> None:
        assert GUID == "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class TestSection4_2_1ValidateRequest:
    def test_valid_request(self) -> None:
        result = validate_request("GET", "HTTP/1.1", request_headers())
        assert result == ClientRequest(key=KEY)

    @pytest.mark.parametrize("version", ["HTTP/1.1", "HTTP/2", "HTTP/2.0", "HTTP/3"])
    def test_http_versions(self, version: str) -> None:
        assert isinstance(validate_request("GET", version, request_headers()), ClientRequest)

    def test_subprotocols_extensions_and_origin(self) -> None:
        headers = request_headers(
            sec_websocket_protocol="chat, , superchat ",
            sec_websocket_extensions="permessage-deflate; client_max_window_bits",
            origin="http://example.com",
        )
        result = validate_request("GET", "HTTP/1.1", headers)
        assert result == ClientRequest(
            key=KEY,
            subprotocols=("chat", "superchat"),
            extensions="permessage-deflate; client_max_window_bits",
            origin="http://example.com",
        )

    @pytest.mark.parametrize(
        ("upgrade", "connection"),
        [
            ("WebSocket", "upgrade"),
            ("websocket, h2c", "keep-alive, Upgrade"),
            ("h2c,websocket", "Upgrade ,keep-alive"),
        ],
    )
    def test_token_lists_are_case_insensitive(self, upgrade: str, connection: str) -> None:
        headers = request_headers(upgrade=upgrade, connection=connection)
        assert isinstance(validate_request("GET", "HTTP/1.1", headers), ClientRequest)

    def test_key_and_version_whitespace(self) -> None:
        headers = request_headers(sec_websocket_key=f" {KEY} ", sec_websocket_version=" 13")
        result = validate_request("GET", "HTTP/1.1", headers)
        assert isinstance(result, ClientRequest) and result.key == KEY

    @pytest.mark.parametrize("method", ["POST", "HEAD", "get"])
    def test_method_not_get(self, method: str) -> None:
        assert validate_request(method, "HTTP/1.1", request_headers()) == Rejection(
            405, "WebSocket handshakes must use GET", (("Allow", "GET"),)
        )

    @pytest.mark.parametrize("version", ["HTTP/1.0", "HTTP/0.9", ""])
    def test_http_before_1_1(self, version: str) -> None:
        result = validate_request("GET", version, request_headers())
        assert isinstance(result, Rejection) and result.status == 400

    @pytest.mark.parametrize("upgrade", [None, "", "h2c", "websockets"])
    def test_missing_upgrade(self, upgrade: str | None) -> None:
        result = validate_request("GET", "HTTP/1.1", request_headers(upgrade=upgrade))
        assert isinstance(result, Rejection)
        assert result.status == 426
        assert result.headers == (("Upgrade", "websocket"), ("Connection", "Upgrade"))

    @pytest.mark.parametrize("connection", [None, "keep-alive", "close, upgraded"])
    def test_missing_connection_upgrade(self, connection: str | None) -> None:
        result = validate_request("GET", "HTTP/1.1", request_headers(connection=connection))
        assert result == Rejection(400, "missing 'Connection: Upgrade' header")

    @pytest.mark.parametrize("version", [None, "8", "12", "13, 8", ""])
    def test_bad_version(self, version: str | None) -> None:
        headers = request_headers(sec_websocket_version=version)
        result = validate_request("GET", "HTTP/1.1", headers)
        assert isinstance(result, Rejection)
        assert result.status == 426
        # Section 4.4: tell the client which version we speak.
        assert result.headers == (("Sec-WebSocket-Version", "13"),)

    @pytest.mark.parametrize(
        "key",
        [
            None,
            "",
            "not base64!!",
            "dGhlIHNhbXBsZSBub25jZQ",  # 16 bytes, padding missing
            base64.b64encode(bytes(15)).decode(),
            base64.b64encode(bytes(17)).decode(),
            "\u00e9" * 24,
        ],
    )
    def test_bad_key(self, key: str | None) -> None:
        result = validate_request("GET", "HTTP/1.1", request_headers(sec_websocket_key=key))
        assert result == Rejection(400, "Sec-WebSocket-Key must be 16 bytes, base64-encoded")

    @pytest.mark.parametrize(
        "protocols",
        [
            "chat\r\x00Origin: evil",  # found by fuzzing: accept() echoed the bare CR in the 101
            "chat, super chat",
            "chat/1",
            "chat\x7f",
            "\u00e9chat",
            'chat, "quoted"',
        ],
    )
    def test_subprotocols_must_be_tokens(self, protocols: str) -> None:
        headers = request_headers(sec_websocket_protocol=protocols)
        result = validate_request("GET", "HTTP/1.1", headers)
        assert result == Rejection(400, "Sec-WebSocket-Protocol must be a list of tokens")

    def test_every_token_character_is_allowed_in_a_subprotocol(self) -> None:
        token = "!#$%&'*+-.^_`|~09AZaz"
        headers = request_headers(sec_websocket_protocol=f"{token}, v2.chat")
        result = validate_request("GET", "HTTP/1.1", headers)
        assert isinstance(result, ClientRequest) and result.subprotocols == (token, "v2.chat")


class TestSection4_2_2Accept:
    def request(self, **headers: str | None) -> ClientRequest:
        result = validate_request("GET", "HTTP/1.1", request_headers(**headers))
        assert isinstance(result, ClientRequest)
        return result

    def test_plain(self) -> None:
        result = accept(self.request())
        assert result == Accepted(
            (("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Accept", ACCEPT))
        )
        assert result.subprotocol is None and result.deflate is None

    def test_subprotocol(self) -> None:
        result = accept(self.request(sec_websocket_protocol="a, b"), subprotocol="b")
        assert isinstance(result, Accepted)
        assert result.subprotocol == "b"
        assert ("Sec-WebSocket-Protocol", "b") in result.headers

    def test_subprotocol_not_offered(self) -> None:
        with pytest.raises(InvalidState, match="not offered"):
            accept(self.request(sec_websocket_protocol="a, b"), subprotocol="c")
        with pytest.raises(InvalidState):
            accept(self.request(), subprotocol="a")

    def test_deflate_negotiated(self) -> None:
        request = self.request(sec_websocket_extensions="permessage-deflate")
        result = accept(request, deflate=DeflateConfig())
        assert isinstance(result, Accepted)
        assert result.headers[-1] == ("Sec-WebSocket-Extensions", "permessage-deflate")
        assert isinstance(result.deflate, PerMessageDeflate)

    def test_deflate_not_offered(self) -> None:
        result = accept(self.request(), deflate=DeflateConfig())
        assert isinstance(result, Accepted)
        assert result.deflate is None
        assert all(name != "Sec-WebSocket-Extensions" for name, _ in result.headers)

    def test_deflate_offered_but_not_configured(self) -> None:
        result = accept(self.request(sec_websocket_extensions="permessage-deflate"))
        assert isinstance(result, Accepted) and result.deflate is None
        assert len(result.headers) == 3

    def test_unparsable_extensions_header(self) -> None:
        request = self.request(sec_websocket_extensions='permessage-deflate; x="unterminated')
        result = accept(request, deflate=DeflateConfig())
        assert isinstance(result, Rejection)
        assert result.status == 400
        assert "unterminated" in result.reason


class TestPEP3333HeadersFromEnviron:
    def test_pep_3333_environ(self) -> None:
        environ: dict[str, object] = {
            "REQUEST_METHOD": "GET",
            "CONTENT_TYPE": "text/plain",
            "HTTP_HOST": "example.com",
            "HTTP_SEC_WEBSOCKET_KEY": KEY,
            "HTTP_UPGRADE": "websocket",
            "HTTP_X_NOT_A_STRING": 42,
            "wsgi.input": object(),
        }
        assert headers_from_environ(environ) == {
            "host": "example.com",
            "sec-websocket-key": KEY,
            "upgrade": "websocket",
        }

    def test_feeds_validate_request(self) -> None:
        environ = {"HTTP_" + k.upper().replace("-", "_"): v for k, v in request_headers().items()}
        headers = headers_from_environ(environ)
        assert validate_request("GET", "HTTP/1.1", headers) == ClientRequest(key=KEY)


class TestSection4_2_2SerializeResponse:
    def test_101(self, wire: ModuleType) -> None:
        data = serialize_response(101, [("Upgrade", "websocket"), ("Sec-WebSocket-Accept", ACCEPT)])
        assert data == (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
        )

    def test_rejection_with_body(self, wire: ModuleType) -> None:
        data = serialize_response(426, [("Sec-WebSocket-Version", "13")], b"upgrade!")
        start, headers, body = wire.parse_http(data)
        assert start == "HTTP/1.1 426 Upgrade Required"
        assert headers == {"sec-websocket-version": "13", "content-length": "8"}
        assert body == b"upgrade!"

    def test_unknown_status(self, wire: ModuleType) -> None:
        start, headers, body = wire.parse_http(serialize_response(418, []))
        assert start == "HTTP/1.1 418 Error"
        assert headers == {"content-length": "0"}
        assert body == b""


class TestSection4_1ClientHandshake:
    def test_build_request(self, wire: ModuleType) -> None:
        key, data = build_request(
            "example.com:8000",
            "/chat?room=1",
            subprotocols=["mlsockets.json.v1", "mlsockets.msgpack.v1"],
            deflate=DeflateConfig(),
            extra_headers=[("Origin", "http://example.com"), ("Cookie", "a=b")],
            key=KEY,
        )
        assert key == KEY
        start, headers, body = wire.parse_http(data)
        assert start == "GET /chat?room=1 HTTP/1.1"
        assert headers == {
            "host": "example.com:8000",
            "upgrade": "websocket",
            "connection": "Upgrade",
            "sec-websocket-key": KEY,
            "sec-websocket-version": "13",
            "sec-websocket-protocol": "mlsockets.json.v1, mlsockets.msgpack.v1",
            "sec-websocket-extensions": "permessage-deflate; client_max_window_bits",
            "origin": "http://example.com",
            "cookie": "a=b",
        }
        assert body == b""

    def test_random_key(self, wire: ModuleType) -> None:
        key1, data = build_request("h", "/")
        key2, _ = build_request("h", "/")
        assert key1 != key2
        assert len(base64.b64decode(key1, validate=True)) == 16
        _, headers, _ = wire.parse_http(data)
        assert headers["sec-websocket-key"] == key1
        assert "sec-websocket-protocol" not in headers
        assert "sec-websocket-extensions" not in headers

    @pytest.mark.parametrize(
        ("subprotocols", "chosen"), [((), None), (("a", "b"), None), (("a", "b"), "b")]
    )
    @pytest.mark.parametrize(
        ("client_deflate", "server_deflate", "negotiated"),
        [
            (None, None, False),
            (DeflateConfig(), None, False),
            (None, DeflateConfig(), False),
            (DeflateConfig(), DeflateConfig(), True),
            (DeflateConfig(client_max_window_bits=10), DeflateConfig(), True),
        ],
    )
    def test_round_trip(
        self,
        wire: ModuleType,
        subprotocols: tuple[str, ...],
        chosen: str | None,
        client_deflate: DeflateConfig | None,
        server_deflate: DeflateConfig | None,
        negotiated: bool,
    ) -> None:
        key, data = build_request(
            "example.com", "/ws", subprotocols=subprotocols, deflate=client_deflate
        )
        start, headers, _ = wire.parse_http(data)
        method, _, version = start.split(" ")
        request = validate_request(method, version, headers)
        assert isinstance(request, ClientRequest)
        accepted = accept(request, subprotocol=chosen, deflate=server_deflate)
        assert isinstance(accepted, Accepted)
        start, headers, body = wire.parse_http(serialize_response(101, accepted.headers))
        assert start == "HTTP/1.1 101 Switching Protocols" and body == b""
        subprotocol, codec = check_response(
            101, headers, key, subprotocols=subprotocols, deflate=client_deflate
        )
        assert subprotocol == chosen == accepted.subprotocol
        assert (codec is not None) is negotiated is (accepted.deflate is not None)
        if codec is not None:
            # Each side compresses with the window the other decompresses with.
            assert accepted.deflate is not None
            assert codec.local_max_window_bits == accepted.deflate.remote_max_window_bits
            assert codec.remote_max_window_bits == accepted.deflate.local_max_window_bits

    def test_refused(self) -> None:
        with pytest.raises(InvalidHandshake) as info:
            check_response(403, {}, KEY)
        assert info.value.status == 403
        assert "403" in info.value.reason

    @pytest.mark.parametrize(
        ("headers", "message"),
        [
            (response_headers(upgrade=None), "Upgrade"),
            (response_headers(upgrade="h2c"), "Upgrade"),
            (response_headers(connection=None), "Connection"),
            (response_headers(connection="keep-alive"), "Connection"),
            (response_headers(sec_websocket_accept=None), "Sec-WebSocket-Accept"),
            (response_headers(sec_websocket_accept=accept_key("other")), "Sec-WebSocket-Accept"),
            (response_headers(sec_websocket_protocol="chat"), "not offered: chat"),
            (
                response_headers(sec_websocket_extensions="permessage-deflate"),
                "extension that was not offered",
            ),
        ],
    )
    def test_bad_response(self, headers: dict[str, str], message: str) -> None:
        with pytest.raises(InvalidHandshake, match=message) as info:
            check_response(101, headers, KEY)
        assert info.value.status == 400

    def test_subprotocol_must_be_one_offered(self) -> None:
        headers = response_headers(sec_websocket_protocol="c")
        with pytest.raises(InvalidHandshake):
            check_response(101, headers, KEY, subprotocols=["a", "b"])
        assert check_response(101, headers, KEY, subprotocols=["c"]) == ("c", None)

    def test_tokens_are_case_insensitive(self) -> None:
        headers = response_headers(upgrade="WebSocket", connection="keep-alive, UPGRADE")
        assert check_response(101, headers, KEY) == (None, None)

    def test_empty_extensions_header_without_deflate(self) -> None:
        headers = response_headers(sec_websocket_extensions="")
        assert check_response(101, headers, KEY) == (None, None)

    def test_deflate_declined(self) -> None:
        assert check_response(101, response_headers(), KEY, deflate=DeflateConfig()) == (
            None,
            None,
        )

    def test_deflate_accepted_wrongly(self) -> None:
        headers = response_headers(sec_websocket_extensions="permessage-deflate; foo")
        with pytest.raises(InvalidHandshake, match="invalid permessage-deflate response"):
            check_response(101, headers, KEY, deflate=DeflateConfig())
