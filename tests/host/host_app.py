"""The WSGI app the one-host tests serve with gunicorn workers and no Redis.

Configured by the environment: ``HOST_DIR`` (the socket directory), ``HOST_SEND_TIMEOUT``
and ``HOST_MAX_QUEUE`` (the broadcaster's bounds), ``HOST_CHECK_INTERVAL`` (seconds between
the registry's looks for dead processes).

- ``/ws``: the hub; ``?user=NAME`` signs in as NAME. Events: ``whoami`` -> this process's
  pid and node id; ``chat.send`` ``{"channel", "text"}`` -> ``chat.message`` to the channel,
  the sender excluded.
- ``POST /broadcast?event=E&to=CHANNEL`` (body: JSON data; ``?size=N``: the data is a string
  of N bytes instead) -> ``hub.emit``; 200 ``{"local", "pid", "stats"}``.
- ``GET /status`` -> pid and ``broadcaster.status()``; ``GET /online?channel=C&user=U`` ->
  the host's online users, the channel's members, the live nodes and U's connections.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

from mlsockets.admission import Admission
from mlsockets.auth import HandshakeRequest, Principal
from mlsockets.broadcast.unix import UnixBroadcaster
from mlsockets.channels.authorizers import ChannelAuthorizers
from mlsockets.events import EventRouter
from mlsockets.hub import Hub, HubOptions
from mlsockets.typing import UserId
from mlsockets.wsgi import HubConnection, SocketApp

router = EventRouter()
authorizers = ChannelAuthorizers()
authorizers.add("presence-room.{id}", lambda principal, id: dict(principal.info))
broadcaster = UnixBroadcaster.from_directory(
    os.environ["HOST_DIR"],
    check_interval=float(os.environ.get("HOST_CHECK_INTERVAL", "0.2")),
    send_timeout=float(os.environ.get("HOST_SEND_TIMEOUT", "5")),
    max_queue=int(os.environ.get("HOST_MAX_QUEUE", str(16 << 20))),
)
hub = Hub(
    router,
    authorizers,
    broadcaster=broadcaster,
    options=HubOptions(heartbeat=None, rate=1000.0, burst=1000),
    send_many=HubConnection.send_bulk,
)
registry = broadcaster.cluster
assert registry is not None


@router.on("whoami")
def whoami(conn: Any, data: Any) -> dict[str, Any]:
    return {"pid": os.getpid(), "node": broadcaster.node_id}


@router.on("chat.send")
def chat_send(conn: Any, data: Any) -> bool:
    message = {"text": data["text"], "from": conn.principal.user_id}
    hub.emit("chat.message", message, to=data["channel"], skip=conn.id)
    return True


def authenticate(request: HandshakeRequest) -> Principal | None:
    user = request.query.get("user")
    if not user:
        return None
    return Principal(user_id=UserId(user), info={"name": user.title()})


def http(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    path = environ.get("PATH_INFO")
    query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    status, body = "404 Not Found", {"error": "not found"}
    if path == "/status":
        status, body = "200 OK", {"pid": os.getpid(), **broadcaster.status()}
    elif path == "/broadcast" and environ.get("REQUEST_METHOD") == "POST":
        length = int(environ.get("CONTENT_LENGTH") or 0)
        data = json.loads(environ["wsgi.input"].read(length) or b"null")
        if "size" in query:
            data = "x" * int(query["size"])
        local = hub.emit(query["event"], data, to=query.get("to"))
        stats = broadcaster.status()
        status, body = "200 OK", {"local": local, "pid": os.getpid(), "stats": stats}
    elif path == "/online":
        channel = query.get("channel", "presence-room.1")
        body = {
            "users": registry.online_users(),
            "members": [m.user_id for m in registry.channel_members(channel)],
            "nodes": registry.nodes(),
            "connections": len(registry.user_connections(query.get("user", ""))),
        }
        status = "200 OK"
    payload = json.dumps(body).encode()
    start_response(
        status, [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))]
    )
    return [payload]


app = SocketApp(
    hub, path="/ws", admission=Admission(authenticate=authenticate, allow_anonymous=True), app=http
)
