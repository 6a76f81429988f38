"""One host, no Redis: the registry and presence shared by a host's serving processes
(:class:`HostRegistry`, a :class:`mlsockets.hub.ClusterPresence`).

It lives in the host's socket directory, ``<prefix>.registry.sqlite3`` (WAL mode; with -wal,
-shm and an .init-lock taken while a process opens it), beside each node's lock file and
socket. :class:`~mlsockets.registry.hostdir.HostDirectory` owns the file names, the
permission checks, liveness (the lock files) and the removal of what dead processes left
behind.

:class:`HostRegistry` keeps the host's connections and presence in SQLite (stdlib). Each
decision that must be made once for the host is one transaction (``BEGIN IMMEDIATE``, so the
processes take turns): a user joins a presence channel "for the cluster" when no other node
has them there, leaves it when none has them any more, and a dead node is purged by exactly
one survivor (the one whose ``DELETE`` of its row counted), which announces ``mls.left`` for
the members that had no other node. That mirrors :mod:`mlsockets.registry.redis` and its Lua
scripts, with the file lock in place of the heartbeat key.

Call protocol: as :class:`mlsockets.hub.ClusterPresence` (the hub calls :meth:`HostRegistry.
attach` once, then the hooks); :meth:`HostRegistry.close` at shutdown.
:class:`~mlsockets.broadcast.unix.UnixBroadcaster.from_directory` builds both.

Each SQLite call blocks its process for the length of one small transaction (microseconds;
up to ``busy_timeout`` while another process holds the write lock): that is the price of
exact answers without a server.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

from mlsockets.broadcast.base import ClusterUnavailable
from mlsockets.channels.presence import Member
from mlsockets.exceptions import ConfigurationError, InvalidState
from mlsockets.registry.cluster import PresenceHook, RefreshHook, json_object
from mlsockets.registry.hostdir import HostDirectory
from mlsockets.typing import ChannelName, ConnectionId, NodeId, UserId

__all__ = [
    "HostRegistry",
    "PresenceHook",
    "RefreshHook",
]

logger = logging.getLogger("mlsockets.registry")


_SCHEMA = """
CREATE TABLE IF NOT EXISTS nodes (node TEXT PRIMARY KEY, pid INTEGER, started REAL);
CREATE TABLE IF NOT EXISTS conns (conn TEXT PRIMARY KEY, node TEXT NOT NULL, user TEXT);
CREATE INDEX IF NOT EXISTS conns_user ON conns (user);
CREATE INDEX IF NOT EXISTS conns_node ON conns (node);
CREATE TABLE IF NOT EXISTS presence (
    channel TEXT NOT NULL, user TEXT NOT NULL, node TEXT NOT NULL, info TEXT NOT NULL,
    PRIMARY KEY (channel, user, node));
