"""The apps the publish tests serve (imported as ``publish_apps``; the name is unique across
tests/), in-process and in node subprocesses (``python publish_apps.py BIND``).

- :func:`create_flask_app`: a Flask app with the extension, the publish API on, anonymous
  WebSockets, and a ``before_request`` hook that refuses every POST without a CSRF token, as
  Flask-WTF's ``CSRFProtect`` does: the publish API must not care. ``MLSOCKETS_REDIS_URL`` in
  the environment makes it a cluster node.
- :func:`create_socket_app`: a :class:`~mlsockets.wsgi.SocketApp` with the same API.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from flask import Flask, abort, request

from flask_mlsockets import MLSockets
from mlsockets.admission import Admission
from mlsockets.auth import HandshakeRequest, Principal
from mlsockets.hub import Hub, HubOptions
from mlsockets.publish_api import PublishOptions
from mlsockets.typing import UserId
from mlsockets.wsgi import HubConnection, SocketApp

KEY = "publish-key-for-the-tests-0123456789"
SECRET = "publish-secret-for-the-tests-9876543210"
MAX_BODY = 4096
WINDOW = 60.0

sockets = MLSockets()


def create_flask_app(**config: Any) -> Flask:
    app = Flask("publish_tests")
    app.config.update(
        MLSOCKETS_ALLOW_ANONYMOUS=True,
        MLSOCKETS_HEARTBEAT=None,
        MLSOCKETS_HANDSHAKE_RATE=None,
        MLSOCKETS_PUBLISH_KEY=KEY,
        MLSOCKETS_PUBLISH_SECRET=SECRET,
        MLSOCKETS_PUBLISH_WINDOW=WINDOW,
        MLSOCKETS_PUBLISH_MAX_BODY=MAX_BODY,
        MLSOCKETS_REDIS_URL=os.environ.get("MLSOCKETS_REDIS_URL"),
    )
    app.config.update(config)

    @app.before_request
    def csrf_protect() -> None:
        if request.method == "POST" and "X-CSRF-Token" not in request.headers:
            abort(400, "CSRF token missing")

    @app.get("/ping")
    def ping() -> str:
        return "pong"

    @app.post("/form")
    def form() -> str:
        return "posted"

    sockets.init_app(app)
    return app


def authenticate(request: HandshakeRequest) -> Principal | None:
    """``?user=NAME&tag=TAG`` signs in as NAME with TAG; anonymous without ``user``."""
    user = request.query.get("user")
    if not user:
        return None
    tag = request.query.get("tag")
    return Principal(user_id=UserId(user), tags=frozenset([tag] if tag else []))


def create_socket_app(**options: Any) -> SocketApp:
    hub = Hub(options=HubOptions(heartbeat=None), send_many=HubConnection.send_bulk)
    publish = PublishOptions(
        **{"key": KEY, "secrets": (SECRET,), "window": WINDOW, "max_body": MAX_BODY, **options}
    )
    admission = Admission(authenticate=authenticate, allow_anonymous=True)
    return SocketApp(hub, path="/ws", admission=admission, publish=publish)


if __name__ == "__main__":
    # A cluster node: ``python publish_apps.py HOST:PORT``, patched before anything else.
    from gevent import monkey

    monkey.patch_all()
    from mlsockets.transport.gevent import Server, ServerOptions

    server = Server(create_flask_app(), [sys.argv[1]], options=ServerOptions(ping_interval=None))
    server.serve_forever()
