"""``mlsockets status``, ``emit`` and ``check``: operating a running deployment.

``status`` reads the cluster registry in Redis. ``emit`` publishes an event through Redis, the
host's Unix-socket broadcaster, or a server's HTTP publish API. ``check`` validates the whole
configuration (file + environment) and, when a Redis URL is set, PINGs it. redis-py is loaded
only by these commands.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from mlsockets import config
from mlsockets.exceptions import ConfigurationError

from .common import Unreachable, add_config_argument, load_settings, output

__all__ = ["add_parsers", "status", "emit", "check"]


def _redis_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument(
        "--redis",
        dest="redis_url",
        metavar="URL",
        help="redis://, rediss:// or unix:// URL (default: the redis_url setting, "
        "$MLSOCKETS_REDIS_URL)",
    )
    parser.add_argument("--prefix", help="the cluster's key prefix (default: mls)")
    parser.add_argument("--json", action="store_true", help="print JSON (for scripts)")


def add_parsers(sub: Any) -> None:
    """Add ``status``, ``emit`` and ``check`` to the subcommands."""
    status_parser = sub.add_parser(
        "status", help="the cluster's nodes, connections and relay states (from Redis)"
    )
    _redis_arguments(status_parser)

    emit_parser = sub.add_parser(
        "emit",
        help="publish an event to clients: through Redis, the Unix broadcaster or HTTP",
        description="Publish an event. The route: --url (the HTTP publish API), else "
        "--broadcast-dir or broadcast = unix (the host's Unix-socket broadcaster), else Redis.",
    )
    emit_parser.add_argument("event", help="the event name")
    emit_parser.add_argument("data", nargs="?", default=None, help="the event data, as JSON")
    to = emit_parser.add_mutually_exclusive_group()
    to.add_argument("--to", metavar="CHANNEL", help="a channel's subscribers")
    to.add_argument("--user", metavar="ID", help="every connection of a user")
    to.add_argument("--connection", metavar="ID", help="one connection")
    to.add_argument("--tag", metavar="T", help="the connections with a tag")
    emit_parser.add_argument("--skip", metavar="CONN_ID", help="leave this connection out")
    _redis_arguments(emit_parser)
    emit_parser.add_argument(
        "--broadcast-dir", metavar="DIR", help="emit through the Unix broadcaster in DIR"
    )
    emit_parser.add_argument(
        "--url", metavar="URL", help="emit through the HTTP publish API at URL"
    )
    emit_parser.add_argument("--key", help="publish API key (default: publish_key setting)")
    emit_parser.add_argument(
        "--secret", help="publish API HMAC secret (default: publish_secret setting)"
    )
    emit_parser.add_argument(
        "--timeout", type=float, default=5.0, help="HTTP timeout in seconds (5)"
    )

    check_parser = sub.add_parser(
        "check", help="validate the configuration (file + environment) and reach Redis"
    )
    _redis_arguments(check_parser)


def _settings(args: argparse.Namespace, **more: object) -> config.Settings:
    return load_settings(args, {"redis_url": args.redis_url, "prefix": args.prefix, **more})


def _redis_url(settings: config.Settings) -> str:
    if not settings.redis_url:
        raise ConfigurationError(
            "no Redis URL: pass --redis URL, set MLSOCKETS_REDIS_URL or redis_url in the file"
        )
    return settings.redis_url


def status(args: argparse.Namespace) -> int:
    """Print the cluster's nodes and totals."""
    from mlsockets.broadcast.base import ClusterUnavailable
    from mlsockets.registry.redis import RedisRegistry, redact_url
    from mlsockets.registry.report import render_status, status_report

    settings = _settings(args)
    url = _redis_url(settings)
    registry = RedisRegistry.from_url(url, prefix=settings.prefix, connect_timeout=2.0)
    try:
        nodes = registry.node_statuses()
        users = registry.online_users()
    except ClusterUnavailable as exc:
        raise Unreachable(str(exc)) from None
    finally:
        registry.disconnect()
    report = status_report(nodes, users, redis=redact_url(url), prefix=settings.prefix)
    output(args, report, render_status(report))
    return 0


def _data(text: str | None) -> object:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ConfigurationError(f"DATA is not valid JSON ({exc}): {text!r}") from None


def _target(args: argparse.Namespace) -> str:
    for name in ("to", "user", "connection", "tag"):
        value = getattr(args, name)
        if value is not None:
            return f"channel {value}" if name == "to" else f"{name} {value}"
    return "everyone"


def emit(args: argparse.Namespace) -> int:
    """Publish one event; the route is chosen as the parser's description says."""
    settings = _settings(args, broadcast_dir=args.broadcast_dir)
    data = _data(args.data)
    if args.url:
        route, result = _emit_http(args, settings, data)
    elif args.broadcast_dir or settings.broadcast == "unix":
        route, result = _emit_unix(args, settings, data)
    else:
        route, result = _emit_redis(args, settings, data)
    target = _target(args)
    report = {"event": args.event, "target": target, "route": route, **result}
    if "received" in result:
        line = (
            f"emitted {args.event!r} to {target} via {route}: "
            f"received by {result['received']} process(es)"
        )
    else:
        line = f"emitted {args.event!r} to {target} via {route}"
    output(args, report, [line])
    return 0


