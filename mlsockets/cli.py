"""The ``mlsockets`` command (also ``python -m mlsockets``).

``mlsockets serve module:app --bind 127.0.0.1:8000 --bind unix:/run/app.sock``: serve a WSGI
app (HTTP and WebSocket) with the gevent transport, monkey-patching the process before the
app is imported.
"""

from __future__ import annotations

import argparse
import importlib
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
    return parser


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
        level=getattr(logging, args.log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.command == "serve":
            return _serve(args)
    except ConfigurationError as exc:
        print(f"mlsockets: error: {exc}", file=sys.stderr)
        return 2
    return 2  # pragma: no cover - argparse rejects unknown commands
