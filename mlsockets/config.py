"""The settings of a serving process: one marshmallow schema, four sources, one order.

Every setting has a lower-case name (``ping_interval``), a TOML key of the same name, an
environment variable ``MLSOCKETS_<NAME>`` and, for ``mlsockets serve``, often a flag
(``--ping-interval``). docs/reference/settings.md lists them all.

Order of precedence, lowest first (the one place it is defined; docs/reference/settings.md
repeats it):

1. the built-in defaults of :class:`SettingsSchema`;
2. a TOML file: ``--config PATH``, else ``$MLSOCKETS_CONFIG``;
3. the environment: ``MLSOCKETS_<NAME>``, and the aliases ``WS_HOST`` / ``WS_PORT`` (= ``bind``),
   ``WS_MAX_MESSAGE_SIZE``, ``WS_HEARTBEAT`` (= ``ping_interval``) and ``WS_ALLOWED_ORIGINS``,
   each below its ``MLSOCKETS_`` name when both are set;
4. command-line flags (``mlsockets serve``); for the Flask extension instead
   ``MLSockets(**options)``, then ``app.config["MLSOCKETS_*"]``.

Call protocol::

    settings = config.load(config_file=args.config, overrides={"bind": ["0.0.0.0:80"]})
    # ConfigurationError: a bad value (naming setting, source, value and what is allowed),
    # an unknown key in the file or an unknown MLSOCKETS_* variable (with a did-you-mean).

A server that reloads its configuration (SIGHUP) calls :func:`load` again and, once it applied
the new settings itself, :func:`notify_reload`; components that follow reloads (the Flask
extension's origin policy and rate limiter) register with :func:`on_reload`.

A leaf module: stdlib and marshmallow only.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import os
import threading
import tomllib
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate

from mlsockets.exceptions import ConfigurationError

__all__ = [
    "ENV_PREFIX",
    "CONFIG_ENV",
    "ENV_ALIASES",
    "LOG_LEVELS",
    "Settings",
    "SettingsSchema",
    "env_var",
    "load",
    "explicit_values",
    "on_reload",
    "notify_reload",
    "setting_names",
    "reloadable",
    "replace",
]

logger = logging.getLogger("mlsockets.config")

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
_ZERO_IS_NONE = frozenset({"max_message_size", "ping_interval", "handshake_rate"})


# --- fields -----------------------------------------------------------------------------------


class _Int(fields.Integer):
    """An integer: an int (not a bool), or a string of digits (environment)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(strict=True, **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, str):
            try:
                value = int(value.strip().replace("_", ""))
            except ValueError:
                raise self.make_error("invalid") from None
        if isinstance(value, bool):
            raise self.make_error("invalid")
        return super()._deserialize(value, attr, data, **kwargs)


class _Float(fields.Float):
    """A finite number: int or float (not a bool), or its text (environment)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, bool):
            raise self.make_error("invalid")
        return super()._deserialize(value, attr, data, **kwargs)


class _Strings(fields.List[str]):
    """A list of strings; from the environment, comma- or space-separated text."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(fields.String(validate=validate.Length(min=1)), **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, str):
            value = value.replace(",", " ").split()
        return tuple(super()._deserialize(value, attr, data, **kwargs))


def _text(validate_more: Any = None, **kwargs: Any) -> fields.String:
    checks: list[Any] = [validate.Length(min=1)]
    if validate_more is not None:
        checks.append(validate_more)
    return fields.String(validate=checks, **kwargs)


def _bind_problem(value: str) -> str | None:
    """What is wrong with a listener address, or None (the same rules as the server's)."""
    if value.startswith("unix:"):
        return "empty Unix socket path" if len(value) == 5 else None
    host, sep, port = value.rpartition(":")
    if not sep:
        return f"{value!r}: expected HOST:PORT or unix:PATH"
    if not port.isdigit():
        return f"{value!r}: port {port!r} is not a number"
    if int(port) > 65535:
        return f"{value!r}: port must be 0-65535"
    return None


def _check_binds(binds: Iterable[str]) -> None:
    for bind in binds:
        problem = _bind_problem(bind)
        if problem:
            raise ValidationError(problem)


def _check_metrics_bind(value: str) -> None:
    if value.startswith("unix:"):
        raise ValidationError("expected HOST:PORT")
    _check_binds([value])


