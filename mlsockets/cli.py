"""The ``mlsockets`` command (also ``python -m mlsockets``).

``mlsockets serve module:app --bind 127.0.0.1:8000 --bind unix:/run/app.sock``: serve a WSGI
app (HTTP and WebSocket) with the gevent transport, monkey-patching the process before the
app is imported.

Operating a cluster (Redis URL from ``--redis`` or ``MLSOCKETS_REDIS_URL``; redis-py is
loaded only by these commands)::

    mlsockets status [--redis URL] [--prefix P] [--json]   # nodes, connections, relay states
    mlsockets emit EVENT [DATA_JSON] [--to CHANNEL | --user ID | --connection ID | --tag T]
    mlsockets check [--redis URL]                          # MLSOCKETS_* settings, Redis PING

Exit status: 0 done, 1 Redis could not be reached (``emit``, ``check``), 2 bad usage or
configuration (and an unreachable Redis for ``status``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from mlsockets._version import __version__
from mlsockets.exceptions import ConfigurationError

__all__ = ["main", "load_app"]

logger = logging.getLogger("mlsockets.cli")


def load_app(spec: str) -> Any:
    """Import ``module:attribute`` (``module`` alone means ``module:app``); a callable that
    takes no arguments and is not a WSGI app (an app factory, ``create_app()``) is called."""
    module_name, _, attr = spec.partition(":")
    attr = attr or "app"
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import {module_name!r}: {exc}") from None
    expr = attr.removesuffix("()")
    try:
        app = getattr(module, expr)
    except AttributeError:
        raise ConfigurationError(f"module {module_name!r} has no attribute {expr!r}") from None
    if attr.endswith("()"):
        app = app()
    if not callable(app):
        raise ConfigurationError(f"{spec} is not a WSGI application")
    return app


def _positive_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlsockets", description="Real-time WebSockets for WSGI apps."
    )
    parser.add_argument("--version", action="version", version=f"mlsockets {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve a WSGI app, HTTP and WebSocket, with gevent")
    serve.add_argument("app", help="module:app, or module:create_app() for a factory")
    serve.add_argument(
        "--bind",
        "-b",
        action="append",
        default=None,
        help="HOST:PORT, [IPv6]:PORT or unix:PATH; repeat for several (default 127.0.0.1:8000)",
    )
    serve.add_argument("--certfile", help="PEM certificate (chain): TCP listeners speak TLS")
    serve.add_argument("--keyfile", help="PEM private key for --certfile")
    serve.add_argument("--max-message-size", type=int, help="bytes; 0 for no limit (default 1 MiB)")
    serve.add_argument("--ping-interval", type=_positive_float, help="seconds; 0 turns pings off")
    serve.add_argument("--ping-timeout", type=_positive_float, help="seconds")
    serve.add_argument("--no-compression", action="store_true", help="refuse permessage-deflate")
    serve.add_argument(
        "--shutdown-grace", type=_positive_float, help="seconds to finish on SIGTERM"
    )
    serve.add_argument("--access-log", action="store_true", help="log one line per request")
    serve.add_argument("--pid-file", help="write the process id here")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])

    status = sub.add_parser("status", help="the cluster's nodes, connections and relay states")
    _redis_arguments(status)
    status.add_argument("--json", action="store_true", help="print JSON (for scripts)")

    emit = sub.add_parser("emit", help="publish an event to the cluster's clients through Redis")
    emit.add_argument("event", help="the event name")
    emit.add_argument("data", nargs="?", default=None, help="the event data, as JSON")
    to = emit.add_mutually_exclusive_group()
    to.add_argument("--to", metavar="CHANNEL", help="a channel's subscribers")
    to.add_argument("--user", metavar="ID", help="every connection of a user")
    to.add_argument("--connection", metavar="ID", help="one connection")
    to.add_argument("--tag", metavar="T", help="the connections with a tag")
    emit.add_argument("--skip", metavar="CONN_ID", help="leave this connection out")
    _redis_arguments(emit)
    emit.add_argument("--json", action="store_true", help="print JSON (for scripts)")

    check = sub.add_parser("check", help="validate the MLSOCKETS_* settings and reach Redis")
    check.add_argument(
        "--redis",
        default=os.environ.get("MLSOCKETS_REDIS_URL") or None,
        metavar="URL",
        help="also PING this Redis (default: $MLSOCKETS_REDIS_URL, if set)",
    )
    return parser


def _redis_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--redis",
        default=os.environ.get("MLSOCKETS_REDIS_URL") or None,
        metavar="URL",
        help="redis://, rediss:// or unix:// URL (default: $MLSOCKETS_REDIS_URL)",
    )
    parser.add_argument("--prefix", default="mls", help="the cluster's Redis prefix (mls)")


def _redis_url(args: argparse.Namespace) -> str:
    if not args.redis:
        raise ConfigurationError("no Redis URL: pass --redis URL or set MLSOCKETS_REDIS_URL")
    return str(args.redis)


def _status(args: argparse.Namespace) -> int:
    from mlsockets.broadcast.base import ClusterUnavailable
    from mlsockets.registry.redis import RedisRegistry, redact_url

    url = _redis_url(args)
    registry = RedisRegistry.from_url(url, prefix=args.prefix, connect_timeout=2.0)
    try:
        nodes = registry.node_statuses()
        users = registry.online_users()
    except ClusterUnavailable as exc:
        raise ConfigurationError(str(exc)) from None
    finally:
        registry.disconnect()
    states: dict[str, int] = {}
    for status in nodes.values():
        state = str(status.get("relay_state", "unknown"))
        states[state] = states.get(state, 0) + 1
    report = {
        "redis": redact_url(url),
        "prefix": args.prefix,
        "nodes": [{"node_id": node, **status} for node, status in nodes.items()],
        "totals": {
            "nodes": len(nodes),
            "connections": sum(_int(s.get("connections")) for s in nodes.values()),
            "channels": sum(_int(s.get("channels")) for s in nodes.values()),
            "online_users": len(users),
        },
        "relay_states": states,
    }
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
        return 0
    print(f"cluster {args.prefix!r} on {report['redis']}")
    rows = [("NODE", "PID", "HOST", "RELAY", "RECONNECTS", "CONNS", "CHANNELS", "VERSION", "UP")]
    for node, s in nodes.items():
        started = s.get("started_at")
        uptime = _duration(_float(s.get("updated_at")) - _float(started)) if started else "-"
        rows.append(
            (
                node,
                str(s.get("pid", "-")),
                str(s.get("host", "-")),
                str(s.get("relay_state", "unknown")),
                str(s.get("relay_reconnects", "-")),
                str(s.get("connections", "-")),
                str(s.get("channels", "-")),
                str(s.get("version", "-")),
                uptime,
            )
        )
    if nodes:
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
            print("  ".join(cells).rstrip())
    else:
        print("no live nodes")
    totals = report["totals"]
    assert isinstance(totals, dict)
    relay = ", ".join(f"{n} {state}" for state, n in sorted(states.items())) or "-"
    print(
        f"{totals['nodes']} nodes, {totals['connections']} connections, "
        f"{totals['online_users']} online users; relays: {relay}"
    )
    return 0


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _float(value: object) -> float:
    return float(value) if isinstance(value, int | float) else 0.0


def _duration(seconds: float) -> str:
    seconds = max(int(seconds), 0)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


class _Unreachable(Exception):
    """Redis could not be reached: exit status 1."""


def _emit(args: argparse.Namespace) -> int:
    from mlsockets.broadcast.base import BroadcastUnavailable, ConnectionTarget, Tag, Target, User
    from mlsockets.broadcast.emitter import Emitter
    from mlsockets.channels.names import InvalidChannel

    data: object = None
    if args.data is not None:
        try:
            data = json.loads(args.data)
        except ValueError as exc:
            raise ConfigurationError(f"DATA is not valid JSON ({exc}): {args.data!r}") from None
    to: str | Target | None = args.to
    if args.user is not None:
        to = User(args.user)
    elif args.connection is not None:
        to = ConnectionTarget(args.connection)
    elif args.tag is not None:
        to = Tag(args.tag)
    url = _redis_url(args)
    with Emitter.from_url(url, prefix=args.prefix) as emitter:
        try:
            received = emitter.emit(args.event, data, to=to, skip=args.skip)
        except BroadcastUnavailable as exc:
            raise _Unreachable(str(exc)) from None
        except InvalidChannel as exc:
            raise ConfigurationError(str(exc)) from None
    target = _describe(args)
    if args.json:
        print(json.dumps({"event": args.event, "target": target, "received": received}))
    else:
        print(f"emitted {args.event!r} to {target}: received by {received} process(es)")
    return 0


def _describe(args: argparse.Namespace) -> str:
    for name in ("to", "user", "connection", "tag"):
        value = getattr(args, name)
        if value is not None:
            return f"channel {value}" if name == "to" else f"{name} {value}"
    return "everyone"


def _check(args: argparse.Namespace) -> int:
    from mlsockets.transport.gevent.options import ServerOptions

    ServerOptions.from_env()  # ConfigurationError: exit 2
    print("ok: MLSOCKETS_* server settings")
    if not args.redis:
        print("skipped: Redis (no --redis and no MLSOCKETS_REDIS_URL)")
        return 0
    from mlsockets.broadcast.base import ClusterUnavailable
    from mlsockets.registry.redis import RedisRegistry, redact_url

    url = args.redis
    registry = RedisRegistry.from_url(url, connect_timeout=2.0)  # ConfigurationError: bad URL
    try:
        registry.ping()
    except ClusterUnavailable as exc:
        raise _Unreachable(str(exc)) from None
    finally:
        registry.disconnect()
    print(f"ok: Redis at {redact_url(url)} answers PING")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from mlsockets.transport.gevent.monkey import patch

    patch()  # before the application (and its sockets) is imported
    from mlsockets.transport.gevent.options import ServerOptions
    from mlsockets.transport.gevent.server import Server

    options = ServerOptions.from_env()
    changes: dict[str, object] = {}
    if args.max_message_size is not None:
        changes["max_message_size"] = args.max_message_size or None
    if args.ping_interval is not None:
        changes["ping_interval"] = args.ping_interval
    if args.ping_timeout is not None:
        changes["ping_timeout"] = args.ping_timeout
    if args.no_compression:
        changes["compression"] = None
    if args.shutdown_grace is not None:
        changes["shutdown_grace"] = args.shutdown_grace
    options = options.replace(**changes)
    app = load_app(args.app)
    binds = args.bind or [os.environ.get("MLSOCKETS_BIND", "127.0.0.1:8000")]
    access_log = logging.getLogger("mlsockets.access") if args.access_log else None
    server = Server(
        app,
        binds,
        options=options,
        certfile=args.certfile,
        keyfile=args.keyfile,
        access_log=access_log,
    )
    server.start()
    if args.pid_file:
        with open(args.pid_file, "w") as f:
            f.write(f"{os.getpid()}\n")
    for address in server.addresses:
        where = address if isinstance(address, str) else f"{address[0]}:{address[1]}"
        print(f"mlsockets {__version__} serving {args.app} on {where}", flush=True)
    try:
        server.serve_forever()
    finally:
        if args.pid_file:
            try:
                os.unlink(args.pid_file)
            except OSError:
                pass
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, getattr(args, "log_level", "warning").upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "status":
            return _status(args)
        if args.command == "emit":
            return _emit(args)
        if args.command == "check":
            return _check(args)
    except ConfigurationError as exc:
        print(f"mlsockets: error: {exc}", file=sys.stderr)
        return 2
    except _Unreachable as exc:
        print(f"mlsockets: error: {exc}", file=sys.stderr)
        return 1
    return 2  # pragma: no cover - argparse rejects unknown commands
