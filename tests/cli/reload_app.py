"""A Flask app for the CLI tests: anonymous connections, an ``echo`` event with an ack."""

from __future__ import annotations

from typing import Any

from flask import Flask

from flask_mlsockets import MLSockets

sockets = MLSockets(allow_anonymous=True)


@sockets.on("echo")
def echo(conn: Any, data: object) -> object:
    return data


def create_app() -> Flask:
    flask_app = Flask(__name__)
    sockets.init_app(flask_app)
    return flask_app


app = create_app()
