"""STYLE.md principle 10: a client that stops reading is dropped (1008, a WARNING) once its
outbound queue passes ``max_queue``; it never stalls the sender or the other receivers."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import gevent
import pytest
from gevent.event import Event
from wsclients import RawClient, url, ws_connect

from mlsockets.exceptions import ConnectionClosedError
from mlsockets.transport.gevent import WebSocket, broadcast

CHUNK = 64 * 1024
MAX_QUEUE = 256 * 1024


def slow_consumer_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == "mlsockets.transport"
        and r.levelno == logging.WARNING
        and "slow consumer" in r.getMessage()
    ]


def test_handler_sending_to_a_client_that_does_not_read(
    serve: Any, caplog: pytest.LogCaptureFixture
) -> None:
    outcome: list[object] = []
    done = Event()

    def flood(ws: WebSocket) -> None:
        payload = b"x" * CHUNK
        try:
            while True:  # bounded by the test's gevent.Timeout below
                ws.send(payload)
                gevent.sleep(0)  # let the flush run, as any real producer would
        except ConnectionClosedError as exc:
            outcome.append(exc)
        outcome.append(ws.close_code)
        done.set()

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        environ["mlsockets.upgrade"].accept(handler=flood)
        return []

    server = serve(app, max_queue=MAX_QUEUE)
    with RawClient(server.addresses[0], rcvbuf=4096) as client:
        client.handshake()
        with gevent.Timeout(20):
            done.wait()
        assert client.at_eof()  # dropped without a closing handshake
    exc, code = outcome
    assert isinstance(exc, ConnectionClosedError) and exc.code == 1008
    assert code == 1008
    assert slow_consumer_warnings(caplog)
    assert server.reaper.connections == set()


@pytest.mark.parametrize("count", [MAX_QUEUE // CHUNK, 4 * MAX_QUEUE // CHUNK])
def test_a_burst_of_sends_without_yielding_does_not_drop_a_reading_client(
    serve: Any, caplog: pytest.LogCaptureFixture, count: int
) -> None:
    """Regression: bytes queued by a handler that has not yielded yet were never offered to
    the kernel, yet counted against ``max_queue``: a burst of 1 MiB dropped a reading client."""

    def burst(ws: WebSocket) -> None:
        for i in range(count):
            ws.send(bytes([i]) * CHUNK)
        ws.receive()

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        environ["mlsockets.upgrade"].accept(handler=burst)
        return []

    server = serve(app, max_queue=MAX_QUEUE, compression=None)
    with ws_connect(url(server), max_queue=None) as client:
        received = [client.recv(timeout=5) for _ in range(count)]
    assert [m[0] for m in received] == list(range(count))
    assert all(len(m) == CHUNK for m in received)
    assert not slow_consumer_warnings(caplog)


def test_broadcast_drops_the_slow_client_and_keeps_the_reading_one(
    serve: Any, caplog: pytest.LogCaptureFixture
) -> None:
    members: list[WebSocket] = []
    joined = Event()

    def member(ws: WebSocket) -> None:
        members.append(ws)
        if len(members) == 2:
            joined.set()
        ws.wait_closed()

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        environ["mlsockets.upgrade"].accept(handler=member)
        return []

    server = serve(app, max_queue=MAX_QUEUE, compression=None)
    with (
        RawClient(server.addresses[0], rcvbuf=4096) as slow,
        ws_connect(url(server), max_queue=None) as fast,
    ):
        slow.handshake()  # not read again until it is dropped
        with gevent.Timeout(10):
            joined.wait()
        slow_port = str(slow.sock.getsockname()[1])
        slow_ws, fast_ws = sorted(members, key=lambda ws: ws.environ["REMOTE_PORT"] != slow_port)
        received = [0]

        def read() -> None:
            while True:
                fast.recv()
                received[0] += 1

        reader = gevent.spawn(read)
        sent_while_slow_open = 0
        with gevent.Timeout(20):
            while not slow_ws.closed:
                broadcast(members, b"y" * CHUNK)
                sent_while_slow_open += 1
                gevent.sleep(0.002)
            # After the drop, the reading client still gets every broadcast.
            for _ in range(20):
                assert broadcast(members, b"z" * CHUNK) == 1
                gevent.sleep(0.002)
            total = sent_while_slow_open + 20
            while received[0] < total and not reader.dead:
                gevent.sleep(0.01)
        assert not reader.dead, reader.exception
        reader.kill()
        assert received[0] == total
        assert slow_ws.close_code == 1008
        assert not fast_ws.closed and fast_ws.close_code is None
        assert slow.at_eof()
        assert slow_consumer_warnings(caplog)
        fast.send("still here")  # and it is still a working connection
