"""``gunicorn -k mlsockets.gunicorn.GeventWebSocketWorker module:app``.

gunicorn's own gevent pywsgi worker, with the mlsockets handler plugged into its one seam
(``wsgi_handler``), a reaper per listener for heartbeats and deadlines, and a graceful 1001
for every WebSocket when the worker stops (SIGTERM, SIGINT, or a HUP reload that replaces
it). WebSocket settings come from ``MLSOCKETS_*`` environment variables.
"""

from __future__ import annotations

from typing import Any

from gunicorn.workers.ggevent import GeventPyWSGIWorker, PyWSGIHandler, PyWSGIServer

from mlsockets import metrics
from mlsockets.metrics.redact import redacted_environ
from mlsockets.protocol.frames import CloseCode
from mlsockets.transport.gevent.handler import WebSocketHandlerMixin
from mlsockets.transport.gevent.options import ServerOptions
from mlsockets.transport.gevent.reaper import Reaper

__all__ = ["GeventWebSocketWorker", "GunicornWebSocketHandler", "GunicornWebSocketServer"]


class GunicornWebSocketHandler(WebSocketHandlerMixin, PyWSGIHandler):  # type: ignore[misc]
    """gunicorn's pywsgi handler (access log, environ) plus the WebSocket upgrade."""

    def log_request(self) -> None:
        # gunicorn formats its access log from the environ: hand it one without the
        # credentials a browser can only put in the URL (?token=...).
        environ = self.environ
        self.environ = redacted_environ(environ)
        try:
            super().log_request()
        finally:
            self.environ = environ


class GunicornWebSocketServer(PyWSGIServer):  # type: ignore[misc]
    """Closes every WebSocket with 1001 when gunicorn stops accepting (shutdown, reload)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ws_options = ServerOptions.from_env()
        self.ws_reaper = Reaper()

    def close(self) -> None:
        """Stop accepting, then close every WebSocket with 1001 and wait (bounded by
        ``MLSOCKETS_SHUTDOWN_GRACE``) for the closing handshakes: gunicorn exits the worker
        as soon as its pool is empty, and callback-mode connections are not in the pool."""
        super().close()
        self.ws_reaper.close_all(CloseCode.GOING_AWAY, "server shutting down")
        self.ws_reaper.wait_empty(self.ws_options.shutdown_grace)


class GeventWebSocketWorker(GeventPyWSGIWorker):  # type: ignore[misc]
    """Drop-in replacement for ``geventwebsocket.gunicorn.workers.GeventWebSocketWorker``."""

    server_class = GunicornWebSocketServer
    wsgi_handler = GunicornWebSocketHandler

    def init_process(self) -> None:
        """Run the worker (gunicorn's ``init_process`` returns when it exits). Metrics: say
        that this process is a gunicorn worker (a WARNING if counts are per worker), and at
        exit fold the last counts and drop this worker's live gauges (multiprocess mode)."""
        metrics.gunicorn_worker()
        try:
            super().init_process()
        finally:
            metrics.process_exit()