def _check(predicate: Callable[[Any], bool], message: str) -> Callable[[Any], None]:
    """A marshmallow validator (they must raise: a False return is ignored)."""

    def check(value: Any) -> None:
        if not predicate(value):
            raise ValidationError(message)

    return check


def _meta(
    help: str, allowed: str, *, reload: bool = False, flag: str | None = None
) -> dict[str, object]:
    return {"help": help, "allowed": allowed, "reloadable": reload, "flag": flag}


_POSITIVE = validate.Range(min=0, min_inclusive=False)
_NOT_NEGATIVE = validate.Range(min=0)


class SettingsSchema(Schema):
    """Every setting of a serving process, with its default, type, range and documentation.

    Each field's ``metadata`` holds ``help`` (meaning), ``allowed`` (what values are allowed,
    for error messages), ``reloadable`` (SIGHUP applies it without a restart) and ``flag``
    (the ``mlsockets serve`` flag, if any).
    """

    # Listeners
    bind = _Strings(
        load_default=("127.0.0.1:8000",),
        validate=[
            validate.Length(min=1),
            _check_binds,
        ],
        metadata=_meta(
            "listeners: HOST:PORT, [IPv6]:PORT or unix:PATH",
            "a list of HOST:PORT, [IPv6]:PORT or unix:PATH",
            flag="--bind",
        ),
    )
    certfile = _text(
        load_default=None,
        allow_none=True,
        metadata=_meta(
            "PEM certificate chain: TCP listeners speak TLS", "a file path", flag="--certfile"
        ),
    )
    keyfile = _text(
        load_default=None,
        allow_none=True,
        metadata=_meta("PEM private key of certfile", "a file path", flag="--keyfile"),
    )
    pid_file = _text(
        load_default=None,
        allow_none=True,
        metadata=_meta("write the process id here while serving", "a file path", flag="--pid-file"),
    )
    # Limits and heartbeats (ServerOptions)
    max_message_size = _Int(
        load_default=MIB,
        allow_none=True,
        validate=_NOT_NEGATIVE,
        metadata=_meta(
            "largest incoming message in bytes; larger ones close with 1009 (0: no limit)",
            "an integer >= 0 (bytes; 0: no limit)",
            reload=True,
            flag="--max-message-size",
        ),
    )
    max_queue = _Int(
        load_default=MIB,
        validate=validate.Range(min=1),
        metadata=_meta(
            "outbound bytes waiting before a client is dropped as a slow consumer (1008)",
            "an integer >= 1 (bytes)",
            reload=True,
            flag="--max-queue",
        ),
    )
    ping_interval = _Float(
        load_default=20.0,
        allow_none=True,
        validate=_NOT_NEGATIVE,
        metadata=_meta(
            "seconds of silence before the server pings a client (0: no pings)",
            "a number >= 0 (seconds; 0: off)",
            reload=True,
            flag="--ping-interval",
        ),
    )
    ping_timeout = _Float(
        load_default=20.0,
        validate=_POSITIVE,
        metadata=_meta(
            "seconds to wait for data after a ping before closing with 1011",
            "a number > 0 (seconds)",
            reload=True,
            flag="--ping-timeout",
        ),
    )
    handshake_timeout = _Float(
        load_default=10.0,
        validate=_POSITIVE,
        metadata=_meta(
            "seconds a client has to send its complete request head",
            "a number > 0 (seconds)",
            reload=True,
            flag="--handshake-timeout",
        ),
    )
    close_timeout = _Float(
        load_default=5.0,
        validate=_POSITIVE,
        metadata=_meta(
            "seconds to wait for the peer's Close frame",
            "a number > 0 (seconds)",
            reload=True,
            flag="--close-timeout",
        ),
    )
    compression = fields.Boolean(
        load_default=True,
        metadata=_meta(
            "negotiate permessage-deflate (RFC 7692)",
            "true or false (also 1/0, yes/no, on/off)",
            reload=True,
            flag="--no-compression",
        ),
    )
    shutdown_grace = _Float(
        load_default=10.0,
        validate=_POSITIVE,
        metadata=_meta(
            "seconds to let connections close on SIGTERM / SIGINT",
            "a number > 0 (seconds)",
            reload=True,
            flag="--shutdown-grace",
        ),
    )
    # Admission
    allowed_origins = _Strings(
        load_default=(),
        validate=_check(
            lambda origins: all(o == "*" or "://" in o for o in origins), "not an origin"
        ),
        metadata=_meta(
            "origins allowed besides the same origin (Flask extension)",
            "a list of scheme://host[:port], scheme://*.domain[:port] or *",
            reload=True,
        ),
    )
    require_origin = fields.Boolean(
        load_default=False,
        metadata=_meta(
            "refuse handshakes without an Origin header (Flask extension)",
            "true or false",
            reload=True,
        ),
    )
    handshake_rate = _Float(
        load_default=10.0,
        allow_none=True,
        validate=_NOT_NEGATIVE,
        metadata=_meta(
            "handshakes per second per remote address (Flask extension; 0: no limit)",
            "a number >= 0 (per second; 0: no limit)",
            reload=True,
        ),
    )
    handshake_burst = _Int(
        load_default=50,
        validate=validate.Range(min=1),
        metadata=_meta(
            "handshakes an address may make at once (Flask extension)",
            "an integer >= 1",
            reload=True,
        ),
    )
    # Logs
    log_level = fields.String(
        load_default="info",
        validate=validate.OneOf(LOG_LEVELS),
        metadata=_meta(
            "level of the mlsockets.* and root loggers",
            " | ".join(LOG_LEVELS),
            reload=True,
            flag="--log-level",
        ),
    )
    access_log = fields.Boolean(
        load_default=False,
        metadata=_meta(
            "one log line per HTTP request (logger mlsockets.access)",
            "true or false",
            flag="--access-log",
        ),
    )
    # Cluster and broadcasting
    redis_url = _text(
        load_default=None,
        allow_none=True,
        validate_more=validate.Regexp(r"^(redis|rediss|unix)://"),
        metadata=_meta(
            "the cluster's Redis", "a redis://, rediss:// or unix:// URL", flag="--redis"
        ),
    )
    prefix = fields.String(
        load_default="mls",
        validate=validate.Regexp(r"^[A-Za-z0-9_.:-]+$"),
        metadata=_meta(
            "the cluster's key prefix in Redis (and of Unix broadcaster sockets)",
            "letters, digits, _ . : -",
            flag="--prefix",
        ),
    )
    broadcast = fields.String(
        load_default=None,
        allow_none=True,
        validate=validate.OneOf(("local", "redis", "unix")),
        metadata=_meta(
            "how emits cross processes (none: redis when redis_url is set, else local)",
            "local | redis | unix",
        ),
    )
    broadcast_dir = _text(
        load_default=None,
        allow_none=True,
        metadata=_meta(
            "directory of the Unix-socket broadcaster (broadcast = unix)",
            "a directory path",
            flag="--broadcast-dir",
        ),
    )
    # Metrics
    metrics_path = _text(
        load_default=None,
        allow_none=True,
        validate_more=validate.Regexp(r"^/"),
        metadata=_meta(
            "URL path where the app serves Prometheus metrics", "a path starting with /"
        ),
    )
    metrics_bind = _text(
        load_default=None,
        allow_none=True,
        validate_more=_check_metrics_bind,
        metadata=_meta(
            "a separate HOST:PORT listener for Prometheus metrics",
            "HOST:PORT",
            flag="--metrics-bind",
        ),
    )
    # HTTP publish API
    publish_key = _text(
        load_default=None,
        allow_none=True,
        validate_more=validate.Length(min=16),
        metadata=_meta(
            "shared key of the HTTP publish API (Authorization: Bearer)",
            "a string of at least 16 characters",
        ),
    )
    publish_secret = _text(
        load_default=None,
        allow_none=True,
        validate_more=validate.Length(min=16),
        metadata=_meta(
            "HMAC-SHA256 secret of the HTTP publish API", "a string of at least 16 characters"
        ),
    )
    publish_window = _Float(
        load_default=300.0,
        validate=_POSITIVE,
        metadata=_meta(
            "seconds a signed publish request's timestamp stays valid", "a number > 0 (seconds)"
        ),
    )
    publish_max_body = _Int(
        load_default=MIB,
        validate=validate.Range(min=1),
        metadata=_meta(
            "largest publish request body in bytes (413 beyond)", "an integer >= 1 (bytes)"
        ),
    )


