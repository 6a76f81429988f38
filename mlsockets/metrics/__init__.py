"""The instrumentation API every layer calls; stdlib only, a leaf (no gevent, Flask, redis or
prometheus_client here).

With no backend installed every call costs a function call or an integer addition, nothing
more. :func:`enable` installs the Prometheus backend (:mod:`mlsockets.metrics.prometheus`, the
only module that imports prometheus_client); ``Server(metrics_bind=...)``, the Flask
extension's ``MLSOCKETS_METRICS_PATH`` and ``SocketApp(metrics_path=...)`` call it.
docs/metrics.md lists every metric.

Two kinds of calls:

* **Counts on the hot path** go into plain integers of :data:`COUNTS` (one per process),
  e.g. ``COUNTS.messages_in += n`` in the transport's read loop: no lock, no call, no
  label lookup per frame. The backend folds them into its metrics in batches with
  :func:`fold`, which the transport's reaper calls about once a second and every scrape calls
  before rendering (so this process's numbers are exact at scrape time).
* **Events** are rare enough for a call: :func:`handshake`, :func:`error_reply`,
  :func:`connection_closed` (plain counting too), and the latency observations
  :func:`event_handled` and :func:`published`, which go to the backend at once (a histogram
  needs each value; there is one per handler call or Redis publish, never per frame).

For broadcasters (the call another engineer's ``broadcast/unix.py`` makes)::

    from mlsockets import metrics

    metrics.broadcast_dropped(3, broadcaster="unix")   # 3 deliveries lost, with a WARNING
    metrics.publish_failed("unix")                       # a publish that raised
    started = time.perf_counter()
    ...                                                  # the publish itself
    metrics.published("unix", time.perf_counter() - started)

A broadcaster that keeps its own counters and state (the Redis relay) registers itself with
:func:`watch_relay` instead, and the backend reads them at each fold.

Under gunicorn, metrics are correct across workers only in prometheus_client's multiprocess
mode: set ``PROMETHEUS_MULTIPROC_DIR`` to an empty, writable directory before gunicorn
starts (``deploy/gunicorn.conf.py`` clears it and reaps dead workers' gauges). Without it a
WARNING says that each worker counts for itself.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Callable, Iterable
from importlib import import_module
from typing import Any, Protocol

from mlsockets.exceptions import ConfigurationError

__all__ = [
    "COUNTS",
    "MULTIPROC_ENV",
    "Backend",
    "Counts",
    "RelaySource",
    "broadcast_dropped",
    "clear_multiprocess_dir",
    "connection_closed",
    "enable",
    "enabled",
    "error_reply",
    "event_handled",
    "exposition",
    "fold",
    "gunicorn_worker",
    "handshake",
    "mark_process_dead",
    "metrics_app",
    "metrics_wsgi",
    "multiprocess",
    "process_exit",
    "publish_failed",
    "published",
    "set_backend",
    "watch_relay",
]

logger = logging.getLogger("mlsockets.metrics")

#: The environment variable that turns on prometheus_client's multiprocess mode.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class Counts:
    """Monotonic counters of one process, added to in place by the layers that count.

    Integers only grow (the backend folds the difference since its last fold), so counting
    never races with folding. Dictionaries map a label (a status, a code) to its count.
    """

    __slots__ = (
        "opened",
        "closed",
        "messages_in",
        "messages_out",
        "bytes_in",
        "bytes_out",
        "slow_consumers",
        "handshakes",
        "errors",
        "close_sent",
        "close_received",
        "dropped",
        "publish_failures",
    )

    def __init__(self) -> None:
        self.opened = 0  #: WebSocket connections opened (after the 101)
        self.closed = 0  #: ... and closed again
        self.messages_in = 0  #: complete messages received (not control frames)
        self.messages_out = 0  #: messages queued for sending (a broadcast counts each receiver)
        self.bytes_in = 0  #: bytes read from WebSocket connections (frame headers included)
        self.bytes_out = 0  #: bytes written to WebSocket connections (frame headers included)
        self.slow_consumers = 0  #: connections dropped (1008) because their queue overflowed
        self.handshakes: dict[int, int] = {}  #: HTTP status of each WebSocket handshake
        self.errors: dict[str, int] = {}  #: error replies sent, by error code
        self.close_sent: dict[int, int] = {}  #: close codes this side sent
        self.close_received: dict[int, int] = {}  #: close codes received (1006: none)
        self.dropped: dict[str, int] = {}  #: deliveries a broadcaster lost, by broadcaster
        self.publish_failures: dict[str, int] = {}  #: publishes that raised, by source


#: This process's counters (there is one set per process, as there is one registry).
COUNTS = Counts()


class RelayStats(Protocol):
    """The counters a relay keeps (:class:`mlsockets.broadcast.redis.RelayStats`)."""

    published: int
    publish_failures: int
    dropped: int
    connects: int
    disconnects: int


class RelaySource(Protocol):
    """A relay whose state and counters the backend reads at each fold."""

    @property
    def state(self) -> str: ...

    @property
    def stats(self) -> RelayStats: ...


class Backend(Protocol):
    """What a metrics backend implements (:class:`mlsockets.metrics.prometheus.Prometheus`)."""

    def fold(self, counts: Counts, relays: Iterable[RelaySource]) -> None:
        """Bring the metrics up to date with ``counts`` and the relays' counters."""

    def observe_handler(self, event: str, seconds: float) -> None: ...

    def observe_publish(self, source: str, seconds: float) -> None: ...

    def render(self) -> tuple[str, bytes]:
        """The exposition of every process's metrics: ``(content type, body)``."""
        ...

    def process_exit(self, pid: int) -> None:
        """This process ends: its live gauges must no longer count."""


