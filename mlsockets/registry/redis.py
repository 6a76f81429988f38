"""The cluster registry and presence, kept in Redis: who is online, where, and in which
presence channels, across every node (process) of a cluster.

One :class:`RedisRegistry` per node, sharing the node id of its
:class:`~mlsockets.broadcast.redis.RedisBroadcaster` (``RedisBroadcaster.from_url`` builds
both; ``Hub(broadcaster=...)`` picks the registry up from ``broadcaster.cluster``).

Call protocol (the hub's side, :class:`mlsockets.hub.ClusterPresence`):

1. :meth:`RedisRegistry.attach` once, with the hub's announcers ``on_joined(channel, user_id,
   info)``, ``on_left(channel, user_id, info)`` and ``on_refresh()``; it registers the node
   (synchronously when Redis answers) and starts the heartbeat thread, which calls them
   (only while :attr:`RedisRegistry.ready`: the relay is connected).
2. :meth:`~RedisRegistry.connection_added` / :meth:`~RedisRegistry.connection_removed` for
   every connection; :meth:`~RedisRegistry.join` when a user's first local connection enters
   a presence channel and :meth:`~RedisRegistry.leave` when their last one left it (after
   the grace period): they return whether that made the user join or leave the *cluster*
   (announce ``mls.joined`` / ``mls.left`` then);
   :meth:`~RedisRegistry.members` and :meth:`~RedisRegistry.count_user` answer for the
   cluster.
3. :meth:`~RedisRegistry.close` at shutdown.

None of these raise when Redis is down: the node then answers from its own knowledge
(``join``/``leave`` return True, ``members``/``count_user`` None), remembers what it did, and
writes it back (announcing what the other nodes missed) once Redis answers again. The
queries meant for applications (:meth:`~RedisRegistry.online_users`,
:meth:`~RedisRegistry.user_connections`, :meth:`~RedisRegistry.channel_members`,
:meth:`~RedisRegistry.nodes`) raise :class:`~mlsockets.broadcast.base.ClusterUnavailable`.

Liveness: each node refreshes ``<prefix>:node:<id>`` (TTL ``ttl``) every ``ttl / 3`` seconds.
Every node also looks for nodes whose key expired; the first to find one purges it in one Lua
script (atomic: exactly one survivor reports it), which returns the presence members that
had no other node, and that survivor announces ``mls.left`` for each. A node that finds its
own key gone (Redis restarted empty, or it was purged after a long pause) registers again;
when it had been purged, it announces ``mls.joined`` for its members again.

Node status: the value of ``<prefix>:node:<id>`` is a small JSON object
(:meth:`~RedisRegistry.node_status`: node id, pid, host, started-at, updated-at, mlsockets
version, local connections, plus what :attr:`~RedisRegistry.status_source` adds: the
broadcaster's relay state, reconnects and local channels), rewritten with every heartbeat
(the same single ``SET``, so it costs nothing extra and expires with the node).
:meth:`~RedisRegistry.node_statuses` reads them for ``mlsockets status``.

Keys (``p`` = prefix; ``|`` cannot occur in a channel name, so ``ch|user`` is unambiguous)::

    p:node:<node>      heartbeat + status JSON, TTL p:nodes          set of node ids
    p:tomb:<node>      "this node was purged"       p:users          set of online user ids
    p:nc:<node>        hash conn -> user ("" anon)  p:uc:<user>      hash conn -> node
    p:np:<node>        set of JSON [channel, user]  p:pm:<channel>   hash user -> info JSON
    p:pu:<ch>|<user>   set of nodes where the user is present in the channel

A user is a member of a presence channel while any node has them there: two tabs on two
nodes are one member. Standalone Redis only (the scripts touch keys they compute).
This module and :mod:`mlsockets.broadcast.redis` are the only ones importing redis.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, cast

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from mlsockets._version import __version__
from mlsockets.broadcast.base import ClusterUnavailable
from mlsockets.broadcast.relay import ReconnectBackoff, RelayChannels
from mlsockets.channels.presence import Member
from mlsockets.exceptions import ConfigurationError, InvalidState
from mlsockets.registry.cluster import PresenceHook, RefreshHook, json_object, new_node_id
from mlsockets.typing import ChannelName, ConnectionId, NodeId, UserId

__all__ = [
    "PresenceHook",
    "RefreshHook",
    "RedisRegistry",
    "new_node_id",
    "redis_client",
    "redact_url",
]

logger = logging.getLogger("mlsockets.registry")

_Announcement = tuple[PresenceHook, ChannelName, UserId, Mapping[str, object]]

#: Redis errors that mean "cannot reach Redis" (as opposed to a bug in a command).
REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError, OSError)

_TOMBSTONE_MS = 3_600_000  # how long a purged node can come back and be announced again

_ADD_CONN = """
local p, node, conn, user = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
redis.call('HSET', p..':nc:'..node, conn, user)
if user ~= '' then
  redis.call('HSET', p..':uc:'..user, conn, node)
  redis.call('SADD', p..':users', user)
