"""``mlsockets install module:app --into deploy/``: deploy files for this app.

Writes ``gunicorn.conf.py`` (our gevent WebSocket worker), ``<name>.nginx.conf`` (a site with
the Upgrade / Connection headers, long proxy timeouts and a TLS server) and
``<name>.service`` (a systemd unit running gunicorn), from the templates kept as package data
in ``mlsockets/cli/templates``. Existing files are never overwritten without ``--force``; then
nothing is written at all.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

from mlsockets._version import __version__
from mlsockets.exceptions import ConfigurationError

from .common import add_config_argument, load_settings, output

__all__ = ["add_parser", "run", "render"]

_SPEC = re.compile(r"[A-Za-z_][\w.]*(:[A-Za-z_]\w*(\(\))?)?")


def add_parser(sub: Any) -> None:
    """Add ``install`` to the subcommands."""
    install = sub.add_parser(
        "install",
        help="write deploy files for this app: gunicorn.conf.py, nginx site, systemd unit",
    )
    install.add_argument("app", help="module:app (or module:create_app()), as gunicorn takes it")
    install.add_argument("--into", required=True, metavar="DIR", help="the folder to write to")
    add_config_argument(install)
    install.add_argument("--server-name", default="example.com", help="nginx server_name")
    install.add_argument("--workers", type=int, default=2, help="gunicorn workers (2)")
    install.add_argument("--user", default="www-data", help="the service's user (www-data)")
    install.add_argument(
        "--bind", help="gunicorn's listener, HOST:PORT or unix:PATH (default: first bind setting)"
    )
    install.add_argument("--name", help="service name (default: from the module name)")
    install.add_argument(
        "--workdir", help="the app's directory, imported from (default: the current one)"
    )
    install.add_argument(
        "--ssl-certificate", help="PEM chain (default /etc/letsencrypt/live/NAME/fullchain.pem)"
    )
    install.add_argument(
        "--ssl-certificate-key", help="PEM key (default /etc/letsencrypt/live/NAME/privkey.pem)"
    )
    install.add_argument("--force", action="store_true", help="overwrite existing files")
    install.add_argument("--json", action="store_true", help="print JSON (for scripts)")


def _template(name: str) -> Template:
    text = resources.files("mlsockets.cli").joinpath("templates", name).read_text("utf-8")
    return Template(text)


def render(args: argparse.Namespace) -> dict[str, str]:
    """The files to write: file name -> content.

    Raises:
        ConfigurationError: a bad app spec, worker count or setting.
    """
    if not _SPEC.fullmatch(args.app):
        raise ConfigurationError(f"APP {args.app!r}: expected module:app or module:factory()")
    if args.workers < 1:
        raise ConfigurationError(f"--workers {args.workers}: must be >= 1")
    settings = load_settings(args, {"bind": [args.bind] if args.bind else None})
    module = args.app.partition(":")[0]
    name = args.name or re.sub(r"[^A-Za-z0-9-]+", "-", module).strip("-") or "mlsockets"
    into = Path(args.into).resolve()
    workdir = str(Path(args.workdir or os.getcwd()).resolve())
    bind = settings.bind[0]
    gunicorn_conf = str(into / "gunicorn.conf.py")
    config_file = args.config or os.environ.get("MLSOCKETS_CONFIG")
    env_line = f"MLSOCKETS_CONFIG={Path(config_file).resolve()}" if config_file else None
    ping = settings.ping_interval or 20.0
    values = {
        "app": args.app,
        "module": module,
        "version": __version__,
        "name": name,
        "workdir": workdir,
        "bind": bind,
        "workers": str(args.workers),
        "graceful_timeout": f"{settings.shutdown_grace:g}",
        "gunicorn_conf": gunicorn_conf,
        "gunicorn": str(Path(sys.executable).parent / "gunicorn"),
        "user": args.user,
        "server_name": args.server_name,
        "upstream": re.sub(r"\W", "_", name) + "_mlsockets",
        "upstream_server": bind,
        "ssl_certificate": args.ssl_certificate
        or f"/etc/letsencrypt/live/{args.server_name}/fullchain.pem",
        "ssl_certificate_key": args.ssl_certificate_key
        or f"/etc/letsencrypt/live/{args.server_name}/privkey.pem",
        "ping_interval": f"{ping:g}",
        # Several pings long, so a client that answers pings is never cut by nginx.
        "proxy_timeout": f"{max(75, int(ping * 3 + settings.ping_timeout)):d}",
        "stop_timeout": f"{int(settings.shutdown_grace) + 10:d}",
        "raw_env": f"raw_env = [{env_line!r}]" if env_line else "raw_env: list[str] = []",
        "environment": f"Environment={env_line}\n" if env_line else "",
    }
    return {
        "gunicorn.conf.py": _template("gunicorn.conf.py.in").substitute(values),
        f"{name}.nginx.conf": _template("nginx.conf.in").substitute(values),
        f"{name}.service": _template("systemd.service.in").substitute(values),
    }


def run(args: argparse.Namespace) -> int:
    """Write the files, or refuse (exit 2) when one exists and ``--force`` is not given."""
    files = render(args)
    into = Path(args.into)
    if into.exists() and not into.is_dir():
        raise ConfigurationError(f"--into {args.into}: not a directory")
    existing = sorted(name for name in files if (into / name).exists())
    if existing and not args.force:
        raise ConfigurationError(
            f"not overwriting {', '.join(str(into / n) for n in existing)} "
            "(pass --force to replace them)"
        )
    into.mkdir(parents=True, exist_ok=True)
    written = []
    for name, content in files.items():
        path = into / name
        tmp = path.with_name(f".{name}.tmp")
        tmp.write_text(content, encoding="utf-8")
        shutil.move(tmp, path)
        written.append(str(path))
    lines = [f"wrote {path}" for path in written]
    lines.append(f"run it: gunicorn -c {into / 'gunicorn.conf.py'}")
    output(args, {"written": written, "overwritten": [str(into / n) for n in existing]}, lines)
    return 0
