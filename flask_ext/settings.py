"""The ``MLSOCKETS_*`` configuration keys: defaults, validation, and the settings they make.

Every option has a lower-case name (``path``) usable as a keyword argument of
:class:`~flask_mlsockets.MLSockets` and a config key (``MLSOCKETS_PATH``). ``init_app`` sets
each key with ``app.config.setdefault``, the keyword argument (or the built-in default) being
the default value, so the app's own config always wins; then it reads them all once into a
frozen :class:`Settings`. Every field of :class:`mlsockets.hub.HubOptions` is an option too
(``MLSOCKETS_RATE``, ``MLSOCKETS_BURST``, ``MLSOCKETS_HEARTBEAT``...).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

from mlsockets.config import explicit_values, setting_names
from mlsockets.exceptions import ConfigurationError
from mlsockets.formatters import msgpack as _msgpack
from mlsockets.formatters.base import FORMATTERS, get_formatter
from mlsockets.hub import HubOptions

__all__ = ["CONFIG_PREFIX", "Settings", "config_key", "option_defaults", "set_defaults"]

CONFIG_PREFIX = "MLSOCKETS_"

#: The extension's own options and their defaults (docs/flask.md has the table).
_OWN_DEFAULTS: dict[str, object] = {
    "path": "/ws",
    "allowed_origins": None,  # None: same origin only
    "require_origin": False,
    "allow_anonymous": False,
    "handshake_rate": 10.0,  # per second and remote address; None: no limit
    "handshake_burst": 50,
    "formats": None,  # None: json, then msgpack when installed
    "redis_url": None,
    "serve_client": True,
    # How emits cross processes: "local" (this process only), "redis" (MLSOCKETS_REDIS_URL)
    # or "unix" (the processes of one host, over Unix sockets in broadcast_dir).
    # None: "redis" when a Redis URL is set, else "local".
    "broadcast": None,
    "broadcast_dir": None,  # None: <app.instance_path>/mlsockets
    # The HTTP publish API at <path>/api/publish; off unless a key or a secret is set.
    "publish_key": None,  # shared key, sent as "Authorization: Bearer <key>"
    "publish_secret": None,  # HMAC-SHA256 secret for signed requests
    "publish_window": 300.0,  # seconds a signed request's timestamp stays valid
    "publish_max_body": 1 << 20,  # bytes; larger bodies get 413
    # Prometheus metrics served by the app at this path (None: not served by the app).
    "metrics_path": None,
}


def option_defaults() -> dict[str, object]:
    """Every option name with its built-in default, the HubOptions fields included."""
    defaults = dict(_OWN_DEFAULTS)
    hub_defaults = HubOptions()
    for field in dataclasses.fields(HubOptions):
        defaults[field.name] = getattr(hub_defaults, field.name)
    return defaults


def config_key(name: str) -> str:
    """``"path"`` -> ``"MLSOCKETS_PATH"``."""
    return CONFIG_PREFIX + name.upper()


def check_options(options: Mapping[str, object]) -> None:
    """Raise ``TypeError`` for an option name the extension does not know."""
    unknown = sorted(set(options) - set(option_defaults()))
    if unknown:
        raise TypeError(f"unknown MLSockets option(s): {', '.join(unknown)}")


def set_defaults(config: MutableMapping[str, Any], options: Mapping[str, object]) -> frozenset[str]:
    """``config.setdefault`` every ``MLSOCKETS_*`` key. Precedence: the app's config, then
    ``options``, then the settings file and environment of :mod:`mlsockets.config` (for the
    options it shares with them), then the built-in defaults.

    Returns:
        The option names that neither the config nor ``options`` set: these follow a
        configuration reload (:func:`mlsockets.config.on_reload`).

    Raises:
        ConfigurationError: a bad value in the settings file or the environment, or an
            unknown ``MLSOCKETS_*`` environment variable.
    """
    defaults = option_defaults()
    layered = explicit_values(set(defaults) & set(setting_names()))
    followed = frozenset(n for n in defaults if config_key(n) not in config and n not in options)
    for name, default in defaults.items():
        config.setdefault(config_key(name), options.get(name, layered.get(name, default)))
    return followed


@dataclass(frozen=True, slots=True)
class Settings:
    """The validated configuration of one app.

    Attributes:
        path: the URL rule of the WebSocket endpoint (handshakes).
        allowed_origins: origins allowed besides the same origin (see OriginPolicy).
        require_origin: refuse handshakes without an ``Origin`` header.
        allow_anonymous: admit connections nobody authenticated (as ANONYMOUS).
        handshake_rate, handshake_burst: handshakes per remote address; rate None: no limit.
        subprotocols: the subprotocols negotiated, in our order of preference.
        redis_url: the cluster layer's Redis URL, or None for this process only.
        serve_client: serve the browser client at ``<path>/mlsockets.js``.
        broadcast: "local", "redis" or "unix" (resolved: never None).
        broadcast_dir: the Unix-socket broadcaster's directory, or None for the default.
        publish_key, publish_secret: credentials of the HTTP publish API (both None: off).
        publish_window: seconds a signed publish request stays valid.
        publish_max_body: largest publish request body in bytes.
        metrics_path: URL path of the Prometheus metrics, or None.
        hub: the limits and behaviour of the app's hub.
    """

    path: str
    allowed_origins: tuple[str, ...]
    require_origin: bool
    allow_anonymous: bool
    handshake_rate: float | None
    handshake_burst: int
    subprotocols: tuple[str, ...]
    redis_url: str | None
    serve_client: bool
    broadcast: str
    broadcast_dir: str | None
    publish_key: str | None
    publish_secret: str | None
    publish_window: float
    publish_max_body: int
    metrics_path: str | None
    hub: HubOptions

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Settings:
        """Read and check every key (after :func:`set_defaults`).

        Raises:
            ConfigurationError: a value of the wrong type or out of range; the message names
                the key.
        """
        get = _Reader(config)
        path = get.text("path")
        if not path.startswith("/"):
            raise ConfigurationError(f"{config_key('path')} must start with '/', not {path!r}")
        hub = HubOptions(
            **{f.name: config[config_key(f.name)] for f in dataclasses.fields(HubOptions)}
        )
        _check_hub(hub)
        rate = get.optional_number("handshake_rate")
        burst = get.integer("handshake_burst")
        if rate is not None and (rate <= 0 or burst < 1):
            raise ConfigurationError(
                f"{config_key('handshake_rate')} must be > 0 (or None) and "
                f"{config_key('handshake_burst')} >= 1"
            )
        redis_url = config[config_key("redis_url")]
        if redis_url is not None and not (isinstance(redis_url, str) and redis_url):
            raise ConfigurationError(f"{config_key('redis_url')} must be a URL string or None")
        broadcast = config[config_key("broadcast")]
        if broadcast is None:
            broadcast = "redis" if redis_url else "local"
        if broadcast not in ("local", "redis", "unix"):
            raise ConfigurationError(
                f"{config_key('broadcast')} must be 'local', 'redis', 'unix' or None, "
                f"not {broadcast!r}"
            )
        if broadcast == "redis" and not redis_url:
            raise ConfigurationError(
                f"{config_key('broadcast')} is 'redis' but {config_key('redis_url')} is not set"
            )
        window = get.optional_number("publish_window")
        if window is None or window <= 0:
            raise get.fail("publish_window", "> 0 seconds")
        max_body = get.integer("publish_max_body")
        if max_body < 1:
            raise get.fail("publish_max_body", "a positive number of bytes")
        metrics_path = get.optional_text("metrics_path")
        if metrics_path is not None and not metrics_path.startswith("/"):
            raise get.fail("metrics_path", "a path starting with '/' or None")
        return cls(
            path=path.rstrip("/") or "/",
            allowed_origins=get.strings("allowed_origins"),
            require_origin=get.flag("require_origin"),
            allow_anonymous=get.flag("allow_anonymous"),
            handshake_rate=rate,
            handshake_burst=burst,
            subprotocols=_subprotocols(config[config_key("formats")]),
            redis_url=redis_url,
            serve_client=get.flag("serve_client"),
            broadcast=broadcast,
            broadcast_dir=get.optional_text("broadcast_dir"),
            publish_key=get.optional_text("publish_key"),
            publish_secret=get.optional_text("publish_secret"),
            publish_window=window,
            publish_max_body=max_body,
            metrics_path=metrics_path,
            hub=hub,
        )


class _Reader:
    """Typed reads of ``MLSOCKETS_*`` keys, with errors naming the key."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self._config = config

    def fail(self, name: str, expected: str) -> ConfigurationError:
        """The error for key ``name``: it must be ``expected``."""
        value = self._config[config_key(name)]
        return ConfigurationError(f"{config_key(name)} must be {expected}, not {value!r}")

    def optional_text(self, name: str) -> str | None:
        value = self._config[config_key(name)]
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            raise self.fail(name, "a non-empty string or None")
        return value

    def text(self, name: str) -> str:
        value = self._config[config_key(name)]
        if not isinstance(value, str):
            raise self.fail(name, "a string")
        return value

    def flag(self, name: str) -> bool:
        value = self._config[config_key(name)]
        if not isinstance(value, bool):
            raise self.fail(name, "True or False")
        return value

    def integer(self, name: str) -> int:
        value = self._config[config_key(name)]
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(name, "an integer")
        return value

    def optional_number(self, name: str) -> float | None:
        value = self._config[config_key(name)]
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(name, "a number or None")
        if not math.isfinite(value):
            raise self.fail(name, "a finite number")
        return float(value)

    def strings(self, name: str) -> tuple[str, ...]:
        value = self._config[config_key(name)]
        if value is None:
            return ()
        if isinstance(value, str):
            return (value,)
        if isinstance(value, list | tuple | set | frozenset) and all(
            isinstance(v, str) for v in value
        ):
            return tuple(value)
        raise self.fail(name, "a string, a list of strings or None")