_SCHEMA = SettingsSchema()


def setting_names() -> tuple[str, ...]:
    """Every setting name, in schema order."""
    return tuple(_SCHEMA.fields)


def reloadable() -> frozenset[str]:
    """The settings a reload (SIGHUP) applies without a restart."""
    return frozenset(n for n, f in _SCHEMA.fields.items() if f.metadata.get("reloadable"))


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


# --- loading ----------------------------------------------------------------------------------


def load(
    *,
    config_file: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
) -> Settings:
    """Read the settings from every source, in the order of precedence above.

    Args:
        config_file: a TOML file; None: ``$MLSOCKETS_CONFIG``, if set.
        environ: the environment (default ``os.environ``).
        overrides: command-line values by setting name (highest precedence); a value of None
            means "not given" and is skipped.

    Raises:
        ConfigurationError: one line per problem, each naming the setting, where its value
            came from, the value and what is allowed.
    """
    values, sources = _layers(config_file, environ)
    flags = {k: v for k, v in (overrides or {}).items() if v is not None}
    errors: list[str] = []
    _merge(values, sources, flags, lambda name: _flag_source(name), errors)
    if errors:
        raise ConfigurationError("\n".join(errors))
    defaults = {name: f.load_default for name, f in _SCHEMA.fields.items()}
    merged = {**defaults, **values}
    for name in _ZERO_IS_NONE:
        if merged[name] == 0:
            merged[name] = None
    for name in ("bind", "allowed_origins"):
        merged[name] = tuple(merged[name])
    all_sources = {name: sources.get(name, "default") for name in _SCHEMA.fields}
    settings = Settings(**merged, sources=all_sources)
    _check_together(settings)
    return settings


