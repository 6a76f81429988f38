"""RFC 6455 sections 7.1.7 and 7.4 over a real socket: a peer's protocol error fails the
connection with the right close code, then the server closes TCP (section 7.1.1)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import pytest
from gevent.queue import Queue
from wsclients import (
    BINARY,
    CLOSE,
    PING,
    PONG,
    TEXT,
    RawClient,
    close_payload,
    frame,
    url,
    ws_connect,
)

from mlsockets.transport.gevent import WebSocket

closed: Queue[tuple[Any, ...]] = Queue()


def echo_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    def echo(ws: WebSocket) -> None:
        for message in ws:
            ws.send(message)
        closed.put((ws.close_code, ws.close_reason))

    environ["mlsockets.upgrade"].accept(handler=echo)
    return []


@pytest.fixture
def client(serve: Any) -> Iterable[RawClient]:
    while not closed.empty():
        closed.get()
    server = serve(echo_app, max_message_size=1024)
    with RawClient(server.addresses[0]) as c:
        c.handshake()
        yield c


def expect_failure(client: RawClient, code: int) -> None:
    reply = client.recv_frame()
    assert (reply.opcode, reply.close_code) == (CLOSE, code)
    assert client.at_eof()  # failed: the server closes TCP without waiting for an answer


class TestFailures:
    def test_unmasked_client_frame_is_1002(self, client: RawClient) -> None:
        client.send_frame(TEXT, b"naked", mask=None)
        expect_failure(client, 1002)

    def test_invalid_utf8_is_1007(self, client: RawClient) -> None:
        client.send_frame(TEXT, b"caf\xc3")
        expect_failure(client, 1007)

    def test_invalid_utf8_across_fragments_is_1007(self, client: RawClient) -> None:
        client.send_frame(TEXT, b"ok", fin=False)
        client.send_frame(0, b"\xff", fin=False)
        expect_failure(client, 1007)

    def test_message_over_max_message_size_is_1009(self, client: RawClient) -> None:
        client.send_frame(BINARY, b"small")
        assert client.recv_frame().payload == b"small"
        client.send_frame(BINARY, b"x" * 1025)
        expect_failure(client, 1009)

    def test_fragmented_message_over_the_limit_is_1009(self, client: RawClient) -> None:
        for _ in range(3):
            client.send_frame(BINARY if _ == 0 else 0, b"x" * 500, fin=False)
        expect_failure(client, 1009)

    def test_reserved_opcode_is_1002(self, client: RawClient) -> None:
        client.send_frame(0x3, b"?")
        expect_failure(client, 1002)

    @pytest.mark.parametrize(
        ("data", "code", "reason"),
        [
            (frame(TEXT, b"naked", mask=None), 1002, "unmasked frame from a client"),
            (frame(TEXT, b"\xff"), 1007, "invalid UTF-8 in a text message"),
            (frame(BINARY, b"x" * 1025), 1009, "message larger than 1024 bytes"),
        ],
    )
    def test_handler_sees_the_code_it_failed_with(
        self, client: RawClient, data: bytes, code: int, reason: str
    ) -> None:
        client.send(data)
        expect_failure(client, code)
        assert closed.get(timeout=5) == (code, reason)


class TestClosingHandshake:
    def test_server_echoes_close_and_closes_tcp(self, client: RawClient) -> None:
        client.send_frame(CLOSE, close_payload(4000, "done"))
        reply = client.recv_frame()
        assert (reply.opcode, reply.close_code) == (CLOSE, 4000)  # section 5.5.1: echo
        assert client.at_eof()
        assert closed.get(timeout=5) == (4000, "done")

    def test_ping_is_answered_with_pong(self, client: RawClient) -> None:
        client.send_frame(PING, b"are you there")
        reply = client.recv_frame()
        assert (reply.opcode, reply.payload) == (PONG, b"are you there")
        client.send_frame(CLOSE, close_payload(1000))
        assert client.recv_frame().opcode == CLOSE
        assert client.at_eof()


def test_websockets_client_sees_1009(serve: Any) -> None:
    from websockets.exceptions import ConnectionClosedError as ClientClosedError

    server = serve(echo_app, max_message_size=1024)
    with ws_connect(url(server)) as c:
        c.send("y" * 2048)
        with pytest.raises(ClientClosedError) as info:
            c.recv(timeout=5)
    assert info.value.rcvd is not None and info.value.rcvd.code == 1009
