"""The Redis broadcaster: every process of a cluster relays its hub's emits to the others.

Setup (each process: every gunicorn worker, every ``mlsockets serve`` node)::

    broadcaster = RedisBroadcaster.from_url("redis://redis.internal:6379/0")
    hub = Hub(router, authorizers, broadcaster=broadcaster)   # starts the relay

``Hub(broadcaster=...)`` also picks up ``broadcaster.cluster``, the
:class:`~mlsockets.registry.redis.RedisRegistry` that makes presence and the connection
registry cluster-wide (``presence=False`` leaves it out). The Flask extension builds the same
from its ``MLSOCKETS_REDIS_URL`` setting with :meth:`RedisBroadcaster.from_url`.

How an emit travels (docs/cluster.md has the whole picture):

1. :meth:`RedisBroadcaster.publish` encodes one :class:`~mlsockets.broadcast.relay.RelayMessage`
   (version, origin node id, target, envelope, skip) - once per publish;
2. delivers the envelope to this process's connections at once, Redis or not;
3. publishes the relay message to the target's Redis channel (``<prefix>:c:<channel>`` for
   a channel, ``<prefix>:all`` for users, connections, tags and everyone). A send to a
   connection that is local is not relayed at all (connection ids are unique);
4. on every other node, the relay thread reads it and hands it to that hub's local delivery.
   The origin ignores its own relay messages (it delivered in step 2): each connection gets
   the envelope exactly once.

The relay is one ``threading.Thread`` per process, which in a gevent-patched process (every
server process is: ``mlsockets serve`` and the gunicorn worker patch before loading the app)
is a greenlet: deliveries into the hub are cooperative, like any other greenlet's. In an
unpatched process, pass ``dispatch=`` to run deliveries where the hub lives.

The relay subscribes to ``<prefix>:all`` and to the channel of every mlsockets channel with
local members (:meth:`~RedisBroadcaster.channel_added`, waiting up to ``subscribe_timeout``
for Redis to confirm, so a subscriber acknowledged by the hub receives what is published
after; :meth:`~RedisBroadcaster.channel_removed` unsubscribes).

Faults: when the connection to Redis drops, the relay reconnects with capped exponential
backoff and full jitter, subscribes to everything again, and logs every state change
(:attr:`~RedisBroadcaster.state`: ``connecting``, ``connected``, ``reconnecting``,
``closed``; counters in :meth:`~RedisBroadcaster.status`). Meanwhile local delivery goes on,
and :meth:`~RedisBroadcaster.publish` of anything that must reach other nodes raises
:class:`~mlsockets.broadcast.base.BroadcastUnavailable` (after delivering locally) instead of
dropping it. Relay messages published while a node is disconnected do not reach it: Redis
pub/sub is at-most-once.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any, Literal

import redis
from redis.backoff import NoBackoff
from redis.client import PubSub
from redis.retry import Retry

from mlsockets import metrics
from mlsockets.broadcast.base import BroadcastUnavailable, ConnectionTarget, Deliver, Target
from mlsockets.broadcast.relay import (
    ReconnectBackoff,
    RelayChannels,
    RelayError,
    RelayInbox,
    RelayMessage,
    encode,
)
from mlsockets.exceptions import ConfigurationError, InvalidState
from mlsockets.registry.redis import (
    RedisRegistry,
    new_node_id,
    redact_url,
    redis_client,
)
from mlsockets.typing import ConnectionId, NodeId

__all__ = [
    "Dispatch",
    "RelayState",
    "RelayStats",
    "RedisBroadcaster",
    "RedisPublisher",
]

logger = logging.getLogger("mlsockets.broadcast")

#: ``dispatch(fn)`` runs ``fn()`` (a delivery into the hub) where the hub may be called.
Dispatch = Callable[[Callable[[], None]], None]


class RelayState(StrEnum):
    """Where the relay is; compares equal to its string value (``state == "connected"``)."""

    IDLE = "idle"  #: created, not started (not attached to a hub yet)
    CONNECTING = "connecting"  #: started, never connected yet
    CONNECTED = "connected"  #: subscribed to everything it should be; publishes go out
    RECONNECTING = "reconnecting"  #: lost Redis; publishes to other nodes raise meanwhile
    CLOSED = "closed"  #: :meth:`RedisBroadcaster.close` was called


@dataclass(slots=True)
class RelayStats:
    """Counters of one broadcaster since it was created (for metrics and status pages)."""

    published: int = 0  #: relay messages published to Redis
    publish_failures: int = 0  #: publishes that raised BroadcastUnavailable
    received: int = 0  #: relay messages read from Redis, own ones included
    own: int = 0  #: own relay messages ignored (delivered locally when published)
    delivered: int = 0  #: local receivers reached by relay messages from other nodes
    dropped: int = 0  #: undecodable relay messages, or of an unknown version
    connects: int = 0  #: successful (re)connections
    disconnects: int = 0  #: connections lost


def _pubsub_client(client: redis.Redis) -> redis.Redis:
    """A client like ``client`` but whose connections never retry by themselves: the relay
    must see every lost connection to resubscribe and report it."""
    pool = client.connection_pool
    kwargs = {**pool.connection_kwargs, "retry": Retry(NoBackoff(), 0)}
    return redis.Redis(
        connection_pool=redis.ConnectionPool(connection_class=pool.connection_class, **kwargs)
    )


def _patched() -> bool:
    # gevent (or eventlet) replaces threading's primitives when it patches a process.
    return threading.get_ident.__module__ != "_thread"


class RedisPublisher:
    """Publishes relay messages; no subscriptions, no thread (what an Emitter needs).

    Args:
        client: a redis-py client (:func:`mlsockets.registry.redis.redis_client`).
        url: the Redis URL, for error messages (redacted).
    """

    def __init__(self, client: redis.Redis, url: str = "") -> None:
        self._client = client
        self._url = redact_url(url) if url else "Redis"

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        socket_timeout: float | None = 5.0,
        connect_timeout: float | None = 2.0,
        **options: Any,
    ) -> RedisPublisher:
        """A publisher on its own client (see :func:`~mlsockets.registry.redis.redis_client`).

        Raises:
            ConfigurationError: not a ``redis://``, ``rediss://`` or ``unix://`` URL.
        """
        client = redis_client(
            url, socket_timeout=socket_timeout, connect_timeout=connect_timeout, **options
        )
        return cls(client, url)

    def publish(self, channel: str, payload: bytes) -> int:
        """``PUBLISH channel payload``; returns how many relays (nodes) received it.

        Raises:
            BroadcastUnavailable: Redis cannot be reached.
        """
        try:
            return int(self._client.publish(channel, payload))
        except (redis.RedisError, OSError) as exc:
            raise BroadcastUnavailable(f"cannot publish to {self._url}: {exc}") from exc

    def close(self) -> None:
        """Close the connections (safe to call twice)."""
        self._client.close()


class RedisBroadcaster:
    """A :class:`~mlsockets.broadcast.base.Broadcaster` that relays through Redis pub/sub.

    Create it with :meth:`from_url`; the hub calls :meth:`attach` (which starts the relay),
    :meth:`publish`, :meth:`channel_added` and :meth:`channel_removed`. Call :meth:`close`
    at shutdown (the relay thread is a daemon: a process that exits without it is fine).

    Args:
        client: a redis-py client for commands (:func:`~mlsockets.registry.redis.redis_client`).
        node_id: this process's id in the cluster (default: ``host-pid-random``).
        prefix: the cluster's Redis prefix; processes with the same prefix on the same Redis
            form one cluster.
        cluster: the node's cluster registry, exposed as :attr:`cluster` for the hub.
        backoff: spacing of reconnection attempts.
        startup: :meth:`start` waits up to ``startup_timeout`` seconds for the first
            connection; when Redis cannot be reached by then, ``"retry"`` goes on and keeps
            trying in the background (publishes to other nodes raise meanwhile, and an ERROR
            says so), ``"fail"`` raises ConfigurationError.
        subscribe_timeout: seconds :meth:`channel_added` waits for Redis to confirm a
            subscription (0: do not wait).
        poll_interval: seconds between checks for :meth:`close` while Redis is silent.
        keepalive: seconds of silence on the relay's connection after which it PINGs Redis,
            and then waits as long for an answer before reconnecting.
        dispatch: runs each delivery into the hub (default: in the relay thread itself,
            right for gevent-patched processes).
        url: the Redis URL, for logs and errors (redacted).
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        node_id: str | None = None,
        prefix: str = "mls",
        cluster: RedisRegistry | None = None,
        backoff: ReconnectBackoff | None = None,
        startup: Literal["retry", "fail"] = "retry",
        startup_timeout: float = 5.0,
        subscribe_timeout: float = 2.0,
        poll_interval: float = 1.0,
        keepalive: float = 15.0,
        dispatch: Dispatch | None = None,
        url: str = "",
    ) -> None:
        if startup not in ("retry", "fail"):
            raise ConfigurationError(f"startup must be 'retry' or 'fail', not {startup!r}")
        if cluster is not None and node_id is not None and cluster.node_id != node_id:
            raise ConfigurationError("the cluster registry and the broadcaster need one node id")
        self.node_id = NodeId(node_id or (cluster.node_id if cluster else new_node_id()))
        #: The node's cluster registry and presence (the hub uses it), or None.
        self.cluster = cluster
        self.channels = RelayChannels(prefix)
        self.stats = RelayStats()
        self._client = client
        self._pubsub_client = _pubsub_client(client)
        self._backoff = backoff or ReconnectBackoff()
        self._startup = startup
        self._startup_timeout = startup_timeout
        self._subscribe_timeout = subscribe_timeout
        self._poll_interval = poll_interval
        self._keepalive = keepalive
        self._dispatch = dispatch
        self._url = redact_url(url) if url else "Redis"
        self._deliver: Deliver | None = None
        self._state = RelayState.IDLE
        self._lock = threading.Lock()
        self._wanted: set[str] = set()  # Redis channels of the local channels
        self._subscribed: set[str] = set()  # confirmed by Redis on the current connection
        self._confirm: dict[str, threading.Event] = {}
        self._pubsub: PubSub | None = None  # set while CONNECTED
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._connected = threading.Event()  # for startup="fail"
        self._last_error: BaseException | None = None
        self._pid: int | None = None
        self._inbox = RelayInbox(self.node_id)
        self._owns_cluster = False
        # metrics: state and stats are read at each fold (relay state, reconnects, drops)
        metrics.watch_relay(self)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        node_id: str | None = None,
        prefix: str = "mls",
        presence: bool = True,
        ttl: float = 30.0,
        startup: Literal["retry", "fail"] = "retry",
        startup_timeout: float = 5.0,
        backoff: ReconnectBackoff | None = None,
        subscribe_timeout: float = 2.0,
        keepalive: float = 15.0,
        socket_timeout: float | None = 5.0,
        connect_timeout: float | None = 2.0,
        dispatch: Dispatch | None = None,
        **options: Any,
    ) -> RedisBroadcaster:
        """The broadcaster (and, with ``presence``, its cluster registry) for ``url``.

        Args:
            url: ``redis://[user:password@]host[:port][/db]``, ``rediss://...`` (TLS; pass
                ``ssl_ca_certs=...`` etc. as options) or ``unix:///path/to/redis.sock[?db=0]``.
            node_id: this process's id (default: ``host-pid-random``, unique per process).
            prefix: the cluster's key and channel prefix.
            presence: also build the :class:`~mlsockets.registry.redis.RedisRegistry`
                (cluster-wide presence and registry), exposed as :attr:`cluster`.
            ttl: seconds after which a silent node is purged by the others.
            startup, startup_timeout, backoff, subscribe_timeout, keepalive, dispatch: as
                for the class.
            socket_timeout: seconds a Redis command (a publish) may take.
            connect_timeout: seconds to connect to Redis.
            options: other ``redis.Redis.from_url`` keywords.

        Nothing connects until the hub attaches (or :meth:`start` is called).

        Raises:
            ConfigurationError: the URL or an option is invalid.
        """
        node = NodeId(node_id or new_node_id())
        client = redis_client(
            url,
            socket_timeout=socket_timeout,
            connect_timeout=connect_timeout,
            client_name=f"mlsockets:{node}",
            **options,
        )
        cluster = (
            RedisRegistry(client, node_id=node, prefix=prefix, ttl=ttl, url=url)
            if presence
            else None
        )
        broadcaster = cls(
            client,
            node_id=node,
            prefix=prefix,
            cluster=cluster,
            backoff=backoff,
            startup=startup,
            startup_timeout=startup_timeout,
            subscribe_timeout=subscribe_timeout,
            keepalive=keepalive,
            dispatch=dispatch,
            url=url,
        )
        if cluster is not None:
            broadcaster._owns_cluster = True
            # The registry's announcements wait for the relay, or they would reach this
            # process only.
            cluster.ready = lambda: broadcaster.state is RelayState.CONNECTED
            # The node status the registry writes into Redis with each heartbeat.
            cluster.status_source = broadcaster.node_status
        return broadcaster

    # -- state -----------------------------------------------------------------------------

    @property
    def state(self) -> RelayState:
        """The relay's state (see :class:`RelayState`)."""
        return self._state

    def _set_state(self, state: RelayState, reason: str = "") -> None:
        old = self._state
        if old is state:
            return
        self._state = state
        why = f": {reason}" if reason else ""
        level = logging.WARNING if state is RelayState.RECONNECTING else logging.INFO
        logger.log(
            level, "relay %s -> %s%s (node %s, %s)", old, state, why, self.node_id, self._url
        )

    def status(self) -> dict[str, object]:
        """State and counters, for ``mlsockets status``-like pages and metrics."""
        status: dict[str, object] = {
            "node_id": self.node_id,
            "state": str(self._state),
            "channels": len(self._wanted),
            **asdict(self.stats),
        }
        if self.cluster is not None:
            status["cluster"] = self.cluster.status()
        return status

    def node_status(self) -> dict[str, object]:
        """The relay's part of the node status the registry publishes into Redis with
        each heartbeat (``mlsockets status`` shows it): state, reconnects (successful
        connections after the first), disconnects and local channels."""
        return {
            "relay_state": str(self._state),
            "relay_reconnects": max(self.stats.connects - 1, 0),
            "relay_disconnects": self.stats.disconnects,
            "channels": len(self._wanted),
        }

    # -- life cycle ------------------------------------------------------------------------

    def attach(self, deliver: Deliver) -> None:
        """Take the hub's local delivery and :meth:`start` the relay (called by the hub)."""
        self._deliver = deliver
        self.start()

    def start(self) -> None:
        """Start the relay thread (once; later calls do nothing).

        Waits up to ``startup_timeout`` seconds for the first connection (the relay is
        ``connected`` when this returns, unless Redis is unreachable).

        Raises:
            ConfigurationError: with ``startup="fail"``, Redis could not be reached within
                ``startup_timeout`` seconds.
        """
        with self._lock:
            if self._thread is not None or self._state is RelayState.CLOSED:
                return
            self._pid = os.getpid()
            self._thread = threading.Thread(
                target=self._run, name=f"mlsockets-relay-{self.node_id}", daemon=True
            )
            self._set_state(RelayState.CONNECTING)
        if not _patched() and self._dispatch is None:
            logger.warning(
                "the relay runs in an OS thread (this process is not gevent-patched) and "
                "delivers into the hub from there; pass dispatch= or patch the process"
            )
        self._thread.start()
        # Wait for the first connection, so that emits right after start-up go out; an
        # unreachable Redis costs startup_timeout, then "retry" goes on in the background.
        if not self._connected.wait(self._startup_timeout) and self._startup == "fail":
            error = self._last_error
            self.close()
            raise ConfigurationError(
                f"cannot reach Redis at {self._url} within {self._startup_timeout:g} s"
                f"{f': {error}' if error else ''} (startup='retry' waits for it instead)"
            )

    def close(self, timeout: float = 5.0, *, deregister: bool = True) -> None:
        """Stop the relay, and the cluster registry this broadcaster created: with
        ``deregister`` that removes the node from Redis at once, else the other nodes purge
        it once its heartbeat expired (as for a crash). Publishes to other nodes raise
        afterwards. Safe to call twice.
        """
        if self._state is RelayState.CLOSED:
            return
        if self._owns_cluster and self.cluster is not None:
            # First, while the relay still carries the mls.left it announces to the others.
            self.cluster.close(deregister=deregister)
        self._stopping.set()
        with self._lock:
            pubsub = self._pubsub
            self._pubsub = None
            self._set_state(RelayState.CLOSED)
            thread = self._thread
        if pubsub is not None:
            _shutdown(pubsub)  # wakes the relay from its read
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        self._client.close()
        self._pubsub_client.close()

    def _check_pid(self) -> None:
        if self._pid is not None and self._pid != os.getpid():
            raise InvalidState(
                "this RedisBroadcaster was started in another process (forked after the hub "
                "was created, e.g. gunicorn --preload): create the hub in each worker process"
            )

    # -- the Broadcaster protocol ----------------------------------------------------------

    def publish(
        self, target: Target, envelope: Mapping[str, object], skip: ConnectionId | None
    ) -> int:
        """Deliver ``envelope`` to this process's receivers and relay it to the others.

        Returns:
            The number of local receivers.

        Raises:
            BroadcastUnavailable: the relay is not connected, or Redis refused the publish;
                the local receivers got the envelope (``exc.delivered`` of them).
            TypeError, ValueError: the envelope can be encoded neither as JSON nor as
                msgpack (nobody got it); see :func:`~mlsockets.broadcast.relay.encode`.
            InvalidState: not attached to a hub, or used in a process it was not started in.
        """
        deliver = self._deliver
        if deliver is None:
            raise InvalidState("the broadcaster is not attached to a hub")
        self._check_pid()
        payload = encode(RelayMessage(self.node_id, target, envelope, skip))
        count = deliver(target, envelope, skip)
        if isinstance(target, ConnectionTarget) and count:
            return count  # connection ids are unique: nobody else has it
        state = self._state
        if state is not RelayState.CONNECTED:
            self.stats.publish_failures += 1
            raise BroadcastUnavailable(
                f"the Redis relay is {state}: {envelope.get('event')!r} reached {count} local "
                f"connections but not the other processes",
                delivered=count,
            )
        try:
            started = time.perf_counter()
            self._client.publish(self.channels.for_target(target), payload)
            metrics.published("redis", time.perf_counter() - started)  # metrics: latency
        except (redis.RedisError, OSError) as exc:
            self.stats.publish_failures += 1
            raise BroadcastUnavailable(
                f"cannot publish to {self._url} ({exc}): {envelope.get('event')!r} reached "
                f"{count} local connections but not the other processes",
                delivered=count,
            ) from exc
        self.stats.published += 1
        return count

    def channel_added(self, channel: str) -> None:
        """Subscribe to ``channel``'s Redis channel (its first local member joined).

        Waits up to ``subscribe_timeout`` for Redis to confirm, so that what is published
        after the hub acknowledged the subscription reaches it. While the relay is not
        connected, only records the channel: the relay subscribes when it reconnects.
        """
        self._check_pid()
        name = self.channels.channel(channel)
        with self._lock:
            self._wanted.add(name)
            pubsub = self._pubsub if self._state is RelayState.CONNECTED else None
            if pubsub is None or name in self._subscribed:
                return
            confirmed = self._confirm.setdefault(name, threading.Event())
        try:
            pubsub.subscribe(name)
        except Exception as exc:  # the relay sees the broken connection and resubscribes
            logger.debug("subscribing to %s failed: %s", name, exc)
            return
        if self._subscribe_timeout > 0 and threading.current_thread() is not self._thread:
            if not confirmed.wait(self._subscribe_timeout):
                logger.warning(
                    "Redis did not confirm the subscription to %s within %g s",
                    name,
                    self._subscribe_timeout,
                )

    def channel_removed(self, channel: str) -> None:
        """Unsubscribe from ``channel``'s Redis channel (its last local member left)."""
        name = self.channels.channel(channel)
        with self._lock:
            self._wanted.discard(name)
            # Not subscribed from now on: a channel_added before Redis answered must send
            # SUBSCRIBE again (Redis answers both in order).
            self._subscribed.discard(name)
            confirmed = self._confirm.pop(name, None)
            pubsub = self._pubsub if self._state is RelayState.CONNECTED else None
        if confirmed is not None:
            confirmed.set()  # nobody waits for a channel that is gone
        if pubsub is not None:
            try:
                pubsub.unsubscribe(name)  # type: ignore[no-untyped-call]
            except Exception as exc:
                logger.debug("unsubscribing from %s failed: %s", name, exc)

    # -- the relay thread ------------------------------------------------------------------

    def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            pubsub = self._pubsub_client.pubsub()  # type: ignore[no-untyped-call]
            try:
                self._subscribe_all(pubsub)
                failures = 0
                self._listen(pubsub)
            except Exception as exc:
                if self._stopping.is_set():
                    break
                self._lost(exc, failures)
                self._stopping.wait(self._backoff.delay(failures))
                failures += 1
            finally:
                with self._lock:
                    if self._pubsub is pubsub:
                        self._pubsub = None
                    self._subscribed.clear()
                    waiting, self._confirm = self._confirm, {}
                for confirmed in waiting.values():
                    confirmed.set()  # the reconnection subscribes them again
                _close(pubsub)

    def _lost(self, exc: BaseException, failures: int) -> None:
        self._last_error = exc
        expected = isinstance(exc, (redis.RedisError, OSError))
        if not expected:
            logger.exception("the relay failed (a bug); reconnecting")
        was_connected = self._state is RelayState.CONNECTED
        if was_connected:
            self.stats.disconnects += 1
        with self._lock:
            if self._state is RelayState.CONNECTED:
                self._set_state(RelayState.RECONNECTING, str(exc))
        if self._state is RelayState.CONNECTING and failures == 0:
            logger.error(
                "cannot reach Redis at %s (%s): broadcasts will not reach other processes "
                "(and emits raise BroadcastUnavailable) until it can; retrying",
                self._url,
                exc,
            )
        elif not was_connected and failures & (failures - 1) == 0:  # 1, 2, 4, 8... attempts
            logger.info(
                "relay: Redis at %s still unreachable after %d attempts (%s)",
                self._url,
                failures + 1,
                exc,
            )

    def _subscribe_all(self, pubsub: PubSub) -> None:
        """Subscribe to the broadcast channel and every wanted channel, wait until Redis
        confirmed them all, then become CONNECTED (atomically with the last check)."""
        sent: set[str] = set()
        deadline = time.monotonic() + max(self._subscribe_timeout, 5.0)
        while not self._stopping.is_set() and not self._confirmed_all(pubsub, sent):
            with self._lock:
                wanted = self._wanted | {self.channels.broadcast}
            missing, extra = wanted - sent, sent - wanted
            if missing:
                pubsub.subscribe(*sorted(missing))
                sent |= missing
                continue
            if extra:
                pubsub.unsubscribe(*sorted(extra))  # type: ignore[no-untyped-call]
                sent -= extra
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                raise redis.TimeoutError("Redis did not confirm the relay's subscriptions")
            message = pubsub.get_message(timeout=min(left, self._poll_interval))
            if message is not None:
                self._handle(message)
        if self._stopping.is_set():
            return
        if self.cluster is not None and self.stats.connects > 1:
            # Redis may have restarted empty (re-register now), and relay messages were
            # missed while disconnected (the clients get the member lists again).
            self.cluster.wake(missed=True)

    def _confirmed_all(self, pubsub: PubSub, sent: set[str]) -> bool:
        """Become CONNECTED if Redis confirmed every wanted channel (checked and switched
        under the lock, so a channel added meanwhile is either seen here or subscribed by
        :meth:`channel_added` itself)."""
        with self._lock:
            wanted = self._wanted | {self.channels.broadcast}
            if not (wanted <= self._subscribed and sent <= wanted):
                return False
            if self._stopping.is_set():
                raise redis.ConnectionError("the relay is closing")
            self._pubsub = pubsub
            self._set_state(RelayState.CONNECTED)
            self.stats.connects += 1
            self._connected.set()
            return True

    def _listen(self, pubsub: PubSub) -> None:
        """Read until closed or the connection breaks. After ``keepalive`` seconds of
        silence, PING: a connection whose peer vanished without a reset (a partition) gets
        no answer within another ``keepalive`` and is dropped, instead of going deaf."""
        heard = time.monotonic()
        pinged = False
        while not self._stopping.is_set():
            message = pubsub.get_message(timeout=min(self._poll_interval, self._keepalive))
            now = time.monotonic()
            if message is not None:
                heard, pinged = now, False
                self._handle(message)
            elif now - heard > self._keepalive:
                if pinged:
                    raise redis.TimeoutError(f"no answer from Redis for {now - heard:.0f} s")
                pubsub.ping()
                heard, pinged = now, True

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "message":
            self._relayed(message["data"])
            return
        raw = message.get("channel")
        name = raw.decode() if isinstance(raw, bytes) else str(raw)
        if kind == "subscribe":
            with self._lock:
                self._subscribed.add(name)
                confirmed = self._confirm.pop(name, None)
            if confirmed is not None:
                confirmed.set()
        elif kind == "unsubscribe":
            with self._lock:
                self._subscribed.discard(name)

    def _relayed(self, data: bytes) -> None:
        """One relay message from Redis: decode, ignore our own, deliver the rest."""
        stats = self.stats
        stats.received += 1
        try:
            message = self._inbox.open(data)
        except RelayError:
            stats.dropped += 1
            return
        if message is None:
            stats.own += 1
            return
        deliver = self._deliver
        if deliver is None:
            return

        def run() -> None:
            try:
                stats.delivered += deliver(message.target, message.envelope, message.skip)
            except Exception:
                logger.exception("delivering a relay message from %s failed", message.origin)

        if self._dispatch is not None:
            self._dispatch(run)
        else:
            run()

    def __repr__(self) -> str:
        return f"<RedisBroadcaster node={self.node_id} {self._url} {self._state}>"


def _shutdown(pubsub: PubSub) -> None:
    """Break the pub/sub connection so that a read blocked on it returns."""
    sock = getattr(pubsub.connection, "_sock", None)
    if sock is not None:
        try:
            sock.shutdown(2)  # socket.SHUT_RDWR: the reader gets EOF; closing is its job
        except OSError:
            pass


def _close(pubsub: PubSub) -> None:
    try:
        pubsub.close()
    except Exception:  # closing a broken connection: nothing left to do
        pass
