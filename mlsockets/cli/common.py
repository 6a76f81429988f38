"""What every ``mlsockets`` command shares: exit statuses, settings, output, app loading."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Mapping
from typing import Any

from mlsockets import config
from mlsockets.exceptions import ConfigurationError

__all__ = [
    "EXIT_OK",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "Unreachable",
    "add_config_argument",
    "load_app",
    "load_settings",
    "output",
]

#: Exit statuses (docs/reference/cli.md): done; a server, Redis or socket could not be
#: reached; bad usage or configuration (argparse also exits 2).
EXIT_OK = 0
EXIT_UNREACHABLE = 1
EXIT_USAGE = 2


class Unreachable(Exception):
    """Redis, a publish API or a broadcaster socket could not be reached: exit status 1."""


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    """``--config PATH`` (default ``$MLSOCKETS_CONFIG``)."""
    parser.add_argument(
        "--config",
        "-c",
        metavar="PATH",
        default=None,
        help=f"TOML settings file (default: ${config.CONFIG_ENV}, if set)",
    )


def load_settings(args: argparse.Namespace, overrides: Mapping[str, object]) -> config.Settings:
    """The settings: defaults < ``--config`` file < environment < ``overrides`` (flags)."""
    return config.load(config_file=args.config, overrides=overrides)


def output(args: argparse.Namespace, data: Mapping[str, object], lines: list[str]) -> None:
    """Print ``data`` as one JSON document with ``--json``, else ``lines`` for a person."""
    if getattr(args, "json", False):
        print(json.dumps(data, indent=2, sort_keys=True, default=str))
    else:
        for line in lines:
            print(line)


def load_app(spec: str) -> Any:
    """Import ``module:attribute`` (``module`` alone means ``module:app``); with ``()``
    after the name (``module:create_app()``) the factory is called.

    Raises:
        ConfigurationError: the module cannot be imported, has no such attribute, or the
            result is not callable.
    """
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
