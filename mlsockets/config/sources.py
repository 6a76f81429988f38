"""Reading the settings from their sources, in the order of precedence of
:mod:`mlsockets.config`: defaults < TOML file < environment < flags."""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from marshmallow import ValidationError

from mlsockets.exceptions import ConfigurationError

from .schema import (
    CONFIG_ENV,
    ENV_ALIASES,
    ENV_PREFIX,
    SCHEMA,
    ZERO_IS_NONE,
    Settings,
    env_var,
    setting_names,
)

__all__ = ["load", "explicit_values"]


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
    defaults = {name: f.load_default for name, f in SCHEMA.fields.items()}
    merged = {**defaults, **values}
    for name in ZERO_IS_NONE:
        if merged[name] == 0:
            merged[name] = None
    for name in ("bind", "allowed_origins"):
        merged[name] = tuple(merged[name])
    all_sources = {name: sources.get(name, "default") for name in SCHEMA.fields}
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
            out[name] = None if name in ZERO_IS_NONE and value == 0 else value
    return out


def _flag_source(name: str) -> str:
    flag = SCHEMA.fields[name].metadata.get("flag")
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
        unknown = [key for key in raw if key not in SCHEMA.fields]
        for key in unknown:
            errors.append(f"unknown setting {key!r} in {source}{_did_you_mean(key, None)}")
        file_values = {k: v for k, v in raw.items() if k in SCHEMA.fields}
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
        if name not in SCHEMA.fields:
            errors.append(f"unknown environment variable {var}{_did_you_mean(name, ENV_PREFIX)}")
            continue
        values[name] = _env_value(name, raw)
        sources[name] = f"environment variable {var}"
    return values, sources


def _env_value(name: str, raw: str) -> object:
    # An empty variable clears an optional setting (e.g. MLSOCKETS_REDIS_URL=).
    if raw.strip() == "" and SCHEMA.fields[name].allow_none:
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
            loaded = SCHEMA.load({name: value}, partial=True)
        except ValidationError as exc:
            messages: object = exc.messages
            if isinstance(messages, dict):
                messages = messages.get(name, messages)
            allowed = (
                SCHEMA.fields[name].metadata.get("allowed", "") if name in SCHEMA.fields else ""
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
