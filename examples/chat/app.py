"""The app factory: ``mlsockets serve "examples.chat:create_app()"`` (``make demo``)."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from flask import Flask
from flask_login import LoginManager

from . import views
from .rooms import Rooms
from .sockets import sockets
from .users import USERS, get_user

logger = logging.getLogger("examples.chat")

#: Signs the session cookie, so it must stay the same across restarts: the pages log in
#: again by themselves after one. Set FLASK_SECRET_KEY for anything but the demo.
DEMO_SECRET = "mlsockets-chat-demo-secret-not-for-production"

login_manager = LoginManager()
login_manager.login_view = "chat.login"
login_manager.user_loader(get_user)


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """The chat app: Flask + Flask-Login, with WebSockets at ``/ws`` (one process, no Redis)."""
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=DEMO_SECRET,
        SESSION_COOKIE_SAMESITE="Lax",  # no cross-site POSTs to /notify with our cookie
    )
    app.config.from_prefixed_env()  # FLASK_SECRET_KEY, FLASK_MLSOCKETS_REDIS_URL, ...
    app.config.update(config or {})
    login_manager.init_app(app)
    sockets.init_app(app)
    app.extensions["chat"] = Rooms()
    app.register_blueprint(views.bp)
    url = _url(os.environ.get("MLSOCKETS_BIND", "127.0.0.1:8000"))
    if url:
        users = ", ".join(sorted(USERS))
        logger.info("chat example: open %s and log in as %s (password on the page)", url, users)
    return app


def _url(bind: str) -> str | None:
    """The address to open for a ``--bind`` value (None for a unix socket)."""
    if bind.startswith("unix:"):
        return None
    host, _, port = bind.rpartition(":")
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host in ("[::]", "::"):
        host = "[::1]"
    return f"http://{host}:{port}/"