def explicit_values(
    names: Iterable[str] | None = None,
    *,
    config_file: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, object]:
    """The values the TOML file and the environment set (validated), without the defaults.

    The Flask extension takes its defaults from these, below ``MLSockets(**options)`` and
    ``app.config``. "0 means none" settings come back as None.

    Raises:
        ConfigurationError: as :func:`load`.
    """
    values, _ = _layers(config_file, environ)
    wanted = set(setting_names() if names is None else names)
    out: dict[str, object] = {}
    for name, value in values.items():
        if name in wanted:
            out[name] = None if name in _ZERO_IS_NONE and value == 0 else value
    return out


def _flag_source(name: str) -> str:
    flag = _SCHEMA.fields[name].metadata.get("flag")
    return f"flag {flag}" if flag else f"option {name}"


def _layers(
    config_file: str | os.PathLike[str] | None, environ: Mapping[str, str] | None
) -> tuple[dict[str, object], dict[str, str]]:
    """File, then environment: the validated values and their sources."""
    env = os.environ if environ is None else environ
    values: dict[str, object] = {}
    sources: dict[str, str] = {}
    errors: list[str] = []
    path = config_file if config_file is not None else (env.get(CONFIG_ENV) or None)
    if path is not None:
        source = f"file {os.fspath(path)}"
        raw = _read_toml(path)
        unknown = [key for key in raw if key not in _SCHEMA.fields]
        for key in unknown:
            errors.append(f"unknown setting {key!r} in {source}{_did_you_mean(key, None)}")
        file_values = {k: v for k, v in raw.items() if k in _SCHEMA.fields}
        _merge(values, sources, file_values, lambda name: source, errors)
    env_values, env_sources = _from_environ(env, errors)
    _merge(values, sources, env_values, env_sources.__getitem__, errors)
    if errors:
        raise ConfigurationError("\n".join(errors))
    return values, sources


def _read_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read config file {os.fspath(path)}: {exc.strerror or exc}"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(
            f"config file {os.fspath(path)} is not valid TOML: {exc}"
        ) from None


def _from_environ(
    env: Mapping[str, str], errors: list[str]
) -> tuple[dict[str, object], dict[str, str]]:
    values: dict[str, object] = {}
    sources: dict[str, str] = {}
    # Aliases first, so that the MLSOCKETS_ name, read next, overrides them.
    for alias, name in ENV_ALIASES.items():
        if alias in env:
            values[name] = _env_value(name, env[alias])
            sources[name] = f"environment variable {alias}"
    if "WS_HOST" in env or "WS_PORT" in env:
        host = env.get("WS_HOST", "127.0.0.1") or "127.0.0.1"
        port = env.get("WS_PORT", "8000")
        host = f"[{host}]" if ":" in host and not host.startswith("[") else host
        values["bind"] = f"{host}:{port}"
        sources["bind"] = "environment variables WS_HOST/WS_PORT"
    for var, raw in env.items():
        if not var.startswith(ENV_PREFIX) or var == CONFIG_ENV:
            continue
        name = var[len(ENV_PREFIX) :].lower()
        if name not in _SCHEMA.fields:
            errors.append(f"unknown environment variable {var}{_did_you_mean(name, ENV_PREFIX)}")
            continue
        values[name] = _env_value(name, raw)
        sources[name] = f"environment variable {var}"
    return values, sources


