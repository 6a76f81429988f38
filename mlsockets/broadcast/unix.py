"""The Unix-socket broadcaster: the serving processes of one host relay their emits to each
other through a directory of Unix domain sockets. No Redis, no extra service.

Setup (each serving process: every gunicorn worker)::

    broadcaster = UnixBroadcaster.from_directory("/srv/app/instance/mlsockets")
    hub = Hub(router, authorizers, broadcaster=broadcaster)  # binds, starts the listener

``Hub(broadcaster=...)`` also picks up ``broadcaster.cluster``, the
:class:`~mlsockets.registry.unix.HostRegistry` that makes presence and the registry span the
host's processes. Any process of the host publishes with
:meth:`mlsockets.broadcast.emitter.Emitter.for_directory` (a cron job, ``mlsockets emit``).

How an emit travels:

1. :meth:`UnixBroadcaster.publish` encodes one
   :class:`~mlsockets.broadcast.relay.RelayMessage` (the Redis layer's versioned codec) and
   wraps it once in a record (:mod:`mlsockets.broadcast.records`): a 4-byte big-endian
   length, then the message;
2. delivers the envelope to this process's connections;
3. hands the record to a writer per peer (every other ``<prefix>.<node>.sock`` in the
   directory), which keeps one stream connection to that peer;
4. each peer's listener reads records, ignores its own origin, and hands the envelope to its
   hub. Every process gets every relay message and resolves the target against its own
   connections (there is no per-channel routing as with Redis).

Why stream sockets with length-prefixed records, not datagrams: a datagram is limited by the
socket buffers (about 200 KB by default), so messages of a megabyte would need chunking,
reassembly and a timeout for lost chunks; and a non-blocking datagram send to a busy peer
fails after a few hundred KB, so a large message to a worker that is busy for a moment would
be lost. A stream carries any size in order; a receiver that sees a connection end inside a
record knows the record is incomplete and drops it with a WARNING, so nothing is ever
truncated silently. The price is one connection per pair of processes.

Slow peers never block the publisher: :meth:`~UnixBroadcaster.publish` only appends to the
peer's queue, bounded by ``max_queue`` bytes; a record that does not fit is dropped, counted
(:attr:`UnixBroadcaster.stats` and ``mlsockets.metrics.broadcast_dropped``)
and logged at WARNING. A writer that cannot hand its record over within ``send_timeout``
drops it and reconnects. A peer whose socket refuses connections is dead: its files are
removed (:meth:`~mlsockets.registry.hostdir.HostDirectory.reap`) and the registry purges it.

Threads: the listener, one reader per inbound connection and one writer per peer are
``threading.Thread`` objects, greenlets in a gevent-patched process (every server process).
This module imports no gevent and no redis. :class:`UnixPublisher` (publishing from any
process, without a thread) lives in :mod:`mlsockets.broadcast.unix_publisher` and is
importable from here.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from mlsockets import metrics
from mlsockets.broadcast.base import BroadcastUnavailable, ConnectionTarget, Deliver, Target
from mlsockets.broadcast.records import (
    MAX_MESSAGE,
    MessageTooLarge,
    RecordError,
    RecordReader,
    record,
)
from mlsockets.broadcast.relay import (
    RelayError,
    RelayInbox,
    RelayMessage,
    encode,
)
from mlsockets.broadcast.unix_publisher import UnixPublisher
from mlsockets.exceptions import ConfigurationError, InvalidState
from mlsockets.registry.cluster import new_node_id
from mlsockets.registry.hostdir import HostDirectory, is_refused
from mlsockets.registry.unix import HostRegistry
from mlsockets.typing import ConnectionId, NodeId

__all__ = [
    "MAX_MESSAGE",
    "MessageTooLarge",
    "UnixBroadcaster",
    "UnixPublisher",
    "UnixStats",
]

logger = logging.getLogger("mlsockets.broadcast")

_WARN_EVERY = 10.0  # seconds between drop warnings for one peer


@dataclass(slots=True)
class UnixStats:
    """Counters of one broadcaster since it was created (for metrics and status pages)."""

    published: int = 0  #: relay messages handed to the peers' writers
    sent: int = 0  #: records written completely to a peer
    dropped: int = 0  #: records not delivered to a live peer (queue full, stuck, busy)
    received: int = 0  #: relay messages read from peers
    delivered: int = 0  #: local receivers reached by relay messages from other processes
    own: int = 0  #: own relay messages ignored
    invalid: int = 0  #: undecodable, unknown version, incomplete or oversized records
    dead_peers: int = 0  #: peers found dead (their socket refused us)


#: ``on_drop(peer, reason)``: called for every record dropped for a live peer.
DropHook = Callable[[str, str], None]


class _Peer:
    """One other process: a bounded queue of records and the writer that empties it.

    :meth:`offer` writes a record at once when the connection is idle and the kernel takes it
    whole (one non-blocking ``write``, no greenlet switch: as quick as a Redis ``PUBLISH``);
    otherwise the rest waits in the queue for the writer, in order.
    """

    def __init__(self, owner: UnixBroadcaster, node: NodeId, path: str) -> None:
        self.owner = owner
        self.node = node
        self.path = path
        # (bytes, continuation): a continuation is the rest of a record whose start was
        # written by offer(); it cannot be sent again on another connection.
        self.queue: deque[tuple[bytes, bool]] = deque()
        self.queued = 0  # bytes in the queue
        self.dropped = 0
        self.closed = False
        self._busy = False  # the writer holds a chunk: offer() must not write meanwhile
        self._warned_at = -_WARN_EVERY
        self._unwarned = 0
        self._ready = threading.Event()
        # Guards the queue, _busy and _sock (offer() writes to its descriptor).
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self.thread = threading.Thread(
            target=self._run, name=f"mlsockets-unix-peer-{node}", daemon=True
        )
        self.thread.start()

    def offer(self, data: bytes) -> bool:
        """Send or queue ``data``; False (nothing sent) when it does not fit in
        ``max_queue``. A record larger than the bound is taken when the queue is empty."""
        with self._lock:
            if self.closed:
                return False
            if self.queue and self.queued + len(data) > self.owner.max_queue:
                return False
            continuation = False
            sock = self._sock
            if sock is not None and not self.queue and not self._busy:
                try:
                    # The descriptor is non-blocking (a socket with a timeout is, in the
                    # stdlib as in gevent): this never waits for the peer.
                    sent = os.write(sock.fileno(), data)
                except OSError:  # full (EAGAIN) or broken: the writer takes it from here
                    sent = 0
                if sent == len(data):
                    self.owner.stats.sent += 1
                    return True
                if sent:
                    data, continuation = data[sent:], True
            self.queue.append((data, continuation))
            self.queued += len(data)
        self._ready.set()
        return True

    def close(self) -> None:
        with self._lock:
            self.closed = True
            self.queue.clear()
            self.queued = 0
            sock = self._sock
        self._ready.set()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _next(self) -> tuple[bytes, bool] | None:
        while True:
            with self._lock:
                self._busy = False
                if self.closed:
                    return None
                if self.queue:
                    item = self.queue.popleft()
                    self.queued -= len(item[0])
                    self._busy = True
                    return item
                self._ready.clear()
            self._ready.wait()

    def _run(self) -> None:
        try:
            while (item := self._next()) is not None:
                self._write(*item)
        except Exception:
            logger.exception("the writer for peer %s failed (a bug)", self.node)
            self.owner._peer_gone(self, dead=False)
        finally:
            self._reset()

    def _connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.owner.send_timeout)
        try:
            sock.connect(self.path)
        except BaseException:
            sock.close()
            raise
        return sock

    def _write(self, data: bytes, continuation: bool) -> None:
        """Write one record (or the rest of one); a broken connection is retried once on a
        new one, with the whole record (a continuation cannot be: it is dropped)."""
        for attempt in (1, 2):
            try:
                sock = self._sock
                if sock is None:
                    sock = self._connect()
                    with self._lock:
                        self._sock = sock
                sock.sendall(data)
                self.owner.stats.sent += 1
                return
            except (TimeoutError, BlockingIOError) as exc:
                # Stuck (not reading) or too busy to accept: give the record up. A partial
                # record is discarded by the peer when this connection closes.
                self._reset()
                self.owner._dropped(self, f"peer did not take it within {exc or 'the timeout'}")
                return
            except OSError as exc:
                self._reset()
                if self.closed:  # close() broke the connection: shutting down, not a drop
                    return
                if is_refused(exc):  # nobody listens there any more: the process is gone
                    self.owner._peer_gone(self, dead=True)
                    return
                if attempt == 2 or continuation:
                    self.owner._dropped(self, f"connection failed: {exc}")
                    return

    def _reset(self) -> None:
        with self._lock:
            sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    def warn(self, reason: str) -> None:
        """Log a drop at WARNING, at most once per ``_WARN_EVERY`` seconds per peer."""
        self._unwarned += 1
        now = time.monotonic()
        if now - self._warned_at >= _WARN_EVERY:
            logger.warning(
                "dropped %d relay message(s) for peer %s (%s); %d dropped in all",
                self._unwarned,
                self.node,
                reason,
                self.dropped,
            )
            self._warned_at, self._unwarned = now, 0


class UnixBroadcaster:
    """A :class:`~mlsockets.broadcast.base.Broadcaster` for the processes of one host.

    Create it with :meth:`from_directory`; the hub calls :meth:`attach` (which binds this
    process's socket and starts the listener), :meth:`publish`, :meth:`channel_added` and
    :meth:`channel_removed`. :meth:`close` (also run at exit) removes the socket.

    Args:
        directory: the host's socket directory.
        node_id: this process's id (default ``host-pid-random``).
        cluster: the host registry for the same directory and node, exposed as
            :attr:`cluster` for the hub (presence and registry across the processes).
        max_queue: bytes waiting for one peer beyond which records for it are dropped.
        send_timeout: seconds a peer may take to accept a record (and a connection).
        max_message: the largest relay message sent or accepted, in bytes.
        on_drop: also called with (peer node id, reason) for each dropped record (they are
            counted in :attr:`stats` and the ``mlsockets.metrics`` drop counter anyway).
    """

    def __init__(
        self,
        directory: HostDirectory,
        *,
        node_id: str | None = None,
        cluster: HostRegistry | None = None,
        max_queue: int = 16 << 20,
        send_timeout: float = 5.0,
        max_message: int = MAX_MESSAGE,
        on_drop: DropHook | None = None,
    ) -> None:
        if cluster is not None and node_id is not None and cluster.node_id != node_id:
            raise ConfigurationError("the host registry and the broadcaster need one node id")
        if max_queue <= 0 or send_timeout <= 0 or max_message <= 0:
            raise ConfigurationError("max_queue, send_timeout and max_message must be > 0")
        self.directory = directory
        self.node_id = NodeId(node_id or (cluster.node_id if cluster else new_node_id()))
        directory.check_socket_path(self.node_id)
        #: The host-wide registry and presence (the hub uses it), or None.
        self.cluster = cluster
        self.max_queue = max_queue
        self.send_timeout = send_timeout
        self.max_message = max_message
        self.stats = UnixStats()
        self._on_drop = on_drop
        self._deliver: Deliver | None = None
        self._peers: dict[NodeId, _Peer] = {}
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._readers: set[socket.socket] = set()
        self._pid: int | None = None
        self._closed = False
        self._inbox = RelayInbox(self.node_id)
        self._owns_cluster = False

    @classmethod
    def from_directory(
        cls,
        path: str | os.PathLike[str],
        *,
        prefix: str = "mls",
        node_id: str | None = None,
        presence: bool = True,
        check_interval: float = 1.0,
        **options: Any,
    ) -> UnixBroadcaster:
        """The broadcaster (and, with ``presence``, its host registry) for ``path``.

        Creates the directory (mode 0700) when it is missing; binds nothing until the hub
        attaches.

        Args:
            path: the socket directory, shared by the host's serving processes.
            prefix: processes with the same directory and prefix form one cluster.
            presence: also build the :class:`~mlsockets.registry.unix.HostRegistry`.
            check_interval: seconds between the registry's looks for dead processes.
            options: ``max_queue``, ``send_timeout``, ``max_message``, ``on_drop``.

        Raises:
            ConfigurationError: a bad prefix; the directory belongs to another user or is
                open to group/other; the socket path is too long.
        """
        directory = HostDirectory(path, prefix)
        node = NodeId(node_id or new_node_id())
        cluster = (
            HostRegistry(directory, node_id=node, check_interval=check_interval)
            if presence
            else None
        )
        broadcaster = cls(directory, node_id=node, cluster=cluster, **options)
        broadcaster._owns_cluster = cluster is not None
        return broadcaster

    # -- life cycle ------------------------------------------------------------------------

    def attach(self, deliver: Deliver) -> None:
        """Take the hub's local delivery and :meth:`start` (called by the hub)."""
        self._deliver = deliver
        self.start()

    def start(self) -> None:
        """Claim this node's lock, remove what dead processes left, bind this process's
        socket (0600) and start the listener. Once; later calls do nothing."""
        with self._lock:
            if self._thread is not None or self._closed:
                return
            self._pid = os.getpid()
            directory = self.directory
            directory.claim(self.node_id)
            reaped = directory.reap_all()
            if reaped:
                logger.info("removed the files of %d dead process(es) in %s", reaped, directory)
            final = directory.socket_path(self.node_id)
            temporary = directory.temporary_path(self.node_id, "s")
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                listener.bind(temporary)
                os.chmod(temporary, 0o600)
                listener.listen(128)
                # Renamed into place only once it listens: a publisher never finds a socket
                # that refuses it but belongs to a live process.
                os.rename(temporary, final)
            except BaseException:
                listener.close()
                raise
            self._listener = listener
            self._thread = threading.Thread(
                target=self._accept, name=f"mlsockets-unix-listener-{self.node_id}", daemon=True
            )
            self._thread.start()
        atexit.register(self._at_exit)
        logger.info("node %s listening on %s", self.node_id, final)
        if threading.get_ident.__module__ == "_thread":  # gevent replaces it when patching
            logger.warning(
                "the Unix-socket broadcaster's readers are OS threads (this process is not "
                "gevent-patched) and deliver into the hub from there"
            )

    def _at_exit(self) -> None:
        if self._pid == os.getpid():
            self.close()

    def close(self, timeout: float = 5.0, *, deregister: bool = True) -> None:
        """Deregister (announcing ``mls.left`` for the members only this process had), stop
        the listener and writers, remove the socket and lock files. Safe to call twice."""
        if self._closed:
            return
        if self._owns_cluster and self.cluster is not None:
            # First, while the writers still carry the mls.left it announces to the others.
            self.cluster.close(deregister=deregister)
            self._flush(min(timeout, 1.0))
        self._closed = True
        with self._lock:
            listener, self._listener = self._listener, None
            peers, self._peers = list(self._peers.values()), {}
            readers, self._readers = list(self._readers), set()
        if listener is not None and self._pid == os.getpid():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.directory.socket_path(self.node_id))
        for sock in (listener, *readers):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
        for peer in peers:
            peer.close()
        if self._pid == os.getpid():
            self.directory.release(self.node_id)
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        with contextlib.suppress(ValueError):
            atexit.unregister(self._at_exit)

    def _flush(self, timeout: float) -> None:
        """Wait (bounded) until the writers handed over what is queued."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                peers = list(self._peers.values())
            if all(not p.queue and not p._busy for p in peers):
                return
            time.sleep(0.01)

    def _check_pid(self) -> None:
        if self._pid is not None and self._pid != os.getpid():
            raise InvalidState(
                "this UnixBroadcaster was started in another process (forked after the hub "
                "was created, e.g. gunicorn --preload): create the hub in each worker process"
            )

    def status(self) -> dict[str, object]:
        """Counters and peers, for status pages and metrics."""
        with self._lock:
            peers = {
                p.node: {"queued": p.queued, "dropped": p.dropped} for p in self._peers.values()
            }
        status: dict[str, object] = {
            "node_id": self.node_id,
            "state": "closed" if self._closed else ("listening" if self._thread else "idle"),
            "directory": str(self.directory.path),
            "peers": peers,
            **asdict(self.stats),
        }
        if self.cluster is not None:
            status["cluster"] = self.cluster.status()
        return status

    # -- the Broadcaster protocol ----------------------------------------------------------

    def publish(
        self, target: Target, envelope: Mapping[str, object], skip: ConnectionId | None
    ) -> int:
        """Deliver ``envelope`` to this process's receivers and queue it for every other
        serving process of the host. Never blocks on a peer.

        Returns:
            The number of local receivers.

        Raises:
            MessageTooLarge: the relay message exceeds ``max_message`` (nobody got it).
            TypeError, ValueError: the envelope cannot be encoded as JSON (nobody got it).
            BroadcastUnavailable: the broadcaster is closed (the local receivers got it).
            InvalidState: not attached to a hub, or used in another process.
        """
        deliver = self._deliver
        if deliver is None:
            raise InvalidState("the broadcaster is not attached to a hub")
        self._check_pid()
        started = time.perf_counter()
        data = record(encode(RelayMessage(self.node_id, target, envelope, skip)), self.max_message)
        count = deliver(target, envelope, skip)
        if isinstance(target, ConnectionTarget) and count:
            return count  # connection ids are unique: nobody else has it
        if self._closed:
            metrics.publish_failed("unix")
            raise BroadcastUnavailable(
                f"the Unix-socket broadcaster is closed: {envelope.get('event')!r} reached "
                f"{count} local connections but not the other processes",
                delivered=count,
            )
        backlog = False
        for peer in self._current_peers():
            if not peer.offer(data):
                self._dropped(peer, f"its queue holds {peer.queued} bytes (max_queue)")
            backlog = backlog or peer.queued > self.max_queue // 2
        self.stats.published += 1
        if backlog:
            # Many emits in a row from one greenlet never let the writers run: yield once
            # (time.sleep is gevent's in a patched process), so that only peers that are
            # really slow reach max_queue. Never waits for a peer.
            time.sleep(0)
        metrics.published("unix", time.perf_counter() - started)
        return count

    def channel_added(self, channel: str) -> None:
        """Nothing to do: every process reads every relay message."""

    def channel_removed(self, channel: str) -> None:
        """Nothing to do: every process reads every relay message."""

    # -- peers -----------------------------------------------------------------------------

    def _current_peers(self) -> list[_Peer]:
        """A writer for every other socket in the directory (read at each publish, so a
        process that started a moment ago gets the next message)."""
        found = self.directory.sockets()
        with self._lock:
            if self._closed:
                return []
            peers = []
            for node, path in found:
                if node == self.node_id:
                    continue
                peer = self._peers.get(node)
                if peer is None:
                    peer = self._peers[node] = _Peer(self, node, path)
                peers.append(peer)
            return peers

    def _dropped(self, peer: _Peer, reason: str) -> None:
        self.stats.dropped += 1
        peer.dropped += 1
        peer.warn(reason)
        metrics.broadcast_dropped(1, broadcaster="unix")
        if self._on_drop is not None:
            try:
                self._on_drop(peer.node, reason)
            except Exception:
                logger.exception("the drop hook failed")

    def _peer_gone(self, peer: _Peer, *, dead: bool) -> None:
        with self._lock:
            if self._peers.get(peer.node) is peer:
                del self._peers[peer.node]
        peer.close()
        if dead:
            self.stats.dead_peers += 1
            logger.info("peer %s refuses connections: its process is gone", peer.node)
            self.directory.reap(peer.node)
            if self.cluster is not None:
                self.cluster.wake()

    # -- receiving -------------------------------------------------------------------------

    def _accept(self) -> None:
        listener = self._listener
        while listener is not None and not self._closed:
            try:
                sock, _ = listener.accept()
            except OSError:
                if self._listener is not listener:  # closed
                    return
                time.sleep(0.05)  # EMFILE and the like: do not spin
                continue
            with self._lock:
                self._readers.add(sock)
            threading.Thread(
                target=self._read, args=(sock,), name="mlsockets-unix-reader", daemon=True
            ).start()

    def _read(self, sock: socket.socket) -> None:
        reader = RecordReader(self.max_message)
        try:
            while True:
                try:
                    data = sock.recv(1 << 18)
                except OSError:
                    break
                if not data:
                    break
                try:
                    payloads = reader.feed(data)
                except RecordError as exc:
                    self._invalid()
                    logger.warning("closing a relay connection: %s", exc)
                    return
                for payload in payloads:
                    self._relayed(payload)
            if reader.pending and not self._closed:
                self._invalid()
                logger.warning(
                    "a publisher went away in the middle of a relay message (%d bytes "
                    "received): dropped it, nothing partial was delivered",
                    reader.pending,
                )
        finally:
            with self._lock:
                self._readers.discard(sock)
            sock.close()

    def _invalid(self) -> None:
        """Count a record that could not be delivered (its WARNING is logged by the caller)."""
        self.stats.invalid += 1
        metrics.broadcast_dropped(1, broadcaster="unix")

    def _relayed(self, payload: bytes) -> None:
        """One relay message from a peer: decode, ignore our own, deliver the rest."""
        stats = self.stats
        stats.received += 1
        try:
            message = self._inbox.open(payload)
        except RelayError:
            self._invalid()
            return
        if message is None:
            stats.own += 1
            return
        deliver = self._deliver
        if deliver is None:
            return
        try:
            stats.delivered += deliver(message.target, message.envelope, message.skip)
        except Exception:
            logger.exception("delivering a relay message from %s failed", message.origin)

    def __repr__(self) -> str:
        return f"<UnixBroadcaster node={self.node_id} {self.directory.path}>"