end
return 1
"""

_REMOVE_CONN = """
local p, node, conn, user = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
redis.call('HDEL', p..':nc:'..node, conn)
if user ~= '' then
  local key = p..':uc:'..user
  redis.call('HDEL', key, conn)
  if redis.call('HLEN', key) == 0 then redis.call('SREM', p..':users', user) end
end
return 1
"""

_JOIN = """
local p, node, ch, user, info, entry = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local key = p..':pu:'..ch..'|'..user
local added = redis.call('SADD', key, node)
redis.call('SADD', p..':np:'..node, entry)
redis.call('HSETNX', p..':pm:'..ch, user, info)
if added == 1 and redis.call('SCARD', key) == 1 then return 1 end
return 0
"""

_LEAVE = """
local p, node, ch, user, entry = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local key = p..':pu:'..ch..'|'..user
redis.call('SREM', p..':np:'..node, entry)
if redis.call('SREM', key, node) == 1 and redis.call('SCARD', key) == 0 then
  local pm = p..':pm:'..ch
  local info = redis.call('HGET', pm, user)
  redis.call('HDEL', pm, user)
  return info or '{}'
end
return false
"""

# Returns nil when the node is alive or was purged already, else a flat list: channel, user,
# info JSON for every member that left the cluster with it.
_PURGE = """
local p, dead, tomb_ms = ARGV[1], ARGV[2], ARGV[3]
if redis.call('EXISTS', p..':node:'..dead) == 1 then return false end
if redis.call('SREM', p..':nodes', dead) == 0 then return false end
local out = {}
local np = p..':np:'..dead
for _, entry in ipairs(redis.call('SMEMBERS', np)) do
  local e = cjson.decode(entry)
  local ch, user = e[1], e[2]
  local key = p..':pu:'..ch..'|'..user
  if redis.call('SREM', key, dead) == 1 and redis.call('SCARD', key) == 0 then
    local pm = p..':pm:'..ch
    local info = redis.call('HGET', pm, user)
    redis.call('HDEL', pm, user)
    table.insert(out, ch)
    table.insert(out, user)
    table.insert(out, info or '{}')
  end
end
local nc = p..':nc:'..dead
local conns = redis.call('HGETALL', nc)
for i = 1, #conns, 2 do
  local user = conns[i + 1]
  if user ~= '' then
    local key = p..':uc:'..user
    redis.call('HDEL', key, conns[i])
    if redis.call('HLEN', key) == 0 then redis.call('SREM', p..':users', user) end
  end
end
redis.call('DEL', np, nc)
redis.call('SET', p..':tomb:'..dead, '1', 'PX', tomb_ms)
return out
"""

_SCHEMES = ("redis://", "rediss://", "unix://")


def redact_url(url: str) -> str:
    """``url`` without its password, for logs and error messages."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    userinfo, at, host = rest.rpartition("@")
    if not at:
        return url
    user = userinfo.partition(":")[0]
    return f"{scheme}://{user + ':' if user else ''}***@{host}"