_backend: Backend | None = None
_relays: weakref.WeakSet[Any] = weakref.WeakSet()
_lock = threading.Lock()
_under_gunicorn = False
_warned_per_worker = False


# -- installing a backend -----------------------------------------------------------------


def enabled() -> bool:
    """True once a backend is installed."""
    return _backend is not None


def multiprocess() -> bool:
    """True when ``PROMETHEUS_MULTIPROC_DIR`` is set (prometheus_client multiprocess mode)."""
    return bool(os.environ.get(MULTIPROC_ENV))


def enable() -> Backend:
    """Install the Prometheus backend (once per process; later calls return it).

    The counts made before are folded in at the next :func:`fold`.

    Raises:
        ConfigurationError: prometheus-client is not installed, or ``PROMETHEUS_MULTIPROC_DIR``
            names no writable directory.
    """
    global _backend
    with _lock:
        if _backend is not None:
            return _backend
        try:
            module = import_module("mlsockets.metrics.prometheus")
        except ImportError as exc:
            raise ConfigurationError(
                f"metrics need prometheus-client: pip install 'mlsockets[metrics]' ({exc})"
            ) from None
        backend: Backend = module.Prometheus()
        _backend = backend
    _warn_per_worker()
    return backend


def set_backend(backend: Backend | None) -> Backend | None:
    """Install ``backend`` (None: none) and return the previous one (for tests, other
    backends)."""
    global _backend
    with _lock:
        previous, _backend = _backend, backend
    return previous


# -- counting -------------------------------------------------------------------------------


def handshake(status: int) -> None:
    """Count one WebSocket handshake answered with HTTP ``status`` (101, 400, 401...)."""
    counts = COUNTS.handshakes
    counts[status] = counts.get(status, 0) + 1


def error_reply(code: str) -> None:
    """Count one error reply (or ``mls.error``) sent to a client, by its error code."""
    counts = COUNTS.errors
    counts[code] = counts.get(code, 0) + 1


def connection_closed(sent: int | None, received: int | None) -> None:
    """Count one closed WebSocket with the close codes it sent and received (None: none)."""
    COUNTS.closed += 1
    if sent is not None:
        COUNTS.close_sent[sent] = COUNTS.close_sent.get(sent, 0) + 1
    if received is not None:
        COUNTS.close_received[received] = COUNTS.close_received.get(received, 0) + 1


def broadcast_dropped(n: int = 1, *, broadcaster: str) -> None:
    """Count ``n`` deliveries a broadcaster lost (a full queue, an undecodable message).

    Call it where the WARNING for the drop is logged; ``broadcaster`` names the broadcaster
    (``"unix"``, ``"redis"``...) and becomes a label, so it must be one of a few fixed names.
    """
    counts = COUNTS.dropped
    counts[broadcaster] = counts.get(broadcaster, 0) + n


def publish_failed(source: str) -> None:
    """Count one publish that raised (``source``: ``"emitter"``, ``"unix"``...)."""
    counts = COUNTS.publish_failures
    counts[source] = counts.get(source, 0) + 1


def watch_relay(relay: RelaySource) -> None:
    """Report ``relay``'s ``state`` and ``stats`` (read at each fold; held weakly)."""
    _relays.add(relay)


# -- observations (straight to the backend) -------------------------------------------------


def event_handled(event: str, seconds: float) -> None:
    """One event handler call took ``seconds`` (validation included)."""
    backend = _backend
    if backend is not None:
        backend.observe_handler(event, seconds)


