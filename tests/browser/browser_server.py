"""The server the browser tests drive: a hub behind ``SocketApp`` on the gevent ``Server``.

Run as a subprocess, so that a test can kill it and start it again on the same port::

    python -m gevent.monkey tests/browser/browser_server.py --port 0 --secret S [--heartbeat 2]

It prints ``listening <port>`` once it accepts connections. Connections authenticate with a
token (``?token=``, :class:`~mlsockets.tokens.TokenAuthenticator`) minted by the test with
the same secret. HTTP routes:

- ``GET /``: a page that loads the client from ``/ws/mlsockets.js``, as the Flask extension
  serves it (so ``new MLSockets.Client()`` finds ``/ws`` by itself);
- ``GET /ws/mlsockets.js``: ``mlsockets/static/mlsockets.js``, read at each request;
- ``POST /broadcast``: JSON ``{"event", "data", "to"}`` -> ``hub.emit(...)`` leaving out the
  connection named by ``X-Socket-ID``; answers ``{"receivers", "socket_id"}``;
- ``GET /stats``: ``{"connects", "connections"}``.

Events: ``echo`` (replies with its data), ``chat.send`` (validated; publishes
``chat.message`` to ``room``), ``sleep`` (replies after ``data`` seconds), ``kick`` (closes
the connection with 1008). Presence channels
``presence-room.{room}`` admit everyone, with ``{"name": ...}`` from the token as member info.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import marshmallow

import mlsockets
from mlsockets.admission import Admission
from mlsockets.channels.authorizers import ChannelAuthorizers
from mlsockets.events import EventRouter
from mlsockets.hub import Hub, HubOptions
from mlsockets.tokens import TokenAuthenticator
from mlsockets.transport.gevent import Server, ServerOptions
from mlsockets.transport.gevent.scheduling import GeventScheduler
from mlsockets.wsgi import SocketApp

SCRIPT = Path(mlsockets.__file__).parent / "static" / "mlsockets.js"

PAGE = b"""<!doctype html>
<meta charset="utf-8">
<title>mlsockets browser test</title>
<script src="/ws/mlsockets.js"></script>
<p>mlsockets browser test</p>
"""


class ChatSchema(marshmallow.Schema):
    room = marshmallow.fields.String(required=True)
    text = marshmallow.fields.String(
        required=True, validate=marshmallow.validate.Length(min=1, max=200)
    )


def make_app(secret: str, heartbeat: float | None) -> SocketApp:
    router = EventRouter()
    authorizers = ChannelAuthorizers()
    stats = {"connects": 0}
    hub = Hub(
        router,
        authorizers,
        scheduler=GeventScheduler(),
        options=HubOptions(heartbeat=heartbeat),
    )

    @router.on_connect
    def connected(conn: Any) -> None:
        stats["connects"] += 1

    @router.on("echo")
    def echo(conn: Any, data: Any) -> Any:
        return data

    @router.on("chat.send", schema=ChatSchema)
    def chat_send(conn: Any, data: dict[str, str]) -> dict[str, bool]:
        message = {"user": conn.principal.user_id, "text": data["text"]}
        hub.emit("chat.message", message, to=data["room"])
        return {"ok": True}

    @router.on("sleep")
    def sleep(conn: Any, data: float) -> float:
        time.sleep(float(data))  # gevent's sleep: the process is monkey-patched
        return data

    @router.on("kick")
    def kick(conn: Any, data: Any) -> None:
        conn.close(1008, "kicked")

    @authorizers.channel("presence-room.{room}")
    def room_member(principal: Any, room: str) -> dict[str, object]:
        return {"name": principal.info.get("name", principal.user_id)}

    def routes(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path, method = environ["PATH_INFO"], environ["REQUEST_METHOD"]
        if path == "/" and method == "GET":
            return _reply(start_response, PAGE, "text/html; charset=utf-8")
        if path == "/ws/mlsockets.js" and method == "GET":
            return _reply(start_response, SCRIPT.read_bytes(), "text/javascript; charset=utf-8")
        if path == "/stats" and method == "GET":
            body = {"connects": stats["connects"], "connections": len(hub)}
            return _reply(start_response, json.dumps(body).encode(), "application/json")
        if path == "/broadcast" and method == "POST":
            length = int(environ.get("CONTENT_LENGTH") or 0)
            request = json.loads(environ["wsgi.input"].read(length))
            socket_id = environ.get("HTTP_X_SOCKET_ID")
            receivers = hub.emit(
                request["event"], request.get("data"), to=request.get("to"), skip=socket_id
            )
            body = {"receivers": receivers, "socket_id": socket_id}
            return _reply(start_response, json.dumps(body).encode(), "application/json")
        start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "0")])
        return []

    admission = Admission(authenticate=TokenAuthenticator(secret))
    return SocketApp(hub, path="/ws", admission=admission, app=routes)


def _reply(start_response: Callable[..., Any], body: bytes, content_type: str) -> list[bytes]:
    start_response(
        "200 OK",
        [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
        ],
    )
    return [body]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--heartbeat", type=float, default=2.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    server = Server(
        make_app(args.secret, args.heartbeat or None),
        [f"127.0.0.1:{args.port}"],
        options=ServerOptions(shutdown_grace=1.0, close_timeout=1.0),
    )
    server.start()
    print(f"listening {server.addresses[0][1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
