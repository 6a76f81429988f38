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

from .reload import ReloadCallback, notify_reload, on_reload
from .schema import (
    CONFIG_ENV,
    ENV_ALIASES,
    ENV_PREFIX,
    LOG_LEVELS,
    Settings,
    SettingsSchema,
    env_var,
    reloadable,
    replace,
    setting_names,
)
from .sources import explicit_values, load

__all__ = [
    "ENV_PREFIX",
    "CONFIG_ENV",
    "ENV_ALIASES",
    "LOG_LEVELS",
    "ReloadCallback",
    "Settings",
    "SettingsSchema",
    "env_var",
    "explicit_values",
    "load",
    "notify_reload",
    "on_reload",
    "reloadable",
    "replace",
    "setting_names",
]