def published(source: str, seconds: float) -> None:
    """One publish to the other processes (a Redis ``PUBLISH``) took ``seconds``."""
    backend = _backend
    if backend is not None:
        backend.observe_publish(source, seconds)


# -- folding and exposition -----------------------------------------------------------------


def fold() -> None:
    """Fold :data:`COUNTS` and the watched relays into the backend (no-op without one).

    Called about once a second by the transport's reaper, and by :func:`exposition`.
    """
    backend = _backend
    if backend is None:
        return
    with _lock:
        backend.fold(COUNTS, list(_relays))


def exposition() -> tuple[str, bytes]:
    """Fold this process's counts and render every process's metrics.

    Returns:
        ``(content type, body)`` of the Prometheus text format.

    Raises:
        ConfigurationError: no backend is installed (call :func:`enable`).
    """
    backend = _backend
    if backend is None:
        raise ConfigurationError("metrics are not enabled: call mlsockets.metrics.enable()")
    fold()
    return backend.render()


StartResponse = Callable[..., Any]


def metrics_app(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
    """A WSGI app that answers GET / HEAD with :func:`exposition` (405 to anything else).

    It serves whatever path it is mounted on; ``Server(metrics_bind=...)`` routes only
    ``/metrics`` to it.
    """
    method = environ.get("REQUEST_METHOD", "GET")
    if method not in ("GET", "HEAD"):
        return _plain(start_response, "405 Method Not Allowed", "GET only\n", [("Allow", "GET")])
    try:
        content_type, body = exposition()
    except Exception:  # a bug in the backend: a 500 for the scraper, the traceback logged
        logger.exception("rendering the metrics failed")
        return _plain(start_response, "500 Internal Server Error", "metrics failed\n")
    start_response("200 OK", [("Content-Type", content_type), ("Content-Length", str(len(body)))])
    return [] if method == "HEAD" else [body]


def metrics_wsgi(path: str = "/metrics") -> Callable[[dict[str, Any], StartResponse], list[bytes]]:
    """A WSGI app serving :func:`metrics_app` at ``path`` and 404 everywhere else (the
    plain-HTTP metrics listener of ``Server(metrics_bind=...)``)."""

    def app(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        if environ.get("PATH_INFO") != path:
            return _plain(start_response, "404 Not Found", f"metrics are at {path}\n")
        return metrics_app(environ, start_response)

    return app


def _plain(
    start_response: StartResponse,
    status: str,
    text: str,
    headers: Iterable[tuple[str, str]] = (),
) -> list[bytes]:
    body = text.encode()
    start_response(
        status,
        [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
            *headers,
        ],
    )
    return [body]


# -- processes ------------------------------------------------------------------------------


def gunicorn_worker() -> None:
    """Called by the gunicorn worker as it starts: counts are per worker unless
    ``PROMETHEUS_MULTIPROC_DIR`` is set (a WARNING says so once metrics are enabled)."""
    global _under_gunicorn
    _under_gunicorn = True
    if _backend is not None:
        _warn_per_worker()


def _warn_per_worker() -> None:
    global _warned_per_worker
    if _under_gunicorn and not multiprocess() and not _warned_per_worker:
        _warned_per_worker = True
        logger.warning(
            "%s is not set: each gunicorn worker counts its own metrics and a scrape shows "
            "only the worker that answered it; set it to an empty directory (docs/metrics.md)",
            MULTIPROC_ENV,
        )


def process_exit() -> None:
    """This process is ending (a gunicorn worker): fold the last counts, and in multiprocess
    mode remove its live gauges (connections open, relay state) from the totals."""
    backend = _backend
    if backend is None:
        return
    try:
        fold()
        backend.process_exit(os.getpid())
    except Exception:  # exiting anyway: never turn a clean exit into a traceback
        logger.exception("final metrics fold failed")


def mark_process_dead(pid: int) -> None:
    """For gunicorn's ``child_exit`` hook (the master): drop worker ``pid``'s live gauges,
    also when it was killed before it could do it itself. No-op outside multiprocess mode."""
    if not multiprocess():
        return
    module = import_module("mlsockets.metrics.prometheus")
    module.mark_process_dead(pid)


def clear_multiprocess_dir() -> None:
    """Delete the value files a previous run left in ``PROMETHEUS_MULTIPROC_DIR`` (call it
    once before the workers start: gunicorn's ``on_starting`` hook). Stale files would add
    the old run's counts to the new one's."""
    path = os.environ.get(MULTIPROC_ENV)
    if not path:
        return
    try:
        names = os.listdir(path)
    except FileNotFoundError:
        os.makedirs(path, exist_ok=True)
        return
    for name in names:
        if name.endswith(".db"):
            os.remove(os.path.join(path, name))