def redis_client(
    url: str,
    *,
    socket_timeout: float | None = 5.0,
    connect_timeout: float | None = 2.0,
    retries: int = 1,
    client_name: str | None = None,
    **options: Any,
) -> redis.Redis:
    """A redis-py client for ``redis://``, ``rediss://`` (TLS) or ``unix://`` URLs.

    Args:
        socket_timeout: seconds a command may take before it fails.
        connect_timeout: seconds to establish a connection.
        retries: immediate retries of a command whose connection failed (1 covers a pooled
            connection that died with a Redis restart; mlsockets does its own backoff).
        client_name: shown by ``CLIENT LIST``.
        options: any other ``redis.Redis.from_url`` keyword (``ssl_ca_certs``...).

    Raises:
        ConfigurationError: the URL is not a Redis URL.
    """
    if not url.startswith(_SCHEMES):
        raise ConfigurationError(
            f"not a Redis URL: {redact_url(url)!r} (expected redis://, rediss:// or unix://)"
        )
    try:
        return redis.Redis.from_url(
            url,
            socket_timeout=socket_timeout,
            socket_connect_timeout=connect_timeout,
            retry=Retry(NoBackoff(), retries),
            health_check_interval=0,
            client_name=client_name,
            **options,
        )
    except ValueError as exc:
        raise ConfigurationError(f"invalid Redis URL {redact_url(url)!r}: {exc}") from None


