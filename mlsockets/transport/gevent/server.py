"""The standalone server: TCP, Unix socket and TLS listeners, graceful shutdown.

``Server(app, ["127.0.0.1:8000", "unix:/run/app.sock"]).serve_forever()`` or
:func:`serve`. On SIGTERM / SIGINT it stops accepting, closes every WebSocket with 1001,
waits up to ``shutdown_grace`` seconds for the closing handshakes and open requests, and
returns (the CLI then exits 0).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import ssl
import stat
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import gevent
from gevent import pywsgi
from gevent.event import Event
from gevent.pool import Pool

from mlsockets import metrics
from mlsockets.exceptions import ConfigurationError
from mlsockets.protocol.frames import CloseCode
from mlsockets.transport.gevent.handler import WebSocketHandler
from mlsockets.transport.gevent.options import ServerOptions
from mlsockets.transport.gevent.reaper import Reaper

__all__ = ["Server", "WSGIServer", "serve", "parse_bind", "make_listener"]

logger = logging.getLogger("mlsockets.transport")

WSGIApp = Callable[..., Any]


class WSGIServer(pywsgi.WSGIServer):  # type: ignore[misc]
    """A pywsgi server that owns a :class:`Reaper` and :class:`ServerOptions`."""

    def __init__(self, *args: Any, ws_options: ServerOptions, ws_reaper: Reaper, **kwargs: Any):
        kwargs.setdefault("handler_class", WebSocketHandler)
        super().__init__(*args, **kwargs)
        self.ws_options = ws_options
        self.ws_reaper = ws_reaper


def parse_bind(bind: str) -> tuple[int, Any]:
    """``host:port``, ``[v6]:port``, ``:port`` or ``unix:/path`` -> (family, address)."""
    if bind.startswith("unix:"):
        path = bind[5:]
        if not path:
            raise ConfigurationError(f"--bind {bind!r}: empty Unix socket path")
        return socket.AF_UNIX, path
    host, sep, port_text = bind.rpartition(":")
    if not sep:
        raise ConfigurationError(f"--bind {bind!r}: expected HOST:PORT or unix:PATH")
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigurationError(f"--bind {bind!r}: port {port_text!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise ConfigurationError(f"--bind {bind!r}: port must be 0-65535")
    if host.startswith("[") and host.endswith("]"):
        return socket.AF_INET6, (host[1:-1], port)
    return socket.AF_INET, (host or "0.0.0.0", port)


def make_listener(bind: str, backlog: int = 2048) -> socket.socket:
    """A bound, listening socket for ``bind``; a stale Unix socket file is replaced."""
    family, address = parse_bind(bind)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if family == socket.AF_UNIX:
            try:
                if stat.S_ISSOCK(os.stat(address).st_mode):
                    os.unlink(address)
            except FileNotFoundError:
                pass
        else:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise ConfigurationError(f"cannot listen on {bind}: {exc.strerror or exc}") from None
    return sock


class Server:
    """Serves one WSGI app, HTTP and WebSocket, on one or more listeners.

    Args:
        app: the WSGI application.
        binds: listener specs (see :func:`parse_bind`) or already listening sockets.
        options: WebSocket settings.
        certfile, keyfile: PEM files; when given, every TCP listener speaks TLS.
        access_log: a logger for one line per request, or None.
        metrics_bind: where to serve Prometheus metrics at ``/metrics`` (plain HTTP, a
            listener of its own, e.g. ``"127.0.0.1:9100"``), or None; needs prometheus-client.
    """

    def __init__(
        self,
        app: WSGIApp,
        binds: Iterable[str | socket.socket] = ("127.0.0.1:8000",),
        *,
        options: ServerOptions | None = None,
        certfile: str | None = None,
        keyfile: str | None = None,
        access_log: logging.Logger | None = None,
        max_connections: int | None = None,
        metrics_bind: str | None = None,
    ) -> None:
        self.app = app
        self._metrics_bind = metrics_bind
        self.metrics_server: pywsgi.WSGIServer | None = None
        if metrics_bind is not None:
            parse_bind(metrics_bind)  # a bad address fails here, before anything listens
            metrics.enable()  # ConfigurationError without prometheus-client
        self.options = options or ServerOptions()
        self.reaper = Reaper()
        self._binds = list(binds)
        if not self._binds:
            raise ConfigurationError("at least one listener is needed")
        self._ssl_context: ssl.SSLContext | None = None
        if certfile:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            try:
                ctx.load_cert_chain(certfile, keyfile)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigurationError(f"cannot load TLS certificate {certfile}: {exc}") from None
            self._ssl_context = ctx
        self._pool = Pool(max_connections)
        self._access_log = access_log
        self.servers: list[WSGIServer] = []
        self._stopped = Event()

    def start(self) -> None:
        """Open the listeners and start accepting (non-blocking)."""
        for bind in self._binds:
            listener = make_listener(bind) if isinstance(bind, str) else bind
            kwargs: dict[str, Any] = {}
            if self._ssl_context is not None and listener.family != socket.AF_UNIX:
                kwargs["ssl_context"] = self._ssl_context
            server = WSGIServer(
                listener,
                self.app,
                spawn=self._pool,
                log=self._access_log,
                error_log=logger,
                ws_options=self.options,
                ws_reaper=self.reaper,
                **kwargs,
            )
            server.start()
            self.servers.append(server)
            logger.info("listening on %s", self._describe(listener))
        if self._metrics_bind is not None and self.metrics_server is None:
            listener = make_listener(self._metrics_bind)
            self.metrics_server = pywsgi.WSGIServer(
                listener, metrics.metrics_wsgi("/metrics"), log=None, error_log=logger
            )
            self.metrics_server.start()
            logger.info("serving metrics on http://%s/metrics", self._describe(listener))

    @property
    def addresses(self) -> list[Any]:
        """Bound addresses (``(host, port)`` or a Unix path), in listener order."""
        return [s.socket.getsockname() for s in self.servers]

    @property
    def metrics_address(self) -> Any:
        """The bound address of the metrics listener (``metrics_bind``), or None."""
        server = self.metrics_server
        return None if server is None else server.socket.getsockname()

    @staticmethod
    def _describe(listener: socket.socket) -> str:
        name = listener.getsockname()
        if listener.family == socket.AF_UNIX:
            return f"unix:{name}"
        return f"{name[0]}:{name[1]}"

    def serve_forever(
        self,
        *,
        install_signals: bool = True,
        on_reload: Callable[[], None] | None = None,
        on_ready: Callable[[], None] | None = None,
    ) -> None:
        """Start (if needed) and block until SIGTERM / SIGINT or :meth:`stop`.

        ``on_reload`` runs in a new greenlet on each SIGHUP (with ``install_signals``): it
        re-reads the configuration and calls :meth:`reconfigure`; connections stay open.
        ``on_ready`` runs once the listeners are open and the signal handlers installed: a
        signal sent after it (e.g. by a supervisor that saw the "serving" line) is handled.
        """
        if not self.servers:
            self.start()
        handlers = []
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                handlers.append(gevent.signal_handler(sig, self._stopped.set))
            if on_reload is not None:
                handlers.append(gevent.signal_handler(signal.SIGHUP, gevent.spawn, on_reload))
        try:
            if on_ready is not None:
                on_ready()
            self._stopped.wait()
        finally:
            for h in handlers:
                h.cancel()
            self.shutdown()

    def reconfigure(self, options: ServerOptions) -> None:
        """Use ``options`` for the connections accepted from now on (a configuration reload).

        Open connections take the new heartbeat and close deadlines, which they read at each
        use. Their message size limit and compression were agreed at the handshake, and
        their queue limit stays, so that a reload never drops a client that is catching up.
        """
        self.options = options
        for server in self.servers:
            server.ws_options = options
        for ws in list(self.reaper.connections):
            ws._options = options.replace(max_queue=ws._options.max_queue)

    def stop(self) -> None:
        """Ask :meth:`serve_forever` to shut down gracefully."""
        self._stopped.set()

    def shutdown(self, grace: float | None = None) -> None:
        """Stop accepting, close every WebSocket with 1001 and wait for them (bounded)."""
        grace = self.options.shutdown_grace if grace is None else grace
        for server in self.servers:
            server.close()
        if self.metrics_server is not None:
            self.metrics_server.close()
        logger.info("shutting down: closing %d WebSocket connections", len(self.reaper.connections))
        self.reaper.close_all(CloseCode.GOING_AWAY, "server shutting down")
        started = time.monotonic()
        # Callback-mode connections have no greenlet in the pool: wait for them separately.
        if not self.reaper.wait_empty(grace):
            logger.warning(
                "shutdown grace period over; dropping %d connections", len(self.reaper.connections)
            )
            for ws in list(self.reaper.connections):
                ws.fail(CloseCode.GOING_AWAY, "server shutting down")
        if not self._pool.join(timeout=max(0.1, grace - (time.monotonic() - started))):
            logger.warning("shutdown grace period over; dropping %d connections", len(self._pool))
            self._pool.kill(timeout=1)
        self.reaper.stop()
        for bind in self._binds:
            if isinstance(bind, str) and bind.startswith("unix:"):
                try:
                    os.unlink(bind[5:])
                except OSError:
                    pass


def serve(
    app: WSGIApp,
    bind: str | Sequence[str] = "127.0.0.1:8000",
    *,
    options: ServerOptions | None = None,
    certfile: str | None = None,
    keyfile: str | None = None,
    access_log: logging.Logger | None = None,
) -> None:
    """Serve ``app`` until SIGTERM / SIGINT; the process should be monkey-patched first."""
    binds = [bind] if isinstance(bind, str) else list(bind)
    Server(
        app, binds, options=options, certfile=certfile, keyfile=keyfile, access_log=access_log
    ).serve_forever()
