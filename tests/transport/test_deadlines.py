"""Heartbeats and deadlines, all run by the server's reaper: pings and the pong timeout
(1011), the request-head deadline (slowloris), and the close timeout."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import gevent
import pytest
from gevent.event import Event
from gevent.queue import Queue
from wsclients import CLOSE, PING, PONG, TEXT, RawClient, close_payload, url, ws_connect

from mlsockets.transport.gevent import WebSocket

HEARTBEAT = {"ping_interval": 0.1, "ping_timeout": 0.3}


def echo_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    def echo(ws: WebSocket) -> None:
        for message in ws:
            ws.send(message)

    environ["mlsockets.upgrade"].accept(handler=echo)
    return []


class TestHeartbeat:
    def test_websockets_client_answers_pings_and_stays_open(
        self, serve: Any, caplog: pytest.LogCaptureFixture
    ) -> None:
        server = serve(echo_app, **HEARTBEAT)
        caplog.set_level(logging.DEBUG, logger="websockets.client")
        with ws_connect(url(server)) as client:
            with gevent.Timeout(10):
                # Idle long enough for several pings, each answered by websockets' reader.
                while sum("< PING" in r.getMessage() for r in caplog.records) < 3:
                    gevent.sleep(0.05)
            assert sum("> PONG" in r.getMessage() for r in caplog.records) >= 3
            client.send("still open")
            assert client.recv(timeout=5) == "still open"
            (ws,) = server.reaper.connections
            assert not ws.closed

    def test_raw_client_answering_pongs_stays_open(self, serve: Any) -> None:
        server = serve(echo_app, **HEARTBEAT)
        with RawClient(server.addresses[0]) as client:
            client.handshake()
            for _ in range(4):
                ping = client.recv_frame()
                assert ping.opcode == PING
                client.send_frame(PONG, ping.payload)
            client.send_frame(TEXT, b"alive")
            assert client.recv_until(TEXT).payload == b"alive"

    def test_idle_handler_not_reading_still_sees_pongs(self, serve: Any) -> None:
        """The reaper polls connections whose handler is not inside receive()."""
        stop = Event()

        def idle(ws: WebSocket) -> None:
            stop.wait()

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            environ["mlsockets.upgrade"].accept(handler=idle)
            return []

        server = serve(app, **HEARTBEAT)
        try:
            with RawClient(server.addresses[0]) as client:
                client.handshake()
                for _ in range(4):
                    ping = client.recv_frame()
                    assert ping.opcode == PING
                    client.send_frame(PONG, ping.payload)
                (ws,) = server.reaper.connections
                assert not ws.closed
        finally:
            stop.set()

    @pytest.mark.parametrize("reading", [True, False], ids=["handler-reading", "handler-idle"])
    def test_no_pong_closes_with_1011(self, serve: Any, reading: bool) -> None:
        stop = Event()
        codes: Queue[int | None] = Queue()

        def handler(ws: WebSocket) -> None:
            if reading:
                assert ws.receive() is None
            else:
                stop.wait()
            codes.put(ws.close_code)

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            environ["mlsockets.upgrade"].accept(handler=handler)
            return []

        server = serve(app, **HEARTBEAT)
        try:
            with RawClient(server.addresses[0]) as client:
                client.handshake()
                assert client.recv_frame().opcode == PING  # never answered
                closing = client.recv_until(CLOSE)
                assert closing.close_code == 1011
                assert client.at_eof()
            stop.set()
            assert codes.get(timeout=5) == 1011
        finally:
            stop.set()

    def test_no_pings_when_heartbeat_is_off(self, serve: Any) -> None:
        server = serve(echo_app, ping_interval=None)
        with RawClient(server.addresses[0], timeout=0.5) as client:
            client.handshake()
            with pytest.raises(TimeoutError):
                client.recv_frame()
            client.send_frame(TEXT, b"x")
            assert client.recv_frame().payload == b"x"


class TestRequestHeadDeadline:
    @pytest.mark.parametrize(
        "sent",
        [b"", b"GET / HTTP/1.1\r\nHost: local", b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n"],
        ids=["nothing", "half-a-header", "half-a-handshake"],
    )
    def test_slowloris_is_disconnected(self, serve: Any, sent: bytes) -> None:
        called = []

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            called.append(environ)
            start_response("200 OK", [])
            return []

        server = serve(app, handshake_timeout=0.2)
        with RawClient(server.addresses[0], timeout=10) as client:
            client.send(sent)
            assert client.read_to_eof() == b""  # closed without an answer
        assert called == []

    def test_idle_keep_alive_connection_is_closed(self, serve: Any) -> None:
        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            start_response("200 OK", [("Content-Length", "2")])
            return [b"ok"]

        server = serve(app, handshake_timeout=0.2)
        with RawClient(server.addresses[0], timeout=10) as client:
            client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert client.read_response().body == b"ok"
            assert client.read_to_eof() == b""  # no next request head within the deadline

    def test_deadline_does_not_cut_an_accepted_websocket(self, serve: Any) -> None:
        server = serve(echo_app, handshake_timeout=0.1)
        with ws_connect(url(server)) as client:
            gevent.sleep(0.4)
            client.send("after the head deadline")
            assert client.recv(timeout=5) == "after the head deadline"


class TestCloseTimeout:
    def test_client_that_never_answers_close_is_disconnected(self, serve: Any) -> None:
        returned: Queue[int | None] = Queue()

        def handler(ws: WebSocket) -> None:
            ws.close(1000, "bye")  # waits for the peer's Close, at most close_timeout
            returned.put(ws.close_code)

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            environ["mlsockets.upgrade"].accept(handler=handler)
            return []

        server = serve(app, close_timeout=0.2)
        with RawClient(server.addresses[0], timeout=10) as client:
            client.handshake()
            closing = client.recv_frame()
            assert closing.opcode == CLOSE
            assert (closing.close_code, closing.close_reason) == (1000, "bye")
            assert client.at_eof()  # never answered: dropped at the deadline
        assert returned.get(timeout=5) == 1006
        assert server.reaper.connections == set()

    def test_close_without_wait_from_another_greenlet(self, serve: Any) -> None:
        """The shutdown path: close(wait=False) while the handler is blocked in receive()."""
        members: Queue[WebSocket] = Queue()

        def handler(ws: WebSocket) -> None:
            members.put(ws)
            while ws.receive() is not None:
                pass

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            environ["mlsockets.upgrade"].accept(handler=handler)
            return []

        server = serve(app, close_timeout=0.2)
        with RawClient(server.addresses[0], timeout=10) as client:
            client.handshake()
            members.get(timeout=5).close(1001, "going", wait=False)
            assert client.recv_frame().close_code == 1001
            assert client.at_eof()

    def test_client_answering_close_is_closed_at_once(self, serve: Any) -> None:
        def handler(ws: WebSocket) -> None:
            ws.close(4002)

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            environ["mlsockets.upgrade"].accept(handler=handler)
            return []

        server = serve(app, close_timeout=30)  # the test would time out if the server waited
        with RawClient(server.addresses[0], timeout=10) as client:
            client.handshake()
            assert client.recv_frame().close_code == 4002
            client.send_frame(CLOSE, close_payload(4002))
            assert client.at_eof()
