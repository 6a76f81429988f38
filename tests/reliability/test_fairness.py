"""One connection's backlog does not hold the whole process (the fix found by the SIGTERM
scenario: a publisher's queued broadcasts kept signals and every other connection waiting).

A callback-mode handler that never yields (here: 20 ms of CPU per message, like a broadcast
to thousands) gets a burst of 20 messages on one connection; once it started on them, another
connection sends one message. The worker yields to the loop once per ``FAIR_SLICE`` (10 ms),
so the other message is handled after a few of the burst, not after all 20. Order, not time,
is asserted.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import gevent

from benchmarks.soak import wire
from mlsockets.transport.gevent import Server, ServerOptions
from mlsockets.transport.gevent.connection import FAIR_SLICE


def test_a_busy_connection_yields_to_the_others() -> None:
    handled: list[str] = []

    def busy(ws: Any, message: str | bytes) -> None:
        handled.append(str(message))
        end = time.perf_counter() + 2 * FAIR_SLICE
        while time.perf_counter() < end:  # CPU work that never yields to the hub
            pass
        ws.send(message)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        environ["mlsockets.upgrade"].accept(on_message=busy)
        return []

    server = Server(app, ["127.0.0.1:0"], options=ServerOptions(ping_interval=None))
    server.start()
    url = f"ws://127.0.0.1:{server.addresses[0][1]}/"
    try:
        burst, other = wire.Client(url), wire.Client(url)
        burst.send(b"".join(wire.frame(wire.TEXT, b"a%d" % i) for i in range(20)))
        with gevent.Timeout(30):
            while not handled:  # this greenlet runs again only when the busy worker yields
                gevent.sleep(0.001)
            other.send(wire.frame(wire.TEXT, b"b"))
            assert other.recv_frame() == (True, wire.TEXT, b"b")
            for i in range(20):
                assert burst.recv_frame() == (True, wire.TEXT, b"a%d" % i)
        assert handled.index("b") < 10, handled  # without yielding: after all 20
        burst.close()
        other.close()
    finally:
        server.shutdown(grace=1.0)
