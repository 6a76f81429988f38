"""The harness's fan-out contract served through the mlsockets hub, locally or through Redis.

Standalone: ``python benchmarks/cluster_server.py [--redis URL] [--prefix P] [--publish
hub|emitter] PORT``.

Under gunicorn (one hub per worker, created after the fork; no ``--preload``)::

    BENCH_REDIS_URL=redis://127.0.0.1:16400/0 BENCH_PUBLISH=emitter \\
    MLSOCKETS_COMPRESSION=0 MLSOCKETS_PING_INTERVAL=0 PYTHONPATH=benchmarks \\
    gunicorn -k mlsockets.gunicorn.GeventWebSocketWorker -w 2 --worker-connections 20000 \\
        -b 127.0.0.1:PORT 'cluster_server:gunicorn_app()'

``/fanout`` (the shared load generator's contract, ../shared/tools/bench/README.md): every
connection joins the hub channel ``fanout``; a connection whose first message is ``pub``
becomes the publisher, and each later message it sends is published to ``fanout``, skipping
the publisher:

- ``--publish hub`` (default): ``hub.emit(...)`` in the publisher's process: its own members
  get it at once, the other processes' members through Redis (with ``--redis``);
- ``--publish emitter``: ``Emitter.emit(...)``: one PUBLISH to Redis and nothing else, as a
  Celery job or a view in a process with no WebSocket would do. Every member of every process
  gets it through Redis (relay greenlet -> hub -> transport), the publisher's process
  included: the whole cluster path for every delivery. Needs ``--redis``.

With ``--redis`` the hub has a RedisBroadcaster, so several of these processes on the same
Redis and prefix form one cluster.

Connections use a formatter that sends the envelope's ``data`` as is (the load generator
checks and times its own payload), so the only difference from a JSON client is that the
text is not wrapped in ``{"event": ...}``. System messages (``mls.welcome``) are not sent.
Each process prints ``PEAK pid=<pid> connections=<n>`` when its last connection closed, so a
script can see how gunicorn spread the connections over its workers.
"""

if __name__ == "__main__":  # gunicorn's worker patches before it imports the app
    from gevent import monkey

    monkey.patch_all()

import argparse  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
from collections.abc import Callable, Iterable  # noqa: E402
from typing import Any  # noqa: E402

from mlsockets import ANONYMOUS, ServerOptions  # noqa: E402
from mlsockets.broadcast.base import Broadcaster  # noqa: E402
from mlsockets.hub import Hub, HubOptions  # noqa: E402
from mlsockets.transport.gevent import Server  # noqa: E402
from mlsockets.wsgi import HubConnection  # noqa: E402

WSGIApp = Callable[..., Iterable[bytes]]
Publish = Callable[[str, str], None]


class RawData:
    """A formatter that sends an envelope's ``data`` string as a text message."""

    name = "raw"
    subprotocol = ""
    binary = False

    def encode(self, obj: Any) -> str:
        data = obj.get("data")
        return data if isinstance(data, str) else ""  # "" is never sent (see BenchConnection)

    def decode(self, message: str | bytes) -> object:
        raise ValueError("not an envelope")


class BenchConnection(HubConnection):
    __slots__ = ()

    def send(self, message: str | bytes) -> None:
        if message:
            super().send(message)


RAW = RawData()


class Counter:
    """Open connections of this process; prints the peak when the last one closed."""

    def __init__(self) -> None:
        self.open = self.peak = 0

    def opened(self) -> None:
        self.open += 1
        self.peak = max(self.peak, self.open)

    def closed(self) -> None:
        self.open -= 1
        if self.open == 0:
            print(f"PEAK pid={os.getpid()} connections={self.peak}", flush=True)
            self.peak = 0


def make_app(hub: Hub, publish: Publish) -> WSGIApp:
    """``publish(message, skip)`` sends one broadcast of the publisher's ``message``."""
    counter = Counter()

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        upgrade = environ.get("mlsockets.upgrade")
        if upgrade is None or environ["PATH_INFO"] != "/fanout":
            start_response("404 Not Found", [("Content-Length", "0")])
            return []
        conn = BenchConnection(ANONYMOUS, RAW)  # type: ignore[arg-type]
        role: dict[str, bool] = {}

        def on_open(ws: Any) -> None:
            conn.ws = ws
            counter.opened()
            hub.connect(conn)
            hub.join(conn, "fanout")

        def on_message(ws: Any, message: str | bytes) -> None:
            if "pub" not in role:
                role["pub"] = message == "pub"
                return
            if role["pub"] and isinstance(message, str):
                publish(message, conn.id)

        def on_close(ws: Any) -> None:
            hub.disconnect(conn)
            counter.closed()

        upgrade.accept(on_open=on_open, on_message=on_message, on_close=on_close)
        return []

    return app


def build(redis_url: str | None, prefix: str, mode: str) -> tuple[Hub, Publish]:
    """The process's hub and its way of publishing (``mode``: ``hub`` or ``emitter``)."""
    if mode not in ("hub", "emitter"):
        raise SystemExit(f"cluster_server: --publish must be hub or emitter, not {mode!r}")
    if mode == "emitter" and not redis_url:
        raise SystemExit("cluster_server: --publish emitter needs --redis")
    broadcaster: Broadcaster | None = None
    if redis_url:
        from mlsockets.broadcast.redis import RedisBroadcaster

        broadcaster = RedisBroadcaster.from_url(
            redis_url, prefix=prefix, presence=False, startup="fail"
        )
    hub = Hub(
        broadcaster=broadcaster,
        options=HubOptions(heartbeat=None, rate=1e9, burst=1_000_000),
        send_many=HubConnection.send_bulk,
    )
    if mode == "emitter":
        from mlsockets.broadcast.emitter import Emitter

        assert redis_url is not None
        emitter = Emitter.from_url(redis_url, prefix=prefix)

        def publish(message: str, skip: str) -> None:
            emitter.emit("m", message, to="fanout", skip=skip)

        return hub, publish

    def emit(message: str, skip: str) -> None:
        hub.emit("m", message, to="fanout", skip=skip)  # type: ignore[arg-type]

    return hub, emit


def gunicorn_app() -> WSGIApp:
    """The app for ``gunicorn 'cluster_server:gunicorn_app()'``, configured by environment:
    ``BENCH_REDIS_URL`` (none: each worker on its own), ``BENCH_PREFIX`` (default ``bench``),
    ``BENCH_PUBLISH`` (``hub`` or ``emitter``). WebSocket options come from ``MLSOCKETS_*``."""
    logging.basicConfig(level=logging.WARNING)
    hub, publish = build(
        os.environ.get("BENCH_REDIS_URL") or None,
        os.environ.get("BENCH_PREFIX", "bench"),
        os.environ.get("BENCH_PUBLISH", "hub"),
    )
    # A script waits for one READY per worker: the hub exists and the relay is connected
    # (startup="fail" waited for it), so the worker serves the cluster once it accepts.
    print(f"READY pid={os.getpid()}", flush=True)
    return make_app(hub, publish)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis", help="redis:// URL: relay through Redis (a cluster node)")
    parser.add_argument("--prefix", default="bench")
    parser.add_argument("--publish", default="hub", choices=("hub", "emitter"))
    parser.add_argument("port", type=int)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    hub, publish = build(args.redis, args.prefix, args.publish)
    options = ServerOptions(compression=None, ping_interval=None)
    server = Server(make_app(hub, publish), [f"127.0.0.1:{args.port}"], options=options)
    server.start()
    print(f"LISTENING {args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