def _env_value(name: str, raw: str) -> object:
    # An empty variable clears an optional setting (e.g. MLSOCKETS_REDIS_URL=).
    if raw.strip() == "" and _SCHEMA.fields[name].allow_none:
        return None
    return raw


def _did_you_mean(name: str, prefix: str | None) -> str:
    match = difflib.get_close_matches(name.lower(), setting_names(), n=1, cutoff=0.6)
    if not match:
        return f" (known settings: {', '.join(setting_names())})"
    suggestion = env_var(match[0]) if prefix else match[0]
    return f"; did you mean {suggestion}?"


def _merge(
    values: dict[str, object],
    sources: dict[str, str],
    layer: Mapping[str, object],
    source_of: Callable[[str], str],
    errors: list[str],
) -> None:
    """Validate ``layer`` and put its values over ``values``; errors name the source."""
    for name, value in layer.items():
        try:
            loaded = _SCHEMA.load({name: value}, partial=True)
        except ValidationError as exc:
            messages: object = exc.messages
            if isinstance(messages, dict):
                messages = messages.get(name, messages)
            allowed = (
                _SCHEMA.fields[name].metadata.get("allowed", "") if name in _SCHEMA.fields else ""
            )
            errors.append(
                f"invalid setting {name} = {value!r} (from {source_of(name)}): "
                f"{_flatten(messages)}; allowed: {allowed}"
            )
            continue
        values[name] = loaded[name]
        sources[name] = source_of(name)


def _flatten(messages: object) -> str:
    if isinstance(messages, Mapping):
        return "; ".join(f"item {k}: {_flatten(v)}" for k, v in messages.items())
    if isinstance(messages, list | tuple):
        return " ".join(_flatten(m) for m in messages)
    text = str(messages).rstrip(".")
    return text[:1].lower() + text[1:]


def _check_together(settings: Settings) -> None:
    """Rules that involve two settings."""
    src = settings.sources
    if settings.keyfile and not settings.certfile:
        raise ConfigurationError(
            f"keyfile is set (from {src['keyfile']}) but certfile is not: TLS needs both"
        )
    if settings.broadcast == "redis" and not settings.redis_url:
        raise ConfigurationError(
            f"broadcast = 'redis' (from {src['broadcast']}) but redis_url is not set"
        )


def replace(settings: Settings, **changes: object) -> Settings:
    """A copy of ``settings`` with some values changed (not validated again)."""
    return dataclasses.replace(settings, **changes)  # type: ignore[arg-type]


# --- reload listeners -------------------------------------------------------------------------

ReloadCallback = Callable[[Settings], None]

_listeners: list[Callable[[], ReloadCallback | None]] = []
_listeners_lock = threading.Lock()


def on_reload(callback: ReloadCallback) -> Callable[[], None]:
    """Call ``callback(settings)`` after each successful reload of this process's settings.

    A bound method is held weakly (its object may be collected: it is then forgotten); any
    other callable strongly. Returns a function that unregisters the callback. A callback
    that raises is logged with its traceback and does not stop the others.
    """
    ref: Callable[[], ReloadCallback | None]
    if hasattr(callback, "__self__") and hasattr(callback, "__func__"):
        ref = weakref.WeakMethod(callback)
    else:

        def ref() -> ReloadCallback:
            return callback

    with _listeners_lock:
        _listeners.append(ref)

    def unregister() -> None:
        with _listeners_lock:
            if ref in _listeners:
                _listeners.remove(ref)

    return unregister


def notify_reload(settings: Settings) -> int:
    """Tell every :func:`on_reload` callback about ``settings``; returns how many ran."""
    with _listeners_lock:
        refs = list(_listeners)
    ran = 0
    for ref in refs:
        callback = ref()
        if callback is None:
            with _listeners_lock:
                if ref in _listeners:
                    _listeners.remove(ref)
            continue
        try:
            callback(settings)
            ran += 1
        except Exception:
            logger.exception("a configuration reload listener failed")
    return ran
