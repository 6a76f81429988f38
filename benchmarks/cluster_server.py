"""The harness's fan-out contract served through the mlsockets hub, locally or through Redis.

Usage: python benchmarks/cluster_server.py [--redis URL] [--prefix P] PORT

``/fanout`` (the shared load generator's contract, ../shared/tools/bench/README.md): every
connection joins the hub channel ``fanout``; a connection whose first message is ``pub``
becomes the publisher, and each later message it sends is ``hub.emit("m", message,
to="fanout", skip=publisher)``. With ``--redis`` the hub has a RedisBroadcaster, so several of
these processes on the same Redis and prefix form one cluster: an emit is delivered to the
local members and relayed to the other processes' members through Redis (the full path:
hub -> relay message -> PUBLISH -> relay thread -> hub -> transport).

Connections use a formatter that sends the envelope's ``data`` as is (the load generator
checks and times its own payload), so the only difference from a JSON client is that the
text is not wrapped in ``{"event": ...}``. System messages (``mls.welcome``) are not sent.
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import logging  # noqa: E402
from collections.abc import Callable, Iterable  # noqa: E402
from typing import Any  # noqa: E402

from mlsockets import ANONYMOUS, ServerOptions  # noqa: E402
from mlsockets.broadcast.base import Broadcaster  # noqa: E402
from mlsockets.hub import Hub, HubOptions  # noqa: E402
from mlsockets.transport.gevent import Server  # noqa: E402
from mlsockets.wsgi import HubConnection  # noqa: E402


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


def make_app(hub: Hub) -> Callable[..., Iterable[bytes]]:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        upgrade = environ.get("mlsockets.upgrade")
        if upgrade is None or environ["PATH_INFO"] != "/fanout":
            start_response("404 Not Found", [("Content-Length", "0")])
            return []
        conn = BenchConnection(ANONYMOUS, RAW)  # type: ignore[arg-type]
        role: dict[str, bool] = {}

        def on_open(ws: Any) -> None:
            conn.ws = ws
            hub.connect(conn)
            hub.join(conn, "fanout")

        def on_message(ws: Any, message: str | bytes) -> None:
            if "pub" not in role:
                role["pub"] = message == "pub"
                return
            if role["pub"]:
                hub.emit("m", message, to="fanout", skip=conn.id)

        upgrade.accept(
            on_open=on_open, on_message=on_message, on_close=lambda ws: hub.disconnect(conn)
        )
        return []

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis", help="redis:// URL: relay through Redis (a cluster node)")
    parser.add_argument("--prefix", default="bench")
    parser.add_argument("port", type=int)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    broadcaster: Broadcaster | None = None
    if args.redis:
        from mlsockets.broadcast.redis import RedisBroadcaster

        broadcaster = RedisBroadcaster.from_url(
            args.redis, prefix=args.prefix, presence=False, startup="fail"
        )
    hub = Hub(
        broadcaster=broadcaster,
        options=HubOptions(heartbeat=None, rate=1e9, burst=1_000_000),
        send_many=HubConnection.send_bulk,
    )
    options = ServerOptions(compression=None, ping_interval=None)
    server = Server(make_app(hub), [f"127.0.0.1:{args.port}"], options=options)
    server.start()
    print(f"LISTENING {args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
