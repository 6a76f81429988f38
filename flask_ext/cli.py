"""``flask --app myapp mlsockets status | emit | check``: the ``mlsockets`` commands, with the
settings of a Flask app (``MLSOCKETS_REDIS_URL``, ``MLSOCKETS_BROADCAST``...).

:meth:`MLSockets.init_app` adds the group to ``app.cli``. The only module that imports click.
Exit status as ``mlsockets``: 0 done, 1 Redis or the broadcaster could not be reached, 2 bad
usage or configuration.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import Any, NoReturn

import click
from flask import current_app
from flask.cli import with_appcontext

from mlsockets.broadcast.base import (
    BroadcastUnavailable,
    ClusterUnavailable,
    ConnectionTarget,
    Tag,
    Target,
    User,
)
from mlsockets.channels.names import InvalidChannel
from mlsockets.config import explicit_values
from mlsockets.exceptions import ConfigurationError
from mlsockets.typing import ConnectionId

from .state import AppState, get_state

__all__ = ["cli_group"]

EXIT_UNREACHABLE = 1
EXIT_USAGE = 2

_json_option = click.option("--json", "as_json", is_flag=True, help="print JSON (for scripts)")


@click.group("mlsockets", help="Operate this app's WebSockets (see docs/reference/cli.md).")
def cli_group() -> None:
    """The ``flask mlsockets`` command group."""


def _fail(as_json: bool, kind: str, message: str, status: int) -> NoReturn:
    if as_json:
        click.echo(json.dumps({"ok": False, "error": kind, "message": message}, indent=2))
    click.echo(f"flask mlsockets: error: {message}", err=True)
    sys.exit(status)


def _output(as_json: bool, data: Mapping[str, object], lines: list[str]) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))
    else:
        for line in lines:
            click.echo(line)


def _state() -> AppState:
    return get_state(current_app)


def _prefix() -> str:
    """The cluster's key prefix: the ``prefix`` setting of the file or environment."""
    return str(explicit_values(["prefix"]).get("prefix") or "mls")


@cli_group.command("status")
@_json_option
@with_appcontext
def status(as_json: bool) -> None:
    """The cluster's nodes, connections and relay states (MLSOCKETS_REDIS_URL)."""
    from mlsockets.registry.redis import RedisRegistry, redact_url
    from mlsockets.registry.report import render_status, status_report

    url = _state().settings.redis_url
    if not url:
        _fail(as_json, "configuration", "MLSOCKETS_REDIS_URL is not set", EXIT_USAGE)
    prefix = _prefix()
    registry = RedisRegistry.from_url(url, prefix=prefix, connect_timeout=2.0)
    try:
        nodes = registry.node_statuses()
        users = registry.online_users()
    except ClusterUnavailable as exc:
        _fail(as_json, "unreachable", str(exc), EXIT_UNREACHABLE)
    finally:
        registry.disconnect()
    report = status_report(nodes, users, redis=redact_url(url), prefix=prefix)
    _output(as_json, report, render_status(report))


@cli_group.command("emit")
@click.argument("event")
@click.argument("data", required=False)
@click.option("--to", metavar="CHANNEL", help="a channel's subscribers")
@click.option("--user", metavar="ID", help="every connection of a user")
@click.option("--connection", metavar="ID", help="one connection")
@click.option("--tag", metavar="T", help="the connections with a tag")
@click.option("--skip", metavar="CONN_ID", help="leave this connection out")
@_json_option
@with_appcontext
def emit(
    event: str,
    data: str | None,
    to: str | None,
    user: str | None,
    connection: str | None,
    tag: str | None,
    skip: str | None,
    as_json: bool,
) -> None:
    """Publish EVENT (DATA as JSON) through the app's broadcaster (Redis or Unix sockets)."""
    chosen = [(n, v) for n, v in (("to", to), ("user", user), ("connection", connection),
              ("tag", tag)) if v is not None]  # fmt: skip
    if len(chosen) > 1:
        _fail(as_json, "usage", "give at most one of --to, --user, --connection, --tag", 2)
    payload: object = None
    if data is not None:
        try:
            payload = json.loads(data)
        except ValueError as exc:
            _fail(as_json, "usage", f"DATA is not valid JSON ({exc}): {data!r}", EXIT_USAGE)
    state = _state()
    if state.settings.broadcast == "local":
        _fail(
            as_json,
            "configuration",
            "MLSOCKETS_BROADCAST is 'local': an emit from this command reaches no connection; "
            "set MLSOCKETS_REDIS_URL or MLSOCKETS_BROADCAST='unix'",
            EXIT_USAGE,
        )
    target: str | Target | None = to
    if user is not None:
        target = User(user)
    elif connection is not None:
        target = ConnectionTarget(connection)
    elif tag is not None:
        target = Tag(tag)
    try:
        state.emit(event, payload, to=target, skip=None if skip is None else ConnectionId(skip))
    except BroadcastUnavailable as exc:
        _fail(as_json, "unreachable", str(exc), EXIT_UNREACHABLE)
    except (InvalidChannel, ConfigurationError) as exc:
        _fail(as_json, "configuration", str(exc), EXIT_USAGE)
    name, value = chosen[0] if chosen else ("everyone", None)
    where = "everyone" if value is None else f"{'channel' if name == 'to' else name} {value}"
    route = state.settings.broadcast
    report = {"event": event, "target": where, "route": route}
    _output(as_json, report, [f"emitted {event!r} to {where} via {route}"])


@cli_group.command("check")
@_json_option
@with_appcontext
def check(as_json: bool) -> None:
    """Show the app's WebSocket settings (validated when the app loaded) and PING Redis."""
    settings = _state().settings
    redis: dict[str, Any] | None = None
    lines = [
        f"ok: app {current_app.name!r}: WebSockets at {settings.path}, "
        f"broadcast {settings.broadcast}, origins "
        f"{', '.join(settings.allowed_origins) or 'same origin only'}, publish API "
        f"{'on' if settings.publish_key or settings.publish_secret else 'off'}"
    ]
    if settings.redis_url:
        from mlsockets.registry.redis import RedisRegistry, redact_url

        registry = RedisRegistry.from_url(settings.redis_url, connect_timeout=2.0)
        try:
            registry.ping()
        except ClusterUnavailable as exc:
            _fail(as_json, "unreachable", str(exc), EXIT_UNREACHABLE)
        finally:
            registry.disconnect()
        redis = {"url": redact_url(settings.redis_url), "ping": True}
        lines.append(f"ok: Redis at {redis['url']} answers PING")
    else:
        lines.append("skipped: Redis (MLSOCKETS_REDIS_URL is not set)")
    report = {
        "ok": True,
        "app": current_app.name,
        "path": settings.path,
        "broadcast": settings.broadcast,
        "allowed_origins": list(settings.allowed_origins),
        "publish_api": bool(settings.publish_key or settings.publish_secret),
        "redis": redis,
    }
    _output(as_json, report, lines)
