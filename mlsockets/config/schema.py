"""The settings schema (names, types, defaults, allowed values, documentation) and the
:class:`Settings` value object it loads into."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

from marshmallow import Schema, fields, validate

from .types import (
    NOT_NEGATIVE,
    POSITIVE,
    Float,
    Int,
    Strings,
    check,
    check_binds,
    check_metrics_bind,
    meta,
    text,
)

__all__ = [
    "ENV_PREFIX",
    "CONFIG_ENV",
    "ENV_ALIASES",
    "LOG_LEVELS",
    "MIB",
    "ZERO_IS_NONE",
    "SCHEMA",
    "Settings",
    "SettingsSchema",
    "env_var",
    "reloadable",
    "replace",
    "setting_names",
]

ENV_PREFIX = "MLSOCKETS_"
#: The environment variable naming the TOML file (below ``--config``).
CONFIG_ENV = "MLSOCKETS_CONFIG"
#: ``WS_*`` aliases (gevent-websocket era names) -> setting; WS_HOST / WS_PORT make ``bind``.
ENV_ALIASES: dict[str, str] = {
    "WS_MAX_MESSAGE_SIZE": "max_message_size",
    "WS_HEARTBEAT": "ping_interval",
    "WS_ALLOWED_ORIGINS": "allowed_origins",
}
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
MIB = 1 << 20

# Settings where 0 means "none" (no limit, no pings): TOML has no null.
ZERO_IS_NONE = frozenset({"max_message_size", "ping_interval", "handshake_rate"})


class SettingsSchema(Schema):
    """Every setting of a serving process, with its default, type, range and documentation.

    Each field's ``metadata`` holds ``help`` (meaning), ``allowed`` (what values are allowed,
    for error messages), ``reloadable`` (SIGHUP applies it without a restart) and ``flag``
    (the ``mlsockets serve`` flag, if any).
    """

    # Listeners
    bind = Strings(
        load_default=("127.0.0.1:8000",),
        validate=[
            validate.Length(min=1),
            check_binds,
        ],
        metadata=meta(
            "listeners: HOST:PORT, [IPv6]:PORT or unix:PATH",
            "a list of HOST:PORT, [IPv6]:PORT or unix:PATH",
            flag="--bind",
        ),
    )
    certfile = text(
        load_default=None,
        allow_none=True,
        metadata=meta(
            "PEM certificate chain: TCP listeners speak TLS", "a file path", flag="--certfile"
        ),
    )
    keyfile = text(
        load_default=None,
        allow_none=True,
        metadata=meta("PEM private key of certfile", "a file path", flag="--keyfile"),
    )
    pid_file = text(
        load_default=None,
        allow_none=True,
        metadata=meta("write the process id here while serving", "a file path", flag="--pid-file"),
    )
    # Limits and heartbeats (ServerOptions)
    max_message_size = Int(
        load_default=MIB,
        allow_none=True,
        validate=NOT_NEGATIVE,
        metadata=meta(
            "largest incoming message in bytes; larger ones close with 1009 (0: no limit)",
            "an integer >= 0 (bytes; 0: no limit)",
            reload=True,
            flag="--max-message-size",
        ),
    )
    max_queue = Int(
        load_default=MIB,
        validate=validate.Range(min=1),
        metadata=meta(
            "outbound bytes waiting before a client is dropped as a slow consumer (1008)",
            "an integer >= 1 (bytes)",
            reload=True,
            flag="--max-queue",
        ),
    )
    ping_interval = Float(
        load_default=20.0,
        allow_none=True,
        validate=NOT_NEGATIVE,
        metadata=meta(
            "seconds of silence before the server pings a client (0: no pings)",
            "a number >= 0 (seconds; 0: off)",
            reload=True,
            flag="--ping-interval",
        ),
    )
    ping_timeout = Float(
        load_default=20.0,
        validate=POSITIVE,
        metadata=meta(
            "seconds to wait for data after a ping before closing with 1011",
            "a number > 0 (seconds)",
            reload=True,
            flag="--ping-timeout",
        ),
    )
    handshake_timeout = Float(
        load_default=10.0,
        validate=POSITIVE,
        metadata=meta(
            "seconds a client has to send its complete request head",
            "a number > 0 (seconds)",
            reload=True,
            flag="--handshake-timeout",
        ),
    )
    close_timeout = Float(
        load_default=5.0,
        validate=POSITIVE,
        metadata=meta(
            "seconds to wait for the peer's Close frame",
            "a number > 0 (seconds)",
            reload=True,
            flag="--close-timeout",
        ),
    )
    compression = fields.Boolean(
        load_default=True,
        metadata=meta(
            "negotiate permessage-deflate (RFC 7692)",
            "true or false (also 1/0, yes/no, on/off)",
            reload=True,
            flag="--no-compression",
        ),
    )
    shutdown_grace = Float(
        load_default=10.0,
        validate=POSITIVE,
        metadata=meta(
            "seconds to let connections close on SIGTERM / SIGINT",
            "a number > 0 (seconds)",
            reload=True,
            flag="--shutdown-grace",
        ),
    )
    # Admission
    allowed_origins = Strings(
        load_default=(),
        validate=check(
            lambda origins: all(o == "*" or "://" in o for o in origins), "not an origin"
        ),
        metadata=meta(
            "origins allowed besides the same origin (Flask extension)",
            "a list of scheme://host[:port], scheme://*.domain[:port] or *",
            reload=True,
        ),
    )
    require_origin = fields.Boolean(
        load_default=False,
        metadata=meta(
            "refuse handshakes without an Origin header (Flask extension)",
            "true or false",
            reload=True,
        ),
    )
    handshake_rate = Float(
        load_default=10.0,
        allow_none=True,
        validate=NOT_NEGATIVE,
        metadata=meta(
            "handshakes per second per remote address (Flask extension; 0: no limit)",
            "a number >= 0 (per second; 0: no limit)",
            reload=True,
        ),
    )
    handshake_burst = Int(
        load_default=50,
        validate=validate.Range(min=1),
        metadata=meta(
            "handshakes an address may make at once (Flask extension)",
            "an integer >= 1",
            reload=True,
        ),
    )
    # Logs
    log_level = fields.String(
        load_default="info",
        validate=validate.OneOf(LOG_LEVELS),
        metadata=meta(
            "level of the mlsockets.* and root loggers",
            " | ".join(LOG_LEVELS),
            reload=True,
            flag="--log-level",
        ),
    )
    access_log = fields.Boolean(
        load_default=False,
        metadata=meta(
            "one log line per HTTP request (logger mlsockets.access)",
            "true or false",
            flag="--access-log",
        ),
    )
    # Cluster and broadcasting
    redis_url = text(
        load_default=None,
        allow_none=True,
        validate_more=validate.Regexp(r"^(redis|rediss|unix)://"),
        metadata=meta(
            "the cluster's Redis", "a redis://, rediss:// or unix:// URL", flag="--redis"
        ),
    )
    prefix = fields.String(
        load_default="mls",
        validate=validate.Regexp(r"^[A-Za-z0-9_.:-]+$"),
        metadata=meta(
            "the cluster's key prefix in Redis (and of Unix broadcaster sockets)",
            "letters, digits, _ . : -",
            flag="--prefix",
        ),
    )
    broadcast = fields.String(
        load_default=None,
        allow_none=True,
        validate=validate.OneOf(("local", "redis", "unix")),
        metadata=meta(
            "how emits cross processes (none: redis when redis_url is set, else local)",
            "local | redis | unix",
        ),
    )
    broadcast_dir = text(
        load_default=None,
        allow_none=True,
        metadata=meta(
            "directory of the Unix-socket broadcaster (broadcast = unix)",
            "a directory path",
            flag="--broadcast-dir",
        ),
    )
    # Metrics
    metrics_path = text(
        load_default=None,
        allow_none=True,
        validate_more=validate.Regexp(r"^/"),
        metadata=meta("URL path where the app serves Prometheus metrics", "a path starting with /"),
    )
    metrics_bind = text(
        load_default=None,
        allow_none=True,
        validate_more=check_metrics_bind,
        metadata=meta(
            "a separate HOST:PORT listener for Prometheus metrics",
            "HOST:PORT",
            flag="--metrics-bind",
        ),
    )
    # HTTP publish API
    publish_key = text(
        load_default=None,
        allow_none=True,
        validate_more=validate.Length(min=16),
        metadata=meta(
            "shared key of the HTTP publish API (Authorization: Bearer)",
            "a string of at least 16 characters",
        ),
    )
    publish_secret = text(
        load_default=None,
        allow_none=True,
        validate_more=validate.Length(min=16),
        metadata=meta(
            "HMAC-SHA256 secret of the HTTP publish API", "a string of at least 16 characters"
        ),
    )
    publish_window = Float(
        load_default=300.0,
        validate=POSITIVE,
        metadata=meta(
            "seconds a signed publish request's timestamp stays valid", "a number > 0 (seconds)"
        ),
    )
    publish_max_body = Int(
        load_default=MIB,
        validate=validate.Range(min=1),
        metadata=meta(
            "largest publish request body in bytes (413 beyond)", "an integer >= 1 (bytes)"
        ),
    )


SCHEMA = SettingsSchema()


def setting_names() -> tuple[str, ...]:
    """Every setting name, in schema order."""
    return tuple(SCHEMA.fields)


def reloadable() -> frozenset[str]:
    """The settings a reload (SIGHUP) applies without a restart."""
    return frozenset(n for n, f in SCHEMA.fields.items() if f.metadata.get("reloadable"))


def env_var(name: str) -> str:
    """``"ping_interval"`` -> ``"MLSOCKETS_PING_INTERVAL"``."""
    return ENV_PREFIX + name.upper()


# --- the value object -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Settings:
    """The validated settings of one serving process (see :class:`SettingsSchema` for each).

    Values are normalised: lists are tuples, and the "0 means none" settings
    (``max_message_size``, ``ping_interval``, ``handshake_rate``) are None when off.
    ``sources`` says where each value came from ("default", "file PATH", "environment
    variable NAME", "flag --NAME"); it does not take part in equality.
    """

    bind: tuple[str, ...]
    certfile: str | None
    keyfile: str | None
    pid_file: str | None
    max_message_size: int | None
    max_queue: int
    ping_interval: float | None
    ping_timeout: float
    handshake_timeout: float
    close_timeout: float
    compression: bool
    shutdown_grace: float
    allowed_origins: tuple[str, ...]
    require_origin: bool
    handshake_rate: float | None
    handshake_burst: int
    log_level: str
    access_log: bool
    redis_url: str | None
    prefix: str
    broadcast: str | None
    broadcast_dir: str | None
    metrics_path: str | None
    metrics_bind: str | None
    publish_key: str | None
    publish_secret: str | None
    publish_window: float
    publish_max_body: int
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    def changes(self, newer: Settings) -> dict[str, tuple[object, object]]:
        """``{name: (old, new)}`` for every setting that differs in ``newer``."""
        return {
            name: (getattr(self, name), getattr(newer, name))
            for name in setting_names()
            if getattr(self, name) != getattr(newer, name)
        }

    def public(self) -> dict[str, object]:
        """Every setting as JSON-friendly data, secrets masked (for ``check --json``)."""
        out: dict[str, object] = {}
        for name in setting_names():
            value = getattr(self, name)
            if name in ("publish_key", "publish_secret") and value is not None:
                value = "***"
            elif name == "redis_url" and value is not None:
                value = _redact(value)
            out[name] = list(value) if isinstance(value, tuple) else value
        return out


def _redact(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    return f"{scheme}{sep}***@{host}" if at and userinfo else url


def replace(settings: Settings, **changes: object) -> Settings:
    """A copy of ``settings`` with some values changed (not validated again)."""
    return dataclasses.replace(settings, **changes)  # type: ignore[arg-type]
