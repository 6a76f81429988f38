"""Handlers marked with mlsockets.events.on, for MLSockets.autodiscover (test_flask_legacy)."""

from __future__ import annotations

from typing import Any

from flask import current_app

from mlsockets.events import on


@on("auto.ping")
def auto_ping(conn: Any, data: Any) -> dict[str, Any]:
    return {"pong": data, "app": current_app.name}


def not_a_handler() -> None:
    """Unmarked: autodiscover leaves it alone."""
