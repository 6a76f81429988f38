"""The WSGI app the cluster tests serve, with gunicorn workers and ``mlsockets serve`` nodes.

Configured by the environment: ``MLSOCKETS_REDIS_URL``, ``CLUSTER_PREFIX``, ``CLUSTER_TTL``
(seconds), ``CLUSTER_STARTUP`` (``retry`` / ``fail``).

- ``/ws``: the hub; ``?user=NAME`` signs in as NAME (anonymous otherwise). Events:
  ``whoami`` -> this process's pid, node id and relay state; ``chat.send`` ``{"channel",
  "text"}`` -> ``chat.message`` to the channel, the sender excluded.
- ``POST /broadcast?event=E&to=CHANNEL`` (body: JSON data) -> ``hub.emit``; 200 ``{"local":
  n}``, or 503 with the error when the other processes cannot be reached.
- ``GET /status`` -> pid and ``broadcaster.status()``; ``GET /online?channel=C`` -> the
  cluster's online users and the channel's presence members.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

from mlsockets.admission import Admission
from mlsockets.auth import HandshakeRequest, Principal
from mlsockets.broadcast.base import BroadcastUnavailable, ClusterUnavailable
from mlsockets.broadcast.redis import RedisBroadcaster
from mlsockets.broadcast.relay import ReconnectBackoff
from mlsockets.channels.authorizers import ChannelAuthorizers
from mlsockets.events import EventRouter
from mlsockets.hub import Hub, HubOptions
from mlsockets.typing import UserId
from mlsockets.wsgi import HubConnection, SocketApp

router = EventRouter()
authorizers = ChannelAuthorizers()
authorizers.add("presence-room.{id}", lambda principal, id: dict(principal.info))
broadcaster = RedisBroadcaster.from_url(
    os.environ["MLSOCKETS_REDIS_URL"],
    prefix=os.environ.get("CLUSTER_PREFIX", "mls"),
    ttl=float(os.environ.get("CLUSTER_TTL", "30")),
    startup="fail" if os.environ.get("CLUSTER_STARTUP") == "fail" else "retry",
    startup_timeout=1.0,
    backoff=ReconnectBackoff(initial=0.05, maximum=0.5),
)
hub = Hub(
    router,
    authorizers,
    broadcaster=broadcaster,
    options=HubOptions(heartbeat=None),
    send_many=HubConnection.send_bulk,
)


@router.on("whoami")
def whoami(conn: Any, data: Any) -> dict[str, Any]:
    return {"pid": os.getpid(), "node": broadcaster.node_id, "state": str(broadcaster.state)}


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
        try:
            local = hub.emit(query["event"], data, to=query.get("to"))
            status, body = "200 OK", {"local": local, "pid": os.getpid()}
        except BroadcastUnavailable as exc:
            status, body = "503 Service Unavailable", {"error": str(exc), "local": exc.delivered}
    elif path == "/online":
        assert broadcaster.cluster is not None
        try:
            channel = query.get("channel", "presence-room.1")
            members = broadcaster.cluster.channel_members(channel)
            status, body = (
                "200 OK",
                {
                    "users": broadcaster.cluster.online_users(),
                    "members": [m.user_id for m in members],
                    "nodes": broadcaster.cluster.nodes(),
                },
            )
        except ClusterUnavailable as exc:
            status, body = "503 Service Unavailable", {"error": str(exc)}
    payload = json.dumps(body).encode()
    start_response(
        status, [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))]
    )
    return [payload]


app = SocketApp(
    hub, path="/ws", admission=Admission(authenticate=authenticate, allow_anonymous=True), app=http
)
