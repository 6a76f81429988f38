"""Envelope fan-out through the hub versus raw fan-out, in one process and one run.

Usage: python benchmarks/fanout_envelope.py [N] [BROADCASTS]     (default 9000 20)

N per endpoint: both endpoints share one process, whose file descriptor limit here is 20,000.

The shared load generator holds N idle WebSocket connections on each of two endpoints
(``loadgen connect --hold``): ``/raw`` connections get ``broadcast()`` of a 32-byte text,
``/env`` connections are members of the hub channel ``bench`` and get
``hub.emit("m", <32-byte text>, to="bench")`` (a JSON envelope, encoded once). Each broadcast
is timed on the server from the call until every connection's output was handed to the kernel;
deliveries/s = N / that time (median over the broadcasts). The load generator reads and
discards what it receives (it counts the envelopes as unexpected messages; that is expected
here), so both sides pay the same receive cost and the ratio compares the server paths.
"""

from gevent import monkey

monkey.patch_all()

import os  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterable  # noqa: E402
from typing import Any  # noqa: E402

import gevent  # noqa: E402

from mlsockets import ANONYMOUS, ServerOptions  # noqa: E402
from mlsockets.formatters.base import FORMATTERS  # noqa: E402
from mlsockets.hub import Hub, HubOptions  # noqa: E402
from mlsockets.transport.gevent import Server, WebSocket, broadcast  # noqa: E402
from mlsockets.wsgi import HubConnection  # noqa: E402

LOADGEN = os.environ.get("LOADGEN", os.path.expanduser("~/.cache/mlsockets/bench/loadgen"))
JSON = FORMATTERS["mlsockets.json.v1"]
hub = Hub(options=HubOptions(heartbeat=None))
raw: list[WebSocket] = []
envelope: list[WebSocket] = []


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    upgrade = environ["mlsockets.upgrade"]
    if environ["PATH_INFO"] == "/raw":
        raw.append(upgrade.accept(on_message=lambda ws, m: None))
        return []
    conn = HubConnection(ANONYMOUS, JSON)

    def on_open(ws: Any) -> None:
        conn.ws = ws
        hub.connect(conn)
        hub.join(conn, "bench")
        envelope.append(ws)

    upgrade.accept(
        on_open=on_open,
        on_message=lambda ws, m: hub.receive(conn, m),
        on_close=lambda ws: hub.disconnect(conn),
    )
    return []


def drained(conns: list[WebSocket]) -> bool:
    return all(not ws._out and ws._writer is None for ws in conns)


def timed(fn: Callable[[], object], conns: list[WebSocket]) -> float:
    start = time.perf_counter()
    fn()
    gevent.sleep(0)  # run the flush callbacks
    while not drained(conns):
        gevent.sleep(0.001)
    return time.perf_counter() - start


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 9000
    m = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    options = ServerOptions(compression=None, ping_interval=None)
    server = Server(app, ["127.0.0.1:0"], options=options)
    server.start()
    port = server.addresses[0][1]
    holders = [
        subprocess.Popen(
            [
                LOADGEN,
                "connect",
                f"ws://127.0.0.1:{port}/{path}",
                "-n",
                str(n),
                "--hold",
                "600",
                "-q",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for path in ("raw", "env")
    ]
    try:
        deadline = time.monotonic() + 120
        while (len(raw) < n or len(envelope) < n) and time.monotonic() < deadline:
            gevent.sleep(0.2)
        if len(raw) < n or len(envelope) < n:
            raise SystemExit(f"only {len(raw)} raw and {len(envelope)} envelope connections")
        gevent.sleep(1)
        text = "B" + "0" * 31
        results: dict[str, list[float]] = {"raw": [], "envelope": []}
        for _ in range(m):  # interleaved, so both see the same machine
            results["raw"].append(timed(lambda: broadcast(raw, text), raw))
            results["envelope"].append(timed(lambda: hub.emit("m", text, to="bench"), envelope))
            gevent.sleep(0.05)
        rates = {k: n / statistics.median(v) for k, v in results.items()}
        print(f"connections per endpoint: {n}; broadcasts: {m} each (32 B payload)")
        for name, rate in rates.items():
            p50 = statistics.median(results[name]) * 1000
            print(
                f"{name:9s} {rate:12,.0f} deliveries/s   server time per broadcast p50 {p50:.1f} ms"
            )
        print(f"ratio envelope/raw: {rates['envelope'] / rates['raw']:.2f}x (target >= 0.8x)")
    finally:
        for p in holders:
            p.kill()
            p.wait()
        server.shutdown(grace=1)


if __name__ == "__main__":
    main()
