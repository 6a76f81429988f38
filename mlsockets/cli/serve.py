"""``mlsockets serve module:app``: one process serving HTTP and WebSocket with gevent.

Settings come from :mod:`mlsockets.config` (defaults < ``--config`` file < environment <
flags). SIGHUP re-reads the file and the environment and applies what can change live (the
settings marked reloadable: origins, limits and heartbeats for new connections, log level);
connections stay open, and a bad new configuration is logged as an ERROR and ignored.
For several worker processes, run the same app under gunicorn (``mlsockets install``).
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
from typing import Any

from mlsockets import config
from mlsockets._version import __version__
from mlsockets.exceptions import ConfigurationError

from .common import add_config_argument, load_app, load_settings

__all__ = ["add_parser", "run", "flag_overrides", "apply_log_level"]

logger = logging.getLogger("mlsockets.cli")

_SECRET = frozenset({"publish_key", "publish_secret", "redis_url"})


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def add_parser(sub: Any) -> None:
    """Add ``serve`` to the subcommands."""
    serve = sub.add_parser(
        "serve",
        help="serve a WSGI app, HTTP and WebSocket, with gevent",
        description="Serve a WSGI app in one process; SIGHUP reloads the configuration. "
        "For several workers, use gunicorn (see `mlsockets install`).",
    )
    serve.add_argument("app", help="module:app, or module:create_app() for a factory")
    add_config_argument(serve)
    serve.add_argument(
        "--bind",
        "-b",
        action="append",
        default=None,
        help="HOST:PORT, [IPv6]:PORT or unix:PATH; repeat for several (default 127.0.0.1:8000)",
    )
    serve.add_argument("--certfile", help="PEM certificate (chain): TCP listeners speak TLS")
    serve.add_argument("--keyfile", help="PEM private key for --certfile")
    serve.add_argument("--pid-file", help="write the process id here while serving")
    serve.add_argument("--max-message-size", type=int, help="bytes; 0 for no limit (1 MiB)")
    serve.add_argument("--max-queue", type=int, help="outbound bytes per client (1 MiB)")
    serve.add_argument("--ping-interval", type=_non_negative, help="seconds; 0 turns pings off")
    serve.add_argument("--ping-timeout", type=_non_negative, help="seconds (20)")
    serve.add_argument("--handshake-timeout", type=_non_negative, help="seconds (10)")
    serve.add_argument("--close-timeout", type=_non_negative, help="seconds (5)")
    serve.add_argument(
        "--no-compression", action="store_true", default=None, help="refuse permessage-deflate"
    )
    serve.add_argument("--shutdown-grace", type=_non_negative, help="seconds on SIGTERM (10)")
    serve.add_argument(
        "--access-log", action="store_true", default=None, help="log one line per request"
    )
    serve.add_argument("--log-level", choices=config.LOG_LEVELS, help="(info)")
    serve.add_argument("--redis", dest="redis_url", metavar="URL", help="the cluster's Redis")
    serve.add_argument("--prefix", help="the cluster's key prefix (mls)")
    serve.add_argument("--broadcast-dir", metavar="DIR", help="Unix broadcaster directory")
    serve.add_argument("--metrics-bind", metavar="HOST:PORT", help="Prometheus listener")


#: argparse destinations that are settings of the same name.
_SAME_NAME = (
    "bind",
    "certfile",
    "keyfile",
    "pid_file",
    "max_message_size",
    "max_queue",
    "ping_interval",
    "ping_timeout",
    "handshake_timeout",
    "close_timeout",
    "shutdown_grace",
    "access_log",
    "log_level",
    "redis_url",
    "prefix",
    "broadcast_dir",
    "metrics_bind",
)


def flag_overrides(args: argparse.Namespace) -> dict[str, object]:
    """The settings given as flags (None: not given)."""
    overrides: dict[str, object] = {name: getattr(args, name) for name in _SAME_NAME}
    if args.no_compression:
        overrides["compression"] = False
    return overrides


def apply_log_level(level: str) -> None:
    """Set the root logger's level (``"info"``...)."""
    logging.getLogger().setLevel(getattr(logging, level.upper()))


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM / SIGINT; exit status 0."""
    overrides = flag_overrides(args)
    settings = load_settings(args, overrides)  # before patching: errors exit fast
    apply_log_level(settings.log_level)
    from mlsockets.transport.gevent.monkey import patch

    patch()  # before the application (and its sockets) is imported
    from mlsockets.transport.gevent.options import ServerOptions
    from mlsockets.transport.gevent.server import Server

    _check_origins(settings)
    if args.config:
        # The app reads the same file: the Flask extension takes its defaults from it.
        os.environ[config.CONFIG_ENV] = os.path.abspath(args.config)
    app = load_app(args.app)
    pid_file = settings.pid_file
    if pid_file:
        _claim_pid_file(pid_file)
    server = Server(
        app,
        list(settings.bind),
        options=ServerOptions.from_settings(settings),
        certfile=settings.certfile,
        keyfile=settings.keyfile,
        access_log=logging.getLogger("mlsockets.access") if settings.access_log else None,
        metrics_bind=settings.metrics_bind,
    )
    server.start()  # ConfigurationError: a listener cannot be opened (exit 2)

    def ready() -> None:
        if pid_file:
            with open(pid_file, "w") as f:
                f.write(f"{os.getpid()}\n")
        for address in server.addresses:
            where = address if isinstance(address, str) else f"{address[0]}:{address[1]}"
            print(f"mlsockets {__version__} serving {args.app} on {where}", flush=True)

    try:
        server.serve_forever(on_reload=_Reloader(args, overrides, settings, server), on_ready=ready)
    finally:
        if pid_file:
            _release_pid_file(pid_file)
    return 0


def _check_origins(settings: config.Settings) -> None:
    from mlsockets.admission import OriginPolicy

    try:
        OriginPolicy(settings.allowed_origins)
    except ConfigurationError as exc:
        raise ConfigurationError(
            f"allowed_origins (from {settings.sources.get('allowed_origins', 'default')}): {exc}"
        ) from None


def _claim_pid_file(path: str) -> None:
    """Refuse to start when the pid file names a live process (another server)."""
    try:
        with open(path) as f:
            pid = int(f.read().strip() or "0")
    except FileNotFoundError:
        return
    except (OSError, ValueError):
        return  # unreadable or garbage: a stale file, replaced
    if pid <= 0 or pid == os.getpid():
        return
    try:
        os.kill(pid, 0)
    except OSError as exc:
        if exc.errno == errno.EPERM:  # alive, another user's
            raise ConfigurationError(f"pid file {path}: process {pid} is running") from None
        return  # stale
    raise ConfigurationError(f"pid file {path}: process {pid} is running (already serving?)")


def _release_pid_file(path: str) -> None:
    try:
        with open(path) as f:
            if f.read().strip() != str(os.getpid()):
                return  # not ours
        os.unlink(path)
    except OSError:
        pass


class _Reloader:
    """The SIGHUP handler: re-read, validate, apply, tell the listeners, log one line."""

    def __init__(
        self,
        args: argparse.Namespace,
        overrides: dict[str, object],
        settings: config.Settings,
        server: Any,
    ) -> None:
        self._args = args
        self._overrides = overrides
        self.settings = settings
        self._server = server

    def __call__(self) -> None:
        from mlsockets.transport.gevent.options import ServerOptions

        try:
            new = load_settings(self._args, self._overrides)
            _check_origins(new)
            options = ServerOptions.from_settings(new)
        except ConfigurationError as exc:
            logger.error("configuration reload failed; keeping the current configuration: %s", exc)
            return
        changes = self.settings.changes(new)
        live = config.reloadable()
        restart = sorted(name for name in changes if name not in live)
        # What needs a restart keeps its current value, so the next reload reports it again.
        new = config.replace(new, **{name: getattr(self.settings, name) for name in restart})
        self._server.reconfigure(options)
        apply_log_level(new.log_level)
        self.settings = new
        config.notify_reload(new)
        applied = [
            f"{name} {old!r} -> {value!r}"
            for name, (old, value) in changes.items()
            if name in live and name not in _SECRET
        ]
        logger.info(
            "configuration reloaded: %s", "; ".join(applied) if applied else "nothing changed"
        )
        if restart:
            logger.warning("changed but only applied on restart: %s", ", ".join(restart))
