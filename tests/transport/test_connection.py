"""The blocking ``ws`` object a raw endpoint's handler gets: receive, iterate, send, close."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import gevent
import pytest
from gevent.event import Event
from gevent.queue import Queue
from websockets.exceptions import ConnectionClosed as ClientClosed
from wsclients import BINARY, CLOSE, TEXT, RawClient, close_payload, frame, request, url, ws_connect

from mlsockets.exceptions import ConnectionClosed, ConnectionClosedError, ConnectionClosedOK
from mlsockets.transport.gevent import WebSocket

Handler = Callable[[WebSocket], object]


def accepting(handler: Handler) -> Callable[..., Iterable[bytes]]:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        environ["mlsockets.upgrade"].accept(handler=handler)
        return []

    return app


def test_receive_returns_str_bytes_then_none(serve: Any) -> None:
    received: Queue[object] = Queue()

    def handler(ws: WebSocket) -> None:
        for _ in range(4):
            received.put(ws.receive())
        received.put(ws.closed)

    server = serve(accepting(handler))
    with ws_connect(url(server)) as client:
        client.send("text é")
        client.send(b"\x00\xffbytes")
        client.send(["frag", "mented"])
    assert [received.get(timeout=5) for _ in range(5)] == [
        "text é",
        b"\x00\xffbytes",
        "fragmented",
        None,
        True,
    ]


def test_iteration_ends_when_the_client_closes(serve: Any) -> None:
    done: Queue[list[object]] = Queue()

    def handler(ws: WebSocket) -> None:
        done.put(list(ws))

    server = serve(accepting(handler))
    with ws_connect(url(server)) as client:
        for i in range(5):
            client.send(f"m{i}")
    assert done.get(timeout=5) == ["m0", "m1", "m2", "m3", "m4"]


def test_send_types(serve: Any) -> None:
    def handler(ws: WebSocket) -> None:
        ws.send("text")
        ws.send(b"binary")
        ws.send("text as binary", binary=True)
        ws.send(b"utf-8 bytes as text", binary=False)
        ws.send(bytearray(b"bytearray"))
        ws.send(memoryview(b"memoryview"))
        ws.receive()

    server = serve(accepting(handler))
    with RawClient(server.addresses[0]) as client:
        client.handshake()
        frames = [client.recv_frame() for _ in range(6)]
    assert [(f.opcode, f.payload) for f in frames] == [
        (TEXT, b"text"),
        (BINARY, b"binary"),
        (BINARY, b"text as binary"),
        (TEXT, b"utf-8 bytes as text"),
        (BINARY, b"bytearray"),
        (BINARY, b"memoryview"),
    ]
    assert all(f.fin and not f.masked and not f.rsv1 for f in frames)


def test_close_sends_code_and_reason(serve: Any) -> None:
    after: Queue[object] = Queue()

    def handler(ws: WebSocket) -> None:
        ws.close(4001, "go away")
        after.put((ws.closed, ws.close_code))
        try:
            ws.send("too late")
        except ConnectionClosed as exc:
            after.put(exc)

    server = serve(accepting(handler))
    with ws_connect(url(server)) as client:
        with pytest.raises(ClientClosed) as info:
            client.recv(timeout=5)
    assert info.value.rcvd is not None
    assert (info.value.rcvd.code, info.value.rcvd.reason) == (4001, "go away")
    assert after.get(timeout=5) == (True, 4001)
    exc = after.get(timeout=5)
    assert isinstance(exc, ConnectionClosedError)
    assert exc.code == 4001


def test_send_after_normal_close_raises_closed_ok(serve: Any) -> None:
    after: Queue[object] = Queue()

    def handler(ws: WebSocket) -> None:
        assert ws.receive() is None
        try:
            ws.send("too late")
        except ConnectionClosed as exc:
            after.put(exc)

    server = serve(accepting(handler))
    with ws_connect(url(server)) as client:
        client.close(1001, "leaving")
    exc = after.get(timeout=5)
    assert isinstance(exc, ConnectionClosedOK)
    assert (exc.code, exc.reason) == (1001, "leaving")


def test_send_after_abrupt_disconnect_raises_closed_error(serve: Any) -> None:
    after: Queue[object] = Queue()

    def handler(ws: WebSocket) -> None:
        assert ws.receive() is None
        after.put(ws.close_code)
        try:
            ws.send("too late")
        except ConnectionClosed as exc:
            after.put(exc)

    server = serve(accepting(handler))
    client = RawClient(server.addresses[0])
    client.handshake()
    client.abort()
    assert after.get(timeout=5) == 1006
    exc = after.get(timeout=5)
    assert isinstance(exc, ConnectionClosedError)
    assert exc.code == 1006


def test_handler_returning_closes_normally(serve: Any) -> None:
    server = serve(accepting(lambda ws: ws.send("bye")))
    with RawClient(server.addresses[0]) as client:
        client.handshake()
        assert client.recv_frame().payload == b"bye"
        closing = client.recv_frame()
        assert (closing.opcode, closing.close_code) == (CLOSE, 1000)
        client.send_frame(CLOSE, close_payload(1000))
        assert client.at_eof()


def test_handler_exception_closes_with_1011(serve: Any, caplog: pytest.LogCaptureFixture) -> None:
    def handler(ws: WebSocket) -> None:
        raise RuntimeError("secret detail")

    server = serve(accepting(handler))
    with RawClient(server.addresses[0]) as client:
        client.handshake()
        closing = client.recv_frame()
        assert (closing.opcode, closing.close_code) == (CLOSE, 1011)
        assert "secret" not in closing.close_reason
        assert client.at_eof()
    assert any(r.exc_info and "secret detail" in str(r.exc_info[1]) for r in caplog.records)


def test_inline_app_exception_after_accept_closes_with_1011(
    serve: Any, caplog: pytest.LogCaptureFixture
) -> None:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        ws = environ["mlsockets.upgrade"].accept()
        ws.send("accepted")
        raise RuntimeError("secret detail")

    server = serve(app)
    with RawClient(server.addresses[0]) as client:
        client.handshake()
        assert client.recv_frame().payload == b"accepted"
        closing = client.recv_frame()
        assert (closing.opcode, closing.close_code) == (CLOSE, 1011)
        assert "secret" not in closing.close_reason
        assert client.at_eof()
    assert any(r.exc_info and "secret detail" in str(r.exc_info[1]) for r in caplog.records)


def test_app_exception_after_accepting_with_a_handler_is_a_500(serve: Any) -> None:
    """No 101 was sent yet, so the failure is still an HTTP answer."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        environ["mlsockets.upgrade"].accept(handler=lambda ws: None)
        raise RuntimeError("secret detail")

    server = serve(app)
    with RawClient(server.addresses[0]) as client:
        client.send(request())
        response = client.read_response()
        assert response.status == 500
        assert b"101" not in response.head
        assert b"secret" not in response.body