CREATE INDEX IF NOT EXISTS presence_node ON presence (node);
"""


_Entry = tuple[ChannelName, UserId]


class HostRegistry:
    """The connections and presence of every serving process of one host (see the module
    docstring), for one node.

    Args:
        directory: the host's socket directory.
        node_id: this node's id (the same as its broadcaster's).
        check_interval: seconds between looks for dead nodes (also woken by the broadcaster
            when a peer's socket refuses connections).
        busy_timeout: seconds a transaction waits for another process's write lock.

    Thread safety: any greenlet or thread may call it; one lock serializes this process's
    use of its SQLite connection.
    """

    def __init__(
        self,
        directory: HostDirectory,
        *,
        node_id: str,
        check_interval: float = 1.0,
        busy_timeout: float = 5.0,
    ) -> None:
        if not check_interval > 0:
            raise ConfigurationError(f"check_interval must be > 0, not {check_interval!r}")
        self.directory = directory
        self.node_id = NodeId(node_id)
        self.check_interval = check_interval
        self._busy_timeout = busy_timeout
        self._db: sqlite3.Connection | None = None
        self._inode: int | None = None  # of the registry file this node has open
        self._lock = threading.RLock()
        # This node's own state, mirrored so it can be written back (after being purged
        # while paused, or after a failed write).
        self._conns: dict[ConnectionId, UserId | None] = {}
        self._presence: dict[_Entry, Mapping[str, object]] = {}
        self._healthy = False
        self._on_joined: PresenceHook | None = None
        self._on_left: PresenceHook | None = None
        self._on_refresh: RefreshHook | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._pid: int | None = None
        self._closed = False
        #: Nodes this node purged, and members it announced as left because of that.
        self.purged_nodes = 0
        self.purged_members = 0

    # -- the database ----------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        """Open the registry file, under an exclusive lock so that the processes starting
        together check and (if need be) recreate it one at a time."""
        path = self.directory.database
        fd = os.open(path + ".init-lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # held for milliseconds by each starting process
            try:
                db = self._open(path)
            except sqlite3.OperationalError:
                raise  # busy or unwritable: not a reason to throw the registry away
            except sqlite3.DatabaseError as exc:
                # "file is not a database", "malformed": what a crash or a stray write left.
                # Start afresh rather than refuse to start; a process that still had the
                # old file open notices the new one (_reopen_if_replaced) and writes itself
                # back into it.
                logger.warning("the host registry %s is unusable (%s): recreating it", path, exc)
                for suffix in ("", "-wal", "-shm"):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path + suffix)
                db = self._open(path)
            self._inode = os.stat(path).st_ino
        finally:
            os.close(fd)  # releases the lock
        return db

    def _reopen_if_replaced(self) -> None:
        """Reopen the registry when its file was replaced or removed since it was opened
        (recreated by another process, deleted by hand); this node then writes itself back."""
        try:
            inode: int | None = os.stat(self.directory.database).st_ino
        except FileNotFoundError:
            inode = None
        if inode == self._inode:
            return
        logger.warning("host registry: %s was replaced; reopening it", self.directory.database)
        with self._lock:
            if self._db is not None:
                self._db.close()
            self._db = self._connect()
        self._healthy = False

    def _open(self, path: str) -> sqlite3.Connection:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        os.close(fd)  # created 0600 before SQLite opens it (its -wal and -shm copy the mode)
        db = sqlite3.connect(
            path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False
        )
        try:
            db.execute("PRAGMA journal_mode=WAL")
            # Durability across a power cut is not wanted: the registry describes live
            # processes, which a reboot ends anyway. A process crash cannot corrupt WAL.
            db.execute("PRAGMA synchronous=OFF")
            db.executescript(_SCHEMA)
        except BaseException:
            db.close()
            raise
        return db

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (the host's processes take turns), under this process's
        lock. Raises sqlite3.Error or InvalidState (closed)."""
        with self._lock:
            db = self._db
            if db is None:
                raise InvalidState("the host registry is not started")
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def _read(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        with self._lock:
            db = self._db
            if db is None:
                raise ClusterUnavailable("the host registry is not started")
            try:
                return db.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise ClusterUnavailable(f"the host registry failed: {exc}") from exc

    def _failed(self, what: str, exc: BaseException) -> None:
        if self._healthy:
            logger.warning(
                "host registry: %s failed (%s); node %s answers from local state until it "
                "can write again",
                what,
                exc,
                self.node_id,
            )
        self._healthy = False
        self._wake.set()

    @property
    def healthy(self) -> bool:
        """True while this node's rows in the registry are known to be up to date."""
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

    # -- life cycle ------------------------------------------------------------------------

    def attach(
        self, on_joined: PresenceHook, on_left: PresenceHook, on_refresh: RefreshHook
    ) -> None:
        """Take the hub's announcers and :meth:`start` (called once, by the hub).

        ``on_left`` announces the members of a dead node that this node purged, ``on_joined``
        this node's members after it came back from being purged; ``on_refresh`` re-sends
        the member lists after a failed write was repaired. They run in the registry's
        thread (a greenlet in a gevent-patched process).
        """
        self._on_joined, self._on_left, self._on_refresh = on_joined, on_left, on_refresh
        self.start()

    def start(self) -> None:
        """Claim this node's lock, open the registry, register, purge the dead, and start
        the thread that keeps looking for dead nodes. Once; later calls do nothing.

        Raises:
            ConfigurationError: the registry file cannot be used.
        """
        with self._lock:
            if self._thread is not None or self._closed:
                return
            self._pid = os.getpid()
            self.directory.claim(self.node_id)
            self._db = self._connect()
            self._thread = threading.Thread(
                target=self._run, name=f"mlsockets-host-registry-{self.node_id}", daemon=True
            )
        self._check()
        self._thread.start()

    def close(self, *, deregister: bool = True, timeout: float = 5.0) -> None:
        """Stop; with ``deregister`` remove this node's rows now, announcing ``mls.left``
        for its members that no other node has (else the survivors purge it, as after a
        crash). Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._stopping.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        if thread is not None and deregister:
            try:
                left = self._purge(self.node_id, require_dead=False)
            except (sqlite3.Error, InvalidState) as exc:
                logger.warning("host registry: could not deregister node %s: %s", self.node_id, exc)
                left = []
            for channel, user_id, info in left or []:
                self._call(self._on_left, channel, user_id, info)
        self._healthy = False
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def _check_pid(self) -> None:
        if self._pid is not None and self._pid != os.getpid():
            raise InvalidState(
                "this HostRegistry was started in another process (forked after the hub was "
                "created, e.g. gunicorn --preload): create the hub in each worker process"
            )

    def wake(self) -> None:
        """Look for dead nodes now (the broadcaster calls this when a peer refused it)."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(self.check_interval)
            self._wake.clear()
            if self._stopping.is_set():
                break
            self._check()

    def _check(self) -> None:
        """Write this node's state back if needed, then purge the dead nodes."""
        try:
            self._reopen_if_replaced()
            if not self._healthy or not self._registered():
                self._sync()
            self.purge_dead()
            self.directory.reap_all()
        except (sqlite3.Error, OSError, ClusterUnavailable) as exc:
            self._failed("the liveness check", exc)
        except Exception:
            logger.exception("host registry: the liveness check failed (a bug)")

    def _registered(self) -> bool:
        return bool(self._read("SELECT 1 FROM nodes WHERE node = ?", (self.node_id,)))

    def _sync(self) -> None:
        """Make the registry hold exactly this node's state; announce the members that are
        new to the cluster because this node had been purged (a long pause)."""
        with self._lock:
            conns, presence = dict(self._conns), dict(self._presence)
            recovering = self._thread is not None and self._thread.is_alive()
            joined: list[tuple[ChannelName, UserId, Mapping[str, object]]] = []
            with self._transaction() as db:
                node = self.node_id
                row = db.execute("SELECT 1 FROM nodes WHERE node = ?", (node,)).fetchone()
                purged = row is None and recovering
                db.execute(
                    "INSERT OR REPLACE INTO nodes VALUES (?, ?, ?)",
                    (node, os.getpid(), time.time()),
                )
                db.execute("DELETE FROM conns WHERE node = ?", (node,))
                db.execute("DELETE FROM presence WHERE node = ?", (node,))
                db.executemany(
                    "INSERT OR REPLACE INTO conns VALUES (?, ?, ?)",
                    [(c, node, u) for c, u in conns.items()],
                )
                for (channel, user_id), info in presence.items():
                    if purged and not _present(db, channel, user_id):
                        joined.append((channel, user_id, info))
                    db.execute(
                        "INSERT INTO presence VALUES (?, ?, ?, ?)",
                        (channel, user_id, node, json.dumps(dict(info))),
                    )
            self._healthy = True
        logger.info(
            "host registry: node %s registered in %s (%d connections, %d presence entries)",
            self.node_id,
            self.directory.database,
            len(conns),
            len(presence),
        )
        for channel, user_id, info in joined:
            self._call(self._on_joined, channel, user_id, info)
        if recovering and self._on_refresh is not None:
            self._on_refresh()

    # -- the hub's hooks -------------------------------------------------------------------

    def connection_added(self, conn_id: ConnectionId, user_id: UserId | None) -> None:
        """Record a new connection of this node."""
        self._check_pid()
        with self._lock:
            self._conns[conn_id] = user_id
            if not self._healthy:
                return
            try:
                with self._transaction() as db:
                    db.execute(
                        "INSERT OR REPLACE INTO conns VALUES (?, ?, ?)",
                        (conn_id, self.node_id, user_id),
                    )
            except (sqlite3.Error, InvalidState) as exc:
                self._failed("registering a connection", exc)

    def connection_removed(self, conn_id: ConnectionId, user_id: UserId | None) -> None:
        """Forget a connection of this node."""
        with self._lock:
            self._conns.pop(conn_id, None)
            if not self._healthy:
                return
            try:
                with self._transaction() as db:
                    db.execute("DELETE FROM conns WHERE conn = ?", (conn_id,))
            except (sqlite3.Error, InvalidState) as exc:
                self._failed("unregistering a connection", exc)

    def join(self, channel: ChannelName, user_id: UserId, info: Mapping[str, object]) -> bool:
        """This node now has ``user_id`` in the presence channel ``channel``; True when no
        other node had them there (announce ``mls.joined``), or when that cannot be known."""
        self._check_pid()
        with self._lock:
            self._presence[(channel, user_id)] = dict(info)
            if not self._healthy:
                return True
            try:
                with self._transaction() as db:
                    first = not _present(db, channel, user_id, besides=self.node_id)
                    db.execute(
                        "INSERT OR REPLACE INTO presence VALUES (?, ?, ?, ?)",
                        (channel, user_id, self.node_id, json.dumps(dict(info))),
                    )
            except (sqlite3.Error, InvalidState) as exc:
                self._failed("a presence join", exc)
                return True
            return first

    def leave(self, channel: ChannelName, user_id: UserId) -> bool:
        """This node no longer has ``user_id`` in ``channel``; True when no other node has
        them there (announce ``mls.left``), or when that cannot be known."""
        with self._lock:
            self._presence.pop((channel, user_id), None)
            if not self._healthy:
                return True
            try:
                with self._transaction() as db:
                    db.execute(
                        "DELETE FROM presence WHERE channel = ? AND user = ? AND node = ?",
                        (channel, user_id, self.node_id),
                    )
                    last = not _present(db, channel, user_id)
            except (sqlite3.Error, InvalidState) as exc:
                self._failed("a presence leave", exc)
                return True
            return last

    def members(self, channel: ChannelName) -> list[Member] | None:
        """The host's members of ``channel`` by user id; None when the registry cannot say."""
        if not self._healthy:
            return None
        try:
            return self.channel_members(channel)
        except ClusterUnavailable as exc:
            self._failed("listing presence members", exc)
            return None

    def count_user(self, user_id: UserId) -> int | None:
        """How many connections ``user_id`` has on the host; None when it cannot say."""
        if not self._healthy:
            return None
        try:
            return int(self._read("SELECT COUNT(*) FROM conns WHERE user = ?", (user_id,))[0][0])
        except ClusterUnavailable as exc:
            self._failed("counting connections", exc)
            return None

    # -- queries for applications ----------------------------------------------------------

    def online_users(self) -> list[UserId]:
        """Every user with a connection on the host (sorted).

        Raises:
            ClusterUnavailable: the registry cannot be read.
        """
        rows = self._read("SELECT DISTINCT user FROM conns WHERE user IS NOT NULL ORDER BY user")
        return [UserId(u) for (u,) in rows]

    def user_connections(self, user_id: str) -> dict[ConnectionId, NodeId]:
        """The connections of ``user_id`` on the host, and the node holding each."""
        rows = self._read("SELECT conn, node FROM conns WHERE user = ?", (user_id,))
        return {ConnectionId(c): NodeId(n) for c, n in rows}

    def channel_members(self, channel: str) -> list[Member]:
        """The members of the presence channel ``channel`` (by user id); a user present on
        several nodes is one member, with the info of their earliest entry."""
        rows = self._read(
            # SQLite takes a bare column from the row that MIN() chose.
            "SELECT user, info, MIN(rowid) FROM presence WHERE channel = ? GROUP BY user "
            "ORDER BY user",
            (channel,),
        )
        return [Member(UserId(u), json_object(info)) for u, info, _ in rows]

    def nodes(self) -> list[NodeId]:
        """The registered nodes whose process is alive (sorted)."""
        rows = self._read("SELECT node FROM nodes ORDER BY node")
        return [NodeId(n) for (n,) in rows if self.directory.alive(n)]

    # -- purging dead nodes ----------------------------------------------------------------

    def purge_dead(self) -> int:
        """Purge every registered node whose process is gone and announce ``mls.left`` for
        its members that no other node has. Returns how many nodes this node purged (another
        survivor may have been first: then it announces)."""
        rows = self._read("SELECT node FROM nodes WHERE node != ?", (self.node_id,))
        purged = 0
        for (node,) in rows:
            if self.directory.alive(node):
                continue
            left = self._purge(node, require_dead=True)
            if left is None:
                continue  # another survivor was first
            purged += 1
            self.purged_nodes += 1
            self.purged_members += len(left)
            logger.warning(
                "host registry: node %s is gone (its process died): purged its connections "
                "and presence (%d members left)",
                node,
                len(left),
            )
            self.directory.reap(node)
            for channel, user_id, info in left:
                self._call(self._on_left, channel, user_id, info)
        return purged

    def _purge(
        self, node: str, *, require_dead: bool
    ) -> list[tuple[ChannelName, UserId, Mapping[str, object]]] | None:
        """Remove ``node``'s rows in one transaction; None when another process was first.
        Returns the members that no other node has."""
        left = []
        with self._transaction() as db:
            if db.execute("DELETE FROM nodes WHERE node = ?", (node,)).rowcount != 1:
                if require_dead:
                    return None
            entries = db.execute(
                "SELECT channel, user, info FROM presence WHERE node = ?", (node,)
            ).fetchall()
            db.execute("DELETE FROM presence WHERE node = ?", (node,))
            db.execute("DELETE FROM conns WHERE node = ?", (node,))
            for channel, user_id, info in entries:
                if not _present(db, channel, user_id):
                    left.append((ChannelName(channel), UserId(user_id), json_object(info)))
        return left

    def _call(self, hook: PresenceHook | None, *args: Any) -> None:
        if hook is None:
            return
        try:
            hook(*args)
        except Exception:
            logger.exception("host registry: announcing %s in %s failed", args[1], args[0])

    def __repr__(self) -> str:
        state = "healthy" if self._healthy else "unsynced"
        return f"<HostRegistry node={self.node_id} {self.directory.path} {state}>"


def _present(db: sqlite3.Connection, channel: str, user_id: str, besides: str = "") -> bool:
    """Whether some node (other than ``besides``) has ``user_id`` in ``channel``."""
    row = db.execute(
        "SELECT 1 FROM presence WHERE channel = ? AND user = ? AND node != ? LIMIT 1",
        (channel, user_id, besides),
    ).fetchone()
    return row is not None