def _entry(channel: str, user_id: str) -> str:
    # Byte-identical for the same pair, so SREM finds what SADD stored.
    return json.dumps([channel, user_id], ensure_ascii=False, separators=(",", ":"))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisRegistry:
    """Cluster-wide connections and presence for one node (see the module docstring).

    Args:
        client: a redis-py client (:func:`redis_client`).
        node_id: this node's id; the same as its broadcaster's.
        prefix: the cluster's key prefix (several apps may share a Redis).
        ttl: seconds without a heartbeat after which the node is dead and purged by the
            survivors. Heartbeats are sent every ``ttl / 3`` seconds.
        backoff: spacing of the attempts while Redis is unreachable.
        url: the Redis URL, for log messages (redacted).

    Thread safety: the hub calls it from any greenlet; the heartbeat runs in a
    ``threading.Thread`` (a greenlet in a gevent-patched process).
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        node_id: str,
        prefix: str = "mls",
        ttl: float = 30.0,
        backoff: ReconnectBackoff | None = None,
        url: str = "",
    ) -> None:
        if not ttl > 0:
            raise ConfigurationError(f"the node ttl must be > 0 seconds, not {ttl!r}")
        RelayChannels(prefix)  # validates the prefix
        self._client = client
        self.node_id = NodeId(node_id)
        self.prefix = prefix
        self.ttl = ttl
        self.heartbeat = ttl / 3
        self._backoff = backoff or ReconnectBackoff(initial=0.1, maximum=min(5.0, ttl / 3))
        self._url = redact_url(url) if url else "redis"
        self._add_conn = client.register_script(_ADD_CONN)
        self._remove_conn = client.register_script(_REMOVE_CONN)
        self._join = client.register_script(_JOIN)
        self._leave = client.register_script(_LEAVE)
        self._purge = client.register_script(_PURGE)
        self._lock = threading.Lock()
        # What this node holds, mirrored here so it can be written back after an outage.
        self._conns: dict[ConnectionId, UserId | None] = {}
        self._presence: dict[tuple[ChannelName, UserId], Mapping[str, object]] = {}
        self._unsynced: set[tuple[ChannelName, UserId]] = set()  # joined while Redis was down
        self._version = 0  # bumped on every change of the mirror
        self._healthy = False
        self._on_joined: PresenceHook | None = None
        self._on_left: PresenceHook | None = None
        self._on_refresh: RefreshHook | None = None
        self._announcements: list[_Announcement] = []  # held until ready()
        self._refresh_at: float | None = None
        #: Announcements wait until this returns True: the broadcaster that built this
        #: registry sets it to "the relay is connected", so none is lost at the source.
        self.ready: Callable[[], bool] = lambda: True
        #: Extra fields for the node status written with every heartbeat (the broadcaster
        #: that built this registry adds its relay state, reconnects and channels).
        self.status_source: Callable[[], Mapping[str, object]] | None = None
        #: When :meth:`start` ran (Unix time), for the node status.
        self.started_at: float | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._pid: int | None = None
        self._closed = False
        #: Nodes this node purged, and members it announced as left because of that.
        self.purged_nodes = 0
        self.purged_members = 0

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        node_id: str | None = None,
        prefix: str = "mls",
        ttl: float = 30.0,
        socket_timeout: float | None = 5.0,
        connect_timeout: float | None = 2.0,
        **options: Any,
    ) -> RedisRegistry:
        """A registry on its own client (see :func:`redis_client` for the options).

        Without ``attach``/``start`` it registers nothing: enough for queries from a
        process that serves no WebSocket (a Flask view in a plain WSGI worker, a script).
        """
        node = node_id or new_node_id()
        client = redis_client(
            url,
            socket_timeout=socket_timeout,
            connect_timeout=connect_timeout,
            client_name=f"mlsockets-registry:{node}",
            **options,
        )
        return cls(client, node_id=node, prefix=prefix, ttl=ttl, url=url)

    # -- keys ------------------------------------------------------------------------------

    def _key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    @property
    def healthy(self) -> bool:
        """True while this node's state in Redis is known to be up to date."""
        return self._healthy

    def status(self) -> dict[str, object]:
        """A snapshot for metrics and status pages."""
        return {
            "node_id": self.node_id,
            "healthy": self._healthy,
            "connections": len(self._conns),
            "presence_entries": len(self._presence),
            "purged_nodes": self.purged_nodes,
            "purged_members": self.purged_members,
        }

    def node_status(self) -> dict[str, object]:
        """This node's status, as the heartbeat writes it into Redis (see the module
        docstring); :meth:`node_statuses` reads every node's."""
        status: dict[str, object] = {
            "node_id": self.node_id,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started_at": self.started_at,
            "updated_at": round(time.time(), 3),
            "version": __version__,
            "connections": len(self._conns),
        }
        if self.status_source is not None:
            try:
                status.update(self.status_source())
            except Exception:  # a status page must never stop the heartbeat
                logger.exception("cluster registry: the node status source failed")
        return status

    def _node_value(self) -> str:
        return json.dumps(self.node_status(), separators=(",", ":"), default=str)

    # -- life cycle ----------------------------------------------------------------------

    def attach(
        self, on_joined: PresenceHook, on_left: PresenceHook, on_refresh: RefreshHook
    ) -> None:
        """Take the hub's announcers and :meth:`start`. Called once, by the hub.

        ``on_joined`` / ``on_left`` announce members that joined or left through another
        node's failure or this node's recovery; ``on_refresh`` re-sends the member lists to
        this node's clients, one heartbeat after an outage (when every node had time to
        write its state back), since relay messages published meanwhile never reached them.
        All run in the heartbeat thread.
        """
        self._on_joined = on_joined
        self._on_left = on_left
        self._on_refresh = on_refresh
        self.start()

    def start(self) -> None:
        """Register this node (now, when Redis answers) and start the heartbeat thread.

        Never raises for an unreachable Redis: the heartbeat thread keeps trying.
        """
        with self._lock:
            if self._thread is not None:
                return
            self._pid = os.getpid()
            self.started_at = time.time()
            self._stopping.clear()
            self._thread = threading.Thread(
                target=self._run, name=f"mlsockets-registry-{self.node_id}", daemon=True
            )
        try:
            self._sync()
        except REDIS_DOWN as exc:
            logger.warning(
                "cluster registry: cannot reach %s (%s); node %s registers when it can",
                self._url,
                exc,
                self.node_id,
            )
        self._thread.start()

    def close(self, *, deregister: bool = True, timeout: float = 5.0) -> None:
        """Stop the heartbeat; with ``deregister``, remove this node from Redis at once
        (announcing ``mls.left`` for its remaining presence members), instead of letting
        the survivors purge it once its key expired. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._stopping.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        self._healthy = False
        if not deregister or thread is None:  # never started: nothing registered
            return
        try:
            self._client.delete(self._key("node", self.node_id))
            left = self._purge_node(self.node_id) or []
        except REDIS_DOWN as exc:
            logger.warning("cluster registry: could not deregister node %s: %s", self.node_id, exc)
            return
        logger.info("cluster registry: node %s deregistered", self.node_id)
        for channel, user_id, info in left:
            if self._on_left is not None:
                self._on_left(channel, user_id, info)

    def _check_pid(self) -> None:
        if self._pid is not None and self._pid != os.getpid():
            raise InvalidState(
                "this RedisRegistry was started in another process (forked after the hub was "
                "created, e.g. gunicorn --preload): create the hub in each worker process"
            )

    def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                if not self._healthy:
                    self._sync()
                elif not self._beat():
                    logger.warning(
                        "cluster registry: the key of node %s is gone (Redis restarted, or "
                        "the node was purged after missing its heartbeats); registering again",
                        self.node_id,
                    )
                    self._healthy = False
                    continue
                self.purge_dead()  # runs the held announcements too
            except REDIS_DOWN as exc:
                if self._healthy or failures == 0:
                    logger.warning(
                        "cluster registry: lost %s (%s); node %s answers from local state "
                        "until it is back",
                        self._url,
                        exc,
                        self.node_id,
                    )
                self._healthy = False
                self._sleep(self._backoff.delay(failures))
                failures += 1
                continue
            except Exception:
                logger.exception("cluster registry: heartbeat failed (a bug)")
                self._healthy = False
            failures = 0
            self._sleep(self.heartbeat)

    def _sleep(self, seconds: float) -> None:
        self._wake.wait(seconds)
        self._wake.clear()

    def wake(self, *, missed: bool = False) -> None:
        """Send a heartbeat now (and write this node's state back if Redis lost it),
        instead of at the next interval: the relay calls this when it reconnected. With
        ``missed`` (the relay was disconnected: it missed relay messages), the hub's
        clients get the member lists again a heartbeat later."""
        if missed:
            self._schedule_refresh()
        self._wake.set()

    def _schedule_refresh(self) -> None:
        if self._refresh_at is None:
            self._refresh_at = time.monotonic() + self.heartbeat

    def _announce(self, hook: PresenceHook | None, *args: Any) -> None:
        if hook is not None:
            self._announcements.append((hook, *args))

    def _flush(self) -> None:
        """Run the held announcements, and a due refresh, once ready() (heartbeat thread)."""
        if not self.ready():
            return
        announcements, self._announcements = self._announcements, []
        for hook, channel, user_id, info in announcements:
            try:
                hook(channel, user_id, info)
            except Exception:
                logger.exception("cluster registry: announcing %s in %s failed", user_id, channel)
        due = self._refresh_at
        if due is not None and time.monotonic() >= due and self._healthy:
            self._refresh_at = None
            if self._on_refresh is not None:
                self._on_refresh()

    def _beat(self) -> bool:
        """Refresh this node's key; False when it had expired (or was deleted)."""
        ttl_ms = int(self.ttl * 1000)
        key, value = self._key("node", self.node_id), self._node_value()
        return bool(self._client.set(key, value, px=ttl_ms, xx=True))

    # -- synchronisation -------------------------------------------------------------------

    def _sync(self) -> None:
        """Make Redis hold exactly this node's state, then announce what others missed."""
        recovering = self._thread is not None and self._thread.is_alive()
        for _ in range(5):
            with self._lock:
                version = self._version
                conns = dict(self._conns)
                presence = dict(self._presence)
                unsynced = set(self._unsynced)
            announce = self._write_back(conns, presence, unsynced)
            with self._lock:
                if self._version == version:  # nothing changed meanwhile: in sync
                    self._unsynced -= unsynced
                    self._healthy = True
                    break
        else:
            return  # changing faster than it syncs: try again at the next heartbeat
        logger.info(
            "cluster registry: node %s in sync with %s (%d connections, %d presence entries)",
            self.node_id,
            self._url,
            len(conns),
            len(presence),
        )
        self._announcements.extend(announce)
        if recovering:  # not the first registration: the clients may have missed events
            self._schedule_refresh()

    def _write_back(
        self,
        conns: dict[ConnectionId, UserId | None],
        presence: dict[tuple[ChannelName, UserId], Mapping[str, object]],
        unsynced: set[tuple[ChannelName, UserId]],
    ) -> list[_Announcement]:
        client, node, p = self._client, self.node_id, self.prefix
        tomb = self._key("tomb", node)
        purged = bool(client.exists(tomb))
        pipe = client.pipeline(transaction=True)
        pipe.set(self._key("node", node), self._node_value(), px=int(self.ttl * 1000))
        pipe.sadd(self._key("nodes"), node)
        pipe.hgetall(self._key("nc", node))
        pipe.smembers(self._key("np", node))
        *_, remote_conns, remote_entries = pipe.execute()
        # Pipelined: after a Redis restart a node may have thousands of entries to write.
        pipe = client.pipeline(transaction=False)
        for raw_conn, raw_user in cast(dict[bytes, bytes], remote_conns).items():
            if ConnectionId(_text(raw_conn)) not in conns:
                self._remove_conn(args=[p, node, _text(raw_conn), _text(raw_user)], client=pipe)
        for conn_id, user_id in conns.items():
            self._add_conn(args=[p, node, conn_id, user_id or ""], client=pipe)
        gone: list[tuple[ChannelName, UserId]] = []
        for raw in cast(set[bytes], remote_entries):
            channel, user_id = json.loads(raw)
            if (channel, user_id) not in presence:  # left while Redis was unreachable
                gone.append((ChannelName(channel), UserId(user_id)))
                self._leave(args=[p, node, channel, user_id, _text(raw)], client=pipe)
        for (channel, user_id), info in presence.items():
            entry = _entry(channel, user_id)
            self._join(args=[p, node, channel, user_id, json.dumps(dict(info)), entry], client=pipe)
        results = pipe.execute()
        # The last len(gone) + len(presence) results are the leaves', then the joins'.
        outcomes = results[len(results) - len(gone) - len(presence) :]
        announce: list[_Announcement] = []
        for (channel, user_id), info in zip(gone, outcomes[: len(gone)], strict=True):
            if info is not None and self._on_left is not None:
                announce.append((self._on_left, channel, user_id, json_object(info)))
        for ((channel, user_id), info), joined in zip(
            presence.items(), outcomes[len(gone) :], strict=True
        ):
            if joined and (purged or (channel, user_id) in unsynced) and self._on_joined:
                announce.append((self._on_joined, channel, user_id, info))
        if purged:
            client.delete(tomb)
        return announce

    def _changed(self) -> None:
        self._version += 1

    def _failed(self, what: str, exc: BaseException) -> None:
        if self._healthy:
            logger.warning(
                "cluster registry: %s failed (%s); node %s answers from local state until "
                "%s is back",
                what,
                exc,
                self.node_id,
                self._url,
            )
        self._healthy = False
        self._wake.set()  # the heartbeat thread writes the state back as soon as it can

    # -- the hub's hooks -----------------------------------------------------------------

    def connection_added(self, conn_id: ConnectionId, user_id: UserId | None) -> None:
        """Record a new connection of this node (cluster-wide when Redis answers)."""
        self._check_pid()
        with self._lock:
            self._conns[conn_id] = user_id
            self._changed()
        if self._healthy:
            try:
                self._add_conn(args=[self.prefix, self.node_id, conn_id, user_id or ""])
            except REDIS_DOWN as exc:
                self._failed("registering a connection", exc)

    def connection_removed(self, conn_id: ConnectionId, user_id: UserId | None) -> None:
        """Forget a connection of this node."""
        with self._lock:
            self._conns.pop(conn_id, None)
            self._changed()
        if self._healthy:
            try:
                self._remove_conn(args=[self.prefix, self.node_id, conn_id, user_id or ""])
            except REDIS_DOWN as exc:
                self._failed("unregistering a connection", exc)

    def join(self, channel: ChannelName, user_id: UserId, info: Mapping[str, object]) -> bool:
        """This node now has ``user_id`` in the presence channel ``channel``.

        Returns True when that makes the user a member of the cluster (announce
        ``mls.joined``), or when Redis cannot say (the local view decides).
        """
        self._check_pid()
        key = (channel, user_id)
        with self._lock:
            self._presence[key] = dict(info)
            self._changed()
            if not self._healthy:
                self._unsynced.add(key)
                return True
        try:
            joined = self._join(
                args=[
                    self.prefix,
                    self.node_id,
                    channel,
                    user_id,
                    json.dumps(dict(info)),
                    _entry(channel, user_id),
                ]
            )
        except REDIS_DOWN as exc:
            self._failed("a presence join", exc)
            with self._lock:
                self._unsynced.add(key)
            return True
        return bool(joined)

    def leave(self, channel: ChannelName, user_id: UserId) -> bool:
        """This node no longer has ``user_id`` in ``channel``.

        Returns True when the user left the cluster's channel (announce ``mls.left``), or
        when Redis cannot say.
        """
        key = (channel, user_id)
        with self._lock:
            self._presence.pop(key, None)
            self._unsynced.discard(key)
            self._changed()
            if not self._healthy:
                return True
        try:
            info = self._leave(
                args=[self.prefix, self.node_id, channel, user_id, _entry(channel, user_id)]
            )
        except REDIS_DOWN as exc:
            self._failed("a presence leave", exc)
            return True
        return info is not None

    def members(self, channel: ChannelName) -> list[Member] | None:
        """The cluster's members of ``channel`` (sorted by user id); None when Redis
        cannot say (the hub then lists its local members)."""
        if not self._healthy:
            return None
        try:
            return self.channel_members(channel)
        except ClusterUnavailable as exc:
            self._failed("listing presence members", exc)
            return None

    def count_user(self, user_id: UserId) -> int | None:
        """How many connections ``user_id`` has in the cluster; None when Redis cannot say."""
        if not self._healthy:
            return None
        try:
            return int(self._client.hlen(self._key("uc", user_id)))
        except REDIS_DOWN as exc:
            self._failed("counting connections", exc)
            return None

    # -- queries for applications ----------------------------------------------------------

    def _query(self, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except REDIS_DOWN as exc:
            raise ClusterUnavailable(f"cannot reach Redis at {self._url}: {exc}") from exc

    def ping(self) -> None:
        """PING Redis (``mlsockets check``).

        Raises:
            ClusterUnavailable: Redis cannot be reached.
        """
        self._query(self._client.ping)

    def disconnect(self) -> None:
        """Close this registry's Redis connections (for a registry built by
        :meth:`from_url` for queries only; :meth:`close` stops a node's registry)."""
        self._client.close()

    def online_users(self) -> list[UserId]:
        """Every user with at least one connection anywhere in the cluster (sorted).

        Raises:
            ClusterUnavailable: Redis cannot be reached.
        """
        raw = self._query(lambda: self._client.smembers(self._key("users")))
        return sorted(UserId(_text(u)) for u in raw)

    def user_connections(self, user_id: str) -> dict[ConnectionId, NodeId]:
        """The connections of ``user_id`` in the cluster, and the node holding each.

        Raises:
            ClusterUnavailable: Redis cannot be reached.
        """
        raw = self._query(lambda: self._client.hgetall(self._key("uc", user_id)))
        return {ConnectionId(_text(c)): NodeId(_text(n)) for c, n in raw.items()}

    def channel_members(self, channel: str) -> list[Member]:
        """The members of the presence channel ``channel`` in the cluster, by user id.

        Raises:
            ClusterUnavailable: Redis cannot be reached.
        """
        raw = self._query(lambda: self._client.hgetall(self._key("pm", channel)))
        members = [Member(UserId(_text(u)), json_object(info)) for u, info in raw.items()]
        return sorted(members, key=lambda m: m.user_id)

    def nodes(self) -> list[NodeId]:
        """The nodes whose heartbeat is current (sorted).

        Raises:
            ClusterUnavailable: Redis cannot be reached.
        """
        return sorted(self._query(self._alive_nodes))

    def node_statuses(self) -> dict[NodeId, dict[str, object]]:
        """Every node whose heartbeat is current, with the status it last wrote (see
        :meth:`node_status`; ``{}`` for a node that writes none), by node id.

        Raises:
            ClusterUnavailable: Redis cannot be reached.
        """

        def read() -> dict[NodeId, dict[str, object]]:
            nodes = sorted(NodeId(_text(n)) for n in self._client.smembers(self._key("nodes")))
            if not nodes:
                return {}
            pipe = self._client.pipeline(transaction=False)
            for node in nodes:
                pipe.get(self._key("node", node))
            statuses: dict[NodeId, dict[str, object]] = {}
            for node, raw in zip(nodes, pipe.execute(), strict=True):
                if raw is not None:  # None: its key expired (dead, not purged yet)
                    statuses[node] = dict(json_object(raw))
            return statuses

        return cast(dict[NodeId, dict[str, object]], self._query(read))

    def _alive_nodes(self) -> list[NodeId]:
        nodes = [NodeId(_text(n)) for n in self._client.smembers(self._key("nodes"))]
        if not nodes:
            return []
        pipe = self._client.pipeline(transaction=False)
        for node in nodes:
            pipe.exists(self._key("node", node))
        return [node for node, alive in zip(nodes, pipe.execute(), strict=True) if alive]

    # -- purging dead nodes ----------------------------------------------------------------

    def purge_dead(self) -> int:
        """Purge every registered node whose heartbeat key expired; announce ``mls.left``
        for the members that had no other node (with the other held announcements, once
        :attr:`ready`). Returns the number of nodes purged here (another survivor may have
        been first). Called by the heartbeat thread."""
        nodes = [NodeId(_text(n)) for n in self._client.smembers(self._key("nodes"))]
        others = [n for n in nodes if n != self.node_id]
        if not others:
            return 0
        pipe = self._client.pipeline(transaction=False)
        for node in others:
            pipe.exists(self._key("node", node))
        dead = [n for n, alive in zip(others, pipe.execute(), strict=True) if not alive]
        purged = 0
        for node in dead:
            left = self._purge_node(node)
            if left is None:
                continue
            purged += 1
            self.purged_nodes += 1
            self.purged_members += len(left)
            logger.warning(
                "cluster registry: node %s missed its heartbeats for %.1f s: purged its "
                "connections and presence (%d members left)",
                node,
                self.ttl,
                len(left),
            )
            for channel, user_id, info in left:
                self._announce(self._on_left, channel, user_id, info)
        self._flush()
        return purged

    def _purge_node(
        self, node: str
    ) -> list[tuple[ChannelName, UserId, Mapping[str, object]]] | None:
        """Run the purge script; None when the node was alive or purged by someone else."""
        out = cast(list[bytes] | None, self._purge(args=[self.prefix, node, _TOMBSTONE_MS]))
        if out is None:
            return None
        left = []
        for i in range(0, len(out), 3):
            left.append(
                (ChannelName(_text(out[i])), UserId(_text(out[i + 1])), json_object(out[i + 2]))
            )
        return left

    def __repr__(self) -> str:
        state = "healthy" if self._healthy else "unsynced"
        return f"<RedisRegistry node={self.node_id} {self._url} {state}>"