def _check_hub(options: HubOptions) -> None:
    def fail(name: str, expected: str) -> ConfigurationError:
        value = getattr(options, name)
        return ConfigurationError(f"{config_key(name)} must be {expected}, not {value!r}")

    if options.heartbeat is not None and not options.heartbeat > 0:
        raise fail("heartbeat", "> 0 seconds or None")
    if not (isinstance(options.rate, int | float) and options.rate > 0):
        raise fail("rate", "> 0 messages per second")
    if not (isinstance(options.burst, int) and options.burst >= 1):
        raise fail("burst", "an integer >= 1")
    if not (isinstance(options.bad_window, int | float) and options.bad_window > 0):
        raise fail("bad_window", "> 0 seconds")
    if not (isinstance(options.presence_grace, int | float) and options.presence_grace >= 0):
        raise fail("presence_grace", ">= 0 seconds")


def _subprotocols(formats: object) -> tuple[str, ...]:
    """Format names ("json", "msgpack") -> their subprotocols, in the order given."""
    by_name = {formatter.name: formatter for formatter in FORMATTERS.values()}
    if formats is None:
        return tuple(
            f.subprotocol
            for f in FORMATTERS.values()
            if f.name != "msgpack" or _msgpack.available()
        )
    if isinstance(formats, str):
        formats = [formats]
    if not isinstance(formats, list | tuple) or not formats:
        raise ConfigurationError(
            f"{config_key('formats')} must be a non-empty list of format names "
            f"({', '.join(by_name)}) or None, not {formats!r}"
        )
    subprotocols = []
    for name in formats:
        formatter = by_name.get(name) if isinstance(name, str) else None
        if formatter is None:
            raise ConfigurationError(
                f"{config_key('formats')}: unknown format {name!r}; known: {', '.join(by_name)}"
            )
        get_formatter(formatter.subprotocol)  # ConfigurationError: msgpack is not installed
        subprotocols.append(formatter.subprotocol)
    return tuple(subprotocols)
