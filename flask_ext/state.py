"""Per-app state, kept in ``app.extensions["mlsockets"]``; the hub is per app and per process.

gunicorn forks workers after the app may have been imported (``--preload``), and a hub's
connections belong to the process that accepted them, so :meth:`AppState.hub` creates the hub
lazily and again whenever ``os.getpid()`` changed.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, cast

from flask import Flask

from mlsockets import config
from mlsockets.admission import Admission, HandshakeRateLimiter, OriginPolicy, ReplaceableCheck
from mlsockets.broadcast.base import Broadcaster, Target
from mlsockets.exceptions import ConfigurationError
from mlsockets.formatters.base import FORMATTERS, Formatter, choose
from mlsockets.hub import Hub
from mlsockets.scheduling import Scheduler, Timer
from mlsockets.typing import ConnectionId

from .context import ContextRunner
from .routing import AppAuthorizers, AppRouter
from .settings import Settings, config_key

if TYPE_CHECKING:
    from .extension import MLSockets

__all__ = [
    "EXTENSION_KEY",
    "AppState",
    "ClusterHooks",
    "SchedulerSlot",
    "cluster_for",
    "cluster_hooks",
    "get_state",
]

logger = logging.getLogger("mlsockets.flask")

#: The key of :class:`AppState` in ``app.extensions``.
EXTENSION_KEY = "mlsockets"

BroadcasterFactory = Callable[[], Broadcaster]


def get_state(app: Flask) -> AppState:
    """The state of ``app``.

    Raises:
        RuntimeError: the extension was not initialised on ``app``.
    """
    state = app.extensions.get(EXTENSION_KEY)
    if not isinstance(state, AppState):
        raise RuntimeError(
            f"MLSockets is not initialised on app {app.name!r}: call sockets.init_app(app)"
        )
    return state


class SchedulerSlot:
    """The hub's :class:`~mlsockets.scheduling.Scheduler`: the server's, once one is offered.

    The hub may be created before any handshake (an emit from a view) or in a process with no
    mlsockets server (tests); timers then run in a daemon ``threading.Timer``, which is a
    greenlet in a monkey-patched process.
    """

    def __init__(self) -> None:
        self._target: Scheduler | None = None

    def offer(self, scheduler: object) -> None:
        """Use ``scheduler`` (``environ["mlsockets.scheduler"]``) from now on, if it is one."""
        if scheduler is not None and callable(getattr(scheduler, "call_later", None)):
            self._target = cast(Scheduler, scheduler)

    def call_later(self, delay: float, fn: Callable[[], None]) -> Timer:
        target = self._target
        if target is not None:
            return target.call_later(delay, fn)
        timer = threading.Timer(delay, fn)
        timer.daemon = True
        timer.start()
        return timer


class Publisher(Protocol):
    """What :class:`mlsockets.broadcast.emitter.Emitter` offers: publishing with no hub."""

    def emit(
        self,
        event: str,
        data: object = None,
        *,
        to: str | Target | None = None,
        skip: str | None = None,
    ) -> int: ...


@dataclass(frozen=True, slots=True)
class ClusterHooks:
    """How an app reaches the cluster layer (``MLSOCKETS_BROADCAST`` "redis" or "unix").

    Attributes:
        broadcaster: makes the hub's broadcaster (once per process, with the hub).
        emitter: makes a publish-only emitter (once per process), used by emits in a process
            that has no hub: a CLI command, a job, a worker before its first WebSocket.
        description: names the broadcaster in the hub's log line.
    """

    broadcaster: BroadcasterFactory
    emitter: Callable[[], Publisher]
    description: str = "Redis broadcaster"


def _from_url(module_name: str, class_name: str) -> Callable[[str], Any]:
    key = config_key("redis_url")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(
            f"{key} is set but {module_name} cannot be imported ({exc}); "
            "install the cluster layer: pip install 'mlsockets[redis]'"
        ) from None
    from_url = getattr(getattr(module, class_name, None), "from_url", None)
    if not callable(from_url):
        raise ConfigurationError(
            f"{key} is set but {module_name} has no {class_name}.from_url(url)"
        )
    return cast(Callable[[str], Any], from_url)


def cluster_for(settings: Settings, instance_path: str) -> ClusterHooks | None:
    """The cluster layer ``settings.broadcast`` selects: Redis (``MLSOCKETS_REDIS_URL``),
    the Unix sockets of one host (``MLSOCKETS_BROADCAST_DIR``, by default
    ``<instance_path>/mlsockets``), or None for "local"."""
    if settings.broadcast == "unix":
        directory = settings.broadcast_dir or os.path.join(instance_path, "mlsockets")
        return cluster_hooks(directory, kind="unix")
    if settings.broadcast == "redis" and settings.redis_url:
        return cluster_hooks(settings.redis_url)
    return None


def _unix_hooks(directory: str) -> ClusterHooks:
    """Factories for the Unix-socket broadcaster (docs/one-host.md). A directory that
    exists is checked now (owner and mode); a missing one is created by the first hub."""
    from mlsockets.broadcast.emitter import Emitter
    from mlsockets.broadcast.unix import UnixBroadcaster
    from mlsockets.registry.hostdir import HostDirectory

    try:
        HostDirectory(directory, create=False)
    except FileNotFoundError:
        pass
    return ClusterHooks(
        broadcaster=lambda: UnixBroadcaster.from_directory(directory),
        emitter=lambda: Emitter.for_directory(directory),
        description=f"Unix-socket broadcaster in {directory}: emits reach this host's processes",
    )


def cluster_hooks(url: str, kind: str = "redis") -> ClusterHooks:
    """The cluster layer's factories for ``url``, checked at ``init_app``. With
    ``kind="unix"``, ``url`` is the socket directory instead (:func:`cluster_for`).

    The contract with the cluster layer (issue 6):
    ``mlsockets.broadcast.redis.RedisBroadcaster.from_url(url)`` returns a
    :class:`~mlsockets.broadcast.base.Broadcaster` (the hub also uses its ``cluster``
    attribute for cluster-wide presence), and
    ``mlsockets.broadcast.emitter.Emitter.from_url(url)`` a :class:`Publisher`. Nothing
    connects before they are called.

    Raises:
        ConfigurationError: a module, or the ``from_url`` in it, is missing; (unix) the
            directory belongs to another user or is open to group/other.
    """
    if kind == "unix":
        return _unix_hooks(url)
    make_broadcaster = _from_url("mlsockets.broadcast.redis", "RedisBroadcaster")
    make_emitter = _from_url("mlsockets.broadcast.emitter", "Emitter")
    return ClusterHooks(
        broadcaster=lambda: cast(Broadcaster, make_broadcaster(url)),
        emitter=lambda: cast(Publisher, make_emitter(url)),
    )


#: The settings a reload changes in a running app (the others need a restart).
_LIVE_SETTINGS = frozenset(
    {"allowed_origins", "require_origin", "handshake_rate", "handshake_burst"}
)


def _origin_policy(settings: Settings) -> OriginPolicy:
    return OriginPolicy(settings.allowed_origins, same_origin=True, require=settings.require_origin)


def _rate_limiter(settings: Settings) -> HandshakeRateLimiter | None:
    if settings.handshake_rate is None:
        return None
    return HandshakeRateLimiter(settings.handshake_rate, settings.handshake_burst)


class AppState:
    """What one app knows about its WebSockets.

    Args:
        extension: the extension whose handlers the app runs.
        app: the application.
        settings: its validated configuration.
        cluster: the cluster layer's factories (None: this process only).
    """

    def __init__(
        self,
        extension: MLSockets,
        app: Flask,
        settings: Settings,
        cluster: ClusterHooks | None = None,
    ) -> None:
        self.extension = extension
        self.settings = settings
        self.runner = ContextRunner(app)
        self.router = AppRouter(extension.registry, self.runner)
        self.authorizers = AppAuthorizers(extension.authorizers, self.runner)
        # Replaceable: a configuration reload swaps them (follow_reloads).
        self.origin = ReplaceableCheck(_origin_policy(settings))
        self.rate_limiter = ReplaceableCheck(_rate_limiter(settings))
        self._followed: frozenset[str] = frozenset()
        self.scheduler = SchedulerSlot()
        #: Handshake endpoints of this app: endpoint name -> its admission checks.
        self.admissions: dict[str, Admission] = {}
        #: Their URL paths (for gevent-websocket's subprotocol hook).
        self.paths: set[str] = set()
        self._cluster = cluster
        self._hub: Hub | None = None
        self._pid = 0
        self._emitter: tuple[int, Publisher] | None = None
        self._lock = threading.Lock()

    def follow_reloads(self, names: frozenset[str]) -> None:
        """Apply reloads of the process settings (SIGHUP on ``mlsockets serve``) to the
        origin policy and the rate limiter, for the option ``names`` that the app's config
        left to the settings file and environment. Registered with
        :func:`mlsockets.config.on_reload`, which holds this state weakly."""
        self._followed = names & _LIVE_SETTINGS
        if self._followed:
            config.on_reload(self._reloaded)

    def _reloaded(self, process: config.Settings) -> None:
        changes: dict[str, Any] = {name: getattr(process, name) for name in self._followed}
        settings = dataclasses.replace(self.settings, **changes)
        if settings == self.settings:
            return
        origin, limiter = _origin_policy(settings), _rate_limiter(settings)  # may raise
        self.settings = settings
        self.origin.replace(origin)
        self.rate_limiter.replace(limiter)
        logger.info(
            "app %r: origins %s, handshake rate %s/s (burst %d) after a configuration reload",
            self.runner.app.name,
            list(settings.allowed_origins) or "same origin only",
            settings.handshake_rate,
            settings.handshake_burst,
        )

    def add_endpoint(self, endpoint: str, path: str, allow_anonymous: bool | None) -> Admission:
        """Record a handshake endpoint and build its admission checks."""
        admission = Admission(
            self.origin,
            self.rate_limiter,
            authenticate=self.extension.principal_for,
            allow_anonymous=self.settings.allow_anonymous
            if allow_anonymous is None
            else allow_anonymous,
        )
        self.admissions[endpoint] = admission
        self.paths.add(path)
        return admission

    def hub(self) -> Hub:
        """This process's hub for the app, created on first use and after a fork."""
        pid = os.getpid()
        hub = self._hub
        if hub is not None and self._pid == pid:
            return hub
        with self._lock:
            if self._hub is None or self._pid != pid:
                self._hub = self._new_hub()
                self._pid = pid
            return self._hub

    def _new_hub(self) -> Hub:
        cluster = self._cluster
        hub = Hub(
            self.router,
            self.authorizers,
            broadcaster=cluster.broadcaster() if cluster is not None else None,
            scheduler=self.scheduler,
            options=self.settings.hub,
        )
        # The servers return once their connections are closed; the process then exits:
        # cancel the presence timers and deregister from the cluster at once (Hub.close).
        hub.close_at_exit()
        logger.info(
            "hub for app %r created in process %d (%s)",
            self.runner.app.name,
            os.getpid(),
            cluster.description
            if cluster is not None
            else "in-process broadcaster: emits reach this process's connections only",
        )
        return hub

    def choose(self, offered: Sequence[str]) -> Formatter | None:
        """The formatter for the subprotocols a client offered (its order), among ours."""
        allowed = self.settings.subprotocols
        return choose([p for p in offered if p in allowed])

    @property
    def preferred_formatter(self) -> Formatter:
        """Our first format: the only one negotiable under gevent-websocket."""
        return FORMATTERS[self.settings.subprotocols[0]]

    def emit(
        self,
        event: str,
        data: object = None,
        *,
        to: str | Target | None = None,
        skip: ConnectionId | None = None,
    ) -> int:
        """Emit through this process's hub; returns the local receivers.

        With the cluster layer and no hub in this process yet, the emit goes out through a
        publish-only emitter instead (no relay is started for it) and 0 is returned: this
        process has no connection to deliver to.
        """
        hub = self._hub if self._pid == os.getpid() else None
        if hub is None and self._cluster is not None:
            self._publisher(self._cluster).emit(event, data, to=to, skip=skip)
            return 0
        return self.hub().emit(event, data, to=to, skip=skip)

    def _publisher(self, cluster: ClusterHooks) -> Publisher:
        pid = os.getpid()
        current = self._emitter
        if current is None or current[0] != pid:
            current = self._emitter = (pid, cluster.emitter())
        return current[1]
