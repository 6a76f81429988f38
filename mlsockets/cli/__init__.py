"""The ``mlsockets`` command (also ``python -m mlsockets``); docs/reference/cli.md.

::

    mlsockets serve module:app [--config PATH] [--bind ADDR ...] [flags]   # SIGHUP reloads
    mlsockets status [--redis URL] [--prefix P] [--json]                   # the cluster
    mlsockets emit EVENT [DATA] [--to CHANNEL | --user ID | ...] [--url URL | --broadcast-dir D]
    mlsockets check [--config PATH] [--json]                               # settings + Redis PING
    mlsockets install module:app --into DIR [--server-name ...] [--force]  # deploy files

Settings: built-in defaults < TOML file (``--config`` / ``$MLSOCKETS_CONFIG``) < environment
(``MLSOCKETS_*``, ``WS_*`` aliases) < flags (:mod:`mlsockets.config`).

Exit status: 0 done; 1 Redis, a broadcaster or the publish API could not be reached;
2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from mlsockets._version import __version__
from mlsockets.exceptions import ConfigurationError

from . import cluster, install, serve
from .common import EXIT_UNREACHABLE, EXIT_USAGE, Unreachable, load_app

__all__ = ["main", "load_app", "build_parser"]

_COMMANDS = {
    "serve": serve.run,
    "status": cluster.status,
    "emit": cluster.emit,
    "check": cluster.check,
    "install": install.run,
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    parser = argparse.ArgumentParser(
        prog="mlsockets",
        description="Real-time WebSockets for WSGI apps.",
        epilog="Exit status: 0 done, 1 unreachable (Redis, broadcaster, publish API), "
        "2 bad usage or configuration.",
    )
    parser.add_argument("--version", action="version", version=f"mlsockets {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve.add_parser(sub)
    cluster.add_parsers(sub)
    install.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.command == "serve" else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return _COMMANDS[args.command](args)
    except ConfigurationError as exc:
        return _fail(args, exc, "configuration", EXIT_USAGE)
    except Unreachable as exc:
        return _fail(args, exc, "unreachable", EXIT_UNREACHABLE)


def _fail(args: argparse.Namespace, exc: Exception, kind: str, status: int) -> int:
    """Report an error: on stderr, and as JSON on stdout with ``--json``."""
    if getattr(args, "json", False):
        print(json.dumps({"ok": False, "error": kind, "message": str(exc)}, indent=2))
    message = str(exc).replace("\n", "\n  ")
    print(f"mlsockets {args.command}: error: {message}", file=sys.stderr)
    return status
