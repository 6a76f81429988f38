"""Benchmark and conformance server, per the contract of the shared bench harness.

Usage: python benchmarks/server.py PORT [--compression]     (binds 127.0.0.1)

  /echo (and /)  echo every message back (text stays text, binary stays binary)
  /fanout        every connection is a subscriber; a connection whose first message is
                 "pub" becomes the publisher and each later message it sends is broadcast
                 to all other connections, encoded once.

Only mlsockets' public API is used. Prints "LISTENING <port>" when ready. Compression is off
by default (the load generator does not offer it); --compression turns it on, and the
message size limit is raised to 64 MiB for the Autobahn suite's 16 MiB cases.
"""

from gevent import monkey

monkey.patch_all()

import sys  # noqa: E402
from collections.abc import Callable, Iterable  # noqa: E402
from typing import Any  # noqa: E402

from mlsockets import DeflateConfig, RawWebSocket, ServerOptions  # noqa: E402
from mlsockets.transport.gevent import Server, WebSocket, broadcast  # noqa: E402

subscribers: set[WebSocket] = set()
publishers: set[WebSocket] = set()
greeted: set[WebSocket] = set()


def echo(ws: RawWebSocket, message: str | bytes) -> None:
    ws.send(message)


def fanout(ws: WebSocket, message: str | bytes) -> None:
    if ws in publishers:
        broadcast(subscribers, message)
    elif ws not in greeted:
        greeted.add(ws)  # only a connection's first message can make it the publisher
        if message == "pub":
            subscribers.discard(ws)
            publishers.add(ws)


def fanout_closed(ws: WebSocket) -> None:
    subscribers.discard(ws)
    publishers.discard(ws)
    greeted.discard(ws)


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    upgrade = environ.get("mlsockets.upgrade")
    if upgrade is None:
        start_response("400 Bad Request", [("Content-Type", "text/plain")])
        return [b"WebSocket only\n"]
    if environ.get("PATH_INFO") == "/fanout":
        subscribers.add(upgrade.accept(on_message=fanout, on_close=fanout_closed))
    else:
        upgrade.accept(on_message=echo)
    return []


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    port = int(args[0]) if args else 0
    compression = "--compression" in sys.argv
    options = ServerOptions(
        compression=DeflateConfig() if compression else None,
        max_message_size=64 << 20 if compression else 1 << 20,
        ping_interval=None,
    )
    server = Server(app, [f"127.0.0.1:{port}"], options=options)
    server.start()
    print(f"LISTENING {server.addresses[0][1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
