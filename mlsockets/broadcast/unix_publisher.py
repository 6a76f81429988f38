"""Publishing to the serving processes of one host from any process, without a thread: what
:meth:`mlsockets.broadcast.emitter.Emitter.for_directory` uses (a cron job, ``mlsockets
emit``). The serving processes' side is :class:`~mlsockets.broadcast.unix.UnixBroadcaster`.

Call protocol: create a :class:`UnixPublisher` for the servers' directory and prefix, then
call :meth:`UnixPublisher.publish` with each encoded relay message; each publish connects to
every socket in the directory, writes one record (:mod:`mlsockets.broadcast.records`) to
each without blocking on any one peer, and closes. :meth:`UnixPublisher.close` releases
nothing (no connection outlives a publish). Importable from :mod:`mlsockets.broadcast.unix`.
"""

from __future__ import annotations

import logging
import os
import selectors
import socket
import time

from mlsockets import metrics
from mlsockets.broadcast.base import BroadcastUnavailable
from mlsockets.broadcast.records import MAX_MESSAGE, record
from mlsockets.registry.hostdir import HostDirectory, is_refused
from mlsockets.typing import NodeId

__all__ = ["UnixPublisher"]

logger = logging.getLogger("mlsockets.broadcast")


class UnixPublisher:
    """Publishes relay messages to the serving processes in a directory, from any process
    (what :meth:`mlsockets.broadcast.emitter.Emitter.for_directory` uses). No thread: each
    publish connects to every socket, writes without blocking on any one peer, and gives a
    peer up after ``timeout`` seconds.

    Args:
        path: the socket directory.
        prefix: the servers' prefix.
        timeout: seconds one publish may take in all.
        max_message: the largest relay message, in bytes.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        prefix: str = "mls",
        timeout: float = 2.0,
        max_message: int = MAX_MESSAGE,
    ) -> None:
        self.path = os.fspath(path)
        self.prefix = prefix
        self.timeout = timeout
        self.max_message = max_message
        #: Records given up for a peer that did not take them in time, since creation.
        self.dropped = 0

    def _directory(self) -> HostDirectory:
        try:
            return HostDirectory(self.path, self.prefix, create=False)
        except FileNotFoundError:
            raise BroadcastUnavailable(
                f"no mlsockets server is running on this host: {self.path} does not exist "
                "(is MLSOCKETS_BROADCAST_DIR the servers' directory?)"
            ) from None

    def publish(self, channel: str, payload: bytes) -> int:
        """Send ``payload`` to every serving process; ``channel`` is not used (every
        process reads every relay message).

        Returns:
            How many processes received the whole message.

        Raises:
            BroadcastUnavailable: no serving process is running in the directory, or none
                took the message in time (nobody received it).
            MessageTooLarge: ``payload`` exceeds ``max_message``.
            ConfigurationError: the directory belongs to another user or is open to others.
        """
        data = record(payload, self.max_message)
        directory = self._directory()
        sel = selectors.DefaultSelector()
        pending: dict[socket.socket, tuple[NodeId, memoryview]] = {}
        dead = busy = 0
        try:
            for node, path in directory.sockets():
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.setblocking(False)
                try:
                    sock.connect(path)
                except BlockingIOError:  # its backlog is full: too busy to take it now
                    sock.close()
                    busy += 1
                    logger.warning("peer %s is not accepting connections: message dropped", node)
                    continue
                except OSError as exc:
                    sock.close()
                    if is_refused(exc):
                        dead += 1
                        directory.reap(node)
                        continue
                    raise
                pending[sock] = (node, memoryview(data))
                sel.register(sock, selectors.EVENT_WRITE)
            sent = self._send_all(sel, pending)
        finally:
            for sock in pending:
                sock.close()
            sel.close()
        stuck = len(pending)
        if stuck:
            logger.warning(
                "%d peer(s) did not take a relay message within %g s: dropped for them (%s)",
                stuck,
                self.timeout,
                ", ".join(node for node, _ in pending.values()),
            )
        self.dropped += stuck + busy
        if stuck or busy:
            metrics.broadcast_dropped(stuck + busy, broadcaster="unix")
        if not sent:
            metrics.publish_failed("emitter")
            if not (stuck or busy):
                raise BroadcastUnavailable(
                    f"no mlsockets server is running on this host: no live socket in "
                    f"{self.path} (prefix {self.prefix!r}); nobody received the event"
                )
            raise BroadcastUnavailable(
                f"no mlsockets server in {self.path} took the event within {self.timeout} s"
            )
        return sent

    def _send_all(
        self,
        sel: selectors.BaseSelector,
        pending: dict[socket.socket, tuple[NodeId, memoryview]],
    ) -> int:
        sent = 0
        deadline = time.monotonic() + self.timeout
        while pending:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for key, _ in sel.select(left):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                node, view = pending[sock]
                try:
                    view = view[sock.send(view) :]
                except BlockingIOError:
                    continue
                except OSError as exc:  # it died meanwhile: not received, not stuck
                    logger.info("peer %s went away during a publish: %s", node, exc)
                else:
                    if view:
                        pending[sock] = (node, view)
                        continue
                    sent += 1
                sel.unregister(sock)
                del pending[sock]
                sock.close()
        return sent

    def close(self) -> None:
        """Nothing to release (no connection outlives a publish)."""