@pytest.mark.parametrize("inline", [False, True], ids=["deferred", "inline"])
def test_frames_pipelined_with_the_handshake_are_not_lost(serve: Any, inline: bool) -> None:
    def echo(ws: Any) -> None:
        for message in ws:
            ws.send(message)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        upgrade = environ["mlsockets.upgrade"]
        if inline:
            echo(upgrade.accept())
        else:
            upgrade.accept(handler=echo)
        return []

    server = serve(app)
    with RawClient(server.addresses[0]) as client:
        # One sendall: the request head and three frames arrive in the same TCP segment.
        client.send(
            request()
            + frame(TEXT, b"first")
            + frame(BINARY, b"second")
            + frame(TEXT, b"third", fin=False)
        )
        assert client.read_response().status == 101
        assert [client.recv_frame()[2:4] for _ in range(2)] == [
            (TEXT, b"first"),
            (BINARY, b"second"),
        ]
        client.send_frame(0, b" part")
        assert client.recv_frame()[2:4] == (TEXT, b"third part")


def test_concurrent_senders_share_one_connection(serve: Any) -> None:
    def send_50(ws: WebSocket, n: int) -> None:
        for i in range(50):
            ws.send(f"{n}:{i}")
            gevent.sleep(0)

    def handler(ws: WebSocket) -> None:
        gevent.joinall([gevent.spawn(send_50, ws, n) for n in range(4)], raise_error=True)
        ws.receive()

    server = serve(accepting(handler))
    with ws_connect(url(server)) as client:
        got = [client.recv(timeout=5) for _ in range(200)]
    for n in range(4):
        assert [m for m in got if m.startswith(f"{n}:")] == [f"{n}:{i}" for i in range(50)]


def echo_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    def echo(ws: WebSocket) -> None:
        for message in ws:
            ws.send(message)

    environ["mlsockets.upgrade"].accept(handler=echo)
    return []


@pytest.mark.parametrize("abrupt", [False, True], ids=["fin", "rst"])
@pytest.mark.usefixtures("no_hang")
def test_client_leaving_while_a_reply_is_queued(serve: Any, abrupt: bool) -> None:
    """Regression: the reader saw EOF while the echo's flush was still scheduled, then read
    EOF again and again without yielding, so the flush (and the whole process) never ran."""
    server = serve(echo_app)
    client = RawClient(server.addresses[0])
    client.handshake()
    client.send(frame(TEXT, b"last words"))
    client.abort() if abrupt else client.close()
    with gevent.Timeout(5):
        while server.reaper.connections:
            gevent.sleep(0.01)


@pytest.mark.usefixtures("no_hang")
def test_handler_returning_after_the_peer_left_during_shutdown(serve: Any) -> None:
    """Regression: shutdown queued a Close for a peer that was already gone; the handler,
    resumed first, read EOF in a loop that starved the flush."""
    wake = Event()
    members: Queue[WebSocket] = Queue()

    def handler(ws: WebSocket) -> None:
        members.put(ws)
        wake.wait()

    server = serve(accepting(handler))
    with RawClient(server.addresses[0]) as client:
        client.handshake()
        ws = members.get(timeout=5)
    gevent.sleep(0.05)  # the FIN arrives; nobody reads it yet
    wake.set()  # the handler resumes first (its callback is scheduled first)...
    ws.close(1001, "shutting down", wait=False)  # ...while this Close waits for its flush
    with gevent.Timeout(5):
        while server.reaper.connections:
            gevent.sleep(0.01)
    assert ws.close_code == 1006