def _to(args: argparse.Namespace) -> Any:
    from mlsockets.broadcast.base import ConnectionTarget, Tag, User

    if args.user is not None:
        return User(args.user)
    if args.connection is not None:
        return ConnectionTarget(args.connection)
    if args.tag is not None:
        return Tag(args.tag)
    return args.to


def _emit_redis(
    args: argparse.Namespace, settings: config.Settings, data: object
) -> tuple[str, dict[str, object]]:
    from mlsockets.broadcast.base import BroadcastUnavailable
    from mlsockets.broadcast.emitter import Emitter
    from mlsockets.channels.names import InvalidChannel
    from mlsockets.registry.redis import redact_url

    url = _redis_url(settings)
    with Emitter.from_url(url, prefix=settings.prefix) as emitter:
        try:
            received = emitter.emit(args.event, data, to=_to(args), skip=args.skip)
        except BroadcastUnavailable as exc:
            raise Unreachable(str(exc)) from None
        except InvalidChannel as exc:
            raise ConfigurationError(str(exc)) from None
    return f"redis {redact_url(url)}", {"received": received}


def _emit_unix(
    args: argparse.Namespace, settings: config.Settings, data: object
) -> tuple[str, dict[str, object]]:
    from mlsockets.broadcast.base import BroadcastUnavailable
    from mlsockets.broadcast.emitter import Emitter
    from mlsockets.channels.names import InvalidChannel

    directory = settings.broadcast_dir
    if not directory:
        raise ConfigurationError(
            "broadcast = 'unix' needs a directory: pass --broadcast-dir DIR or set "
            "MLSOCKETS_BROADCAST_DIR"
        )
    with Emitter.for_directory(directory, prefix=settings.prefix) as emitter:
        try:
            received = emitter.emit(args.event, data, to=_to(args), skip=args.skip)
        except BroadcastUnavailable as exc:
            raise Unreachable(str(exc)) from None
        except InvalidChannel as exc:
            raise ConfigurationError(str(exc)) from None
    return f"unix {directory}", {"received": received}


def _emit_http(
    args: argparse.Namespace, settings: config.Settings, data: object
) -> tuple[str, dict[str, object]]:
    from mlsockets.client.publish import PublishClient, PublishError

    key = args.key or settings.publish_key
    secret = args.secret or settings.publish_secret
    if not key and not secret:
        raise ConfigurationError(
            "the publish API needs a key or a secret: --key / --secret, or the publish_key / "
            "publish_secret setting (MLSOCKETS_PUBLISH_KEY / MLSOCKETS_PUBLISH_SECRET)"
        )
    try:
        client = PublishClient(args.url, key=key, secret=secret, timeout=args.timeout)
    except ValueError as exc:
        raise ConfigurationError(f"--url {args.url}: {exc}") from None
    try:
        reply = client.publish(
            args.event,
            data,
            to=args.to,
            user=args.user,
            connection=args.connection,
            tag=args.tag,
            skip=args.skip,
        )
    except PublishError as exc:
        message = f"the publish API at {args.url} answered {exc.status}: {exc.body!r}"
        if exc.status >= 500:
            raise Unreachable(message) from None
        raise ConfigurationError(message) from None
    except OSError as exc:
        raise Unreachable(f"cannot reach the publish API at {args.url}: {exc}") from None
    return f"http {args.url}", {"reply": reply}


def check(args: argparse.Namespace) -> int:
    """Validate every setting (file + environment + flags) and PING Redis when one is set."""
    settings = _settings(args)  # ConfigurationError: exit 2, with every problem listed
    from mlsockets.admission import OriginPolicy

    try:
        OriginPolicy(settings.allowed_origins)
    except ConfigurationError as exc:
        raise ConfigurationError(
            f"allowed_origins (from {settings.sources['allowed_origins']}): {exc}"
        ) from None
    explicit = {n: s for n, s in settings.sources.items() if s != "default"}
    lines = [f"ok: settings ({len(explicit)} set, the others default)"]
    lines += [f"  {name} from {source}" for name, source in explicit.items()]
    report: dict[str, object] = {
        "ok": True,
        "settings": settings.public(),
        "sources": dict(settings.sources),
        "redis": None,
    }
    if settings.redis_url:
        from mlsockets.broadcast.base import ClusterUnavailable
        from mlsockets.registry.redis import RedisRegistry, redact_url

        url = settings.redis_url
        registry = RedisRegistry.from_url(url, connect_timeout=2.0)
        try:
            registry.ping()
        except ClusterUnavailable as exc:
            raise Unreachable(str(exc)) from None
        finally:
            registry.disconnect()
        report["redis"] = {"url": redact_url(url), "ping": True}
        lines.append(f"ok: Redis at {redact_url(url)} answers PING")
    else:
        lines.append("skipped: Redis (no redis_url: --redis, MLSOCKETS_REDIS_URL or the file)")
    output(args, report, lines)
    return 0
