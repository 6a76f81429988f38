"""Emit events to a cluster's clients from any process: a Celery task, a cron script, a
plain WSGI worker that holds no WebSocket. No hub, no server, no relay thread: one Redis
``PUBLISH`` per emit, read by the relays of the nodes (docs/cluster.md)::

    from mlsockets import Emitter
    from mlsockets.broadcast.base import User

    with Emitter.from_url("redis://redis.internal:6379/0") as emitter:
        emitter.emit("report.ready", {"id": 42}, to="private-user.7")
        emitter.emit("maintenance", {"in": 300})                   # everyone
        emitter.emit("nudge", None, to=User("7"))                  # all of a user's tabs

Use the ``prefix`` of the servers (``mls`` unless they were configured otherwise). The
envelope is the one ``Hub.emit`` sends (``{"event", "data", "channel"?}``), encoded once.
Unlike ``Hub.emit`` nothing is delivered locally, so while Redis is unreachable nobody gets
the event and :meth:`Emitter.emit` raises
:class:`~mlsockets.broadcast.base.BroadcastUnavailable`.

This module imports no redis: :meth:`Emitter.from_url` loads :mod:`mlsockets.broadcast.redis`
when it is called.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from mlsockets import metrics
from mlsockets.broadcast.base import BroadcastUnavailable, Target, addressed
from mlsockets.broadcast.relay import RelayChannels, RelayMessage, encode
from mlsockets.typing import ConnectionId, NodeId

__all__ = ["Emitter", "Publish"]

#: ``publish(redis_channel, payload) -> receivers``; raises BroadcastUnavailable.
Publish = Callable[[str, bytes], int]


def _origin() -> NodeId:
    host = socket.gethostname().split(".")[0] or "host"
    return NodeId(f"emitter-{host}-{os.getpid()}-{os.urandom(3).hex()}")


class Emitter:
    """Publishes envelopes to a cluster without being part of it.

    Args:
        publish: sends one relay message to one Redis channel and returns how many relays
            received it (:meth:`mlsockets.broadcast.redis.RedisPublisher.publish`).
        prefix: the cluster's Redis prefix.
        origin: the id relay messages carry as their origin (default: ``emitter-host-pid-...``;
            never a server's node id, or that node would ignore them).
        close: called by :meth:`close`.

    Thread safety: :meth:`emit` may be called from any thread or greenlet.
    """

    def __init__(
        self,
        publish: Publish,
        *,
        prefix: str = "mls",
        origin: str | None = None,
        close: Callable[[], None] | None = None,
    ) -> None:
        self._publish = publish
        self.channels = RelayChannels(prefix)
        self.origin = NodeId(origin) if origin else _origin()
        self._close = close

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str = "mls",
        socket_timeout: float | None = 5.0,
        connect_timeout: float | None = 2.0,
        **options: Any,
    ) -> Emitter:
        """An emitter for the cluster behind ``url`` (``redis://``, ``rediss://``, ``unix://``).

        Nothing connects until the first :meth:`emit`. ``options`` go to
        ``redis.Redis.from_url`` (``ssl_ca_certs``...).

        Raises:
            ConfigurationError: not a Redis URL.
            ImportError: redis-py is not installed (``pip install mlsockets[redis]``).
        """
        try:
            from mlsockets.broadcast.redis import RedisPublisher
        except ImportError as exc:  # pragma: no cover - depends on the installation
            raise ImportError(
                f"Emitter.from_url needs redis-py: pip install 'mlsockets[redis]' ({exc})"
            ) from exc
        publisher = RedisPublisher.from_url(
            url, socket_timeout=socket_timeout, connect_timeout=connect_timeout, **options
        )
        return cls(publisher.publish, prefix=prefix, close=publisher.close)

    @classmethod
    def for_directory(
        cls, path: str | os.PathLike[str], *, prefix: str = "mls", timeout: float = 2.0
    ) -> Emitter:
        """An emitter for the serving processes of this host that share the socket
        directory ``path`` (``MLSOCKETS_BROADCAST=unix``, docs/one-host.md): each emit is
        written to every process's Unix socket there, giving up a peer after ``timeout``
        seconds. :meth:`emit` then returns how many processes received it, and raises
        :class:`~mlsockets.broadcast.base.BroadcastUnavailable` when no serving process runs
        (or none took it in time). Stdlib only.

        Raises:
            ConfigurationError: an invalid prefix (checked again, with the directory's owner
                and mode, at each emit).
        """
        from mlsockets.broadcast.unix_publisher import UnixPublisher

        publisher = UnixPublisher(path, prefix=prefix, timeout=timeout)
        return cls(publisher.publish, prefix=prefix, close=publisher.close)

    def emit(
        self,
        event: str,
        data: object = None,
        *,
        to: str | Target | None = None,
        skip: str | None = None,
    ) -> int:
        """Send ``event`` to ``to`` (a channel name, a Target, None for everyone) on every node.

        Args:
            skip: a connection id to leave out.

        Returns:
            How many nodes received it (Redis's count of subscribers: for a channel, the
            nodes that have members of it). 0 is not an error: nobody was listening.

        Raises:
            BroadcastUnavailable: Redis cannot be reached; nobody received the event.
            InvalidChannel: ``to`` is not a valid channel name.
            TypeError, ValueError: ``data`` cannot be encoded as JSON.
        """
        target, envelope = addressed(event, data, to)
        message = RelayMessage(
            self.origin,
            target,
            envelope,
            None if skip is None else ConnectionId(skip),
        )
        payload = encode(message)
        started = time.perf_counter()
        try:
            receivers = self._publish(self.channels.for_target(target), payload)
        except BroadcastUnavailable:
            metrics.publish_failed("emitter")  # metrics
            raise
        metrics.published("emitter", time.perf_counter() - started)  # metrics: latency
        return receivers

    def close(self) -> None:
        """Close the Redis connections (safe to call twice)."""
        if self._close is not None:
            self._close()

    def __enter__(self) -> Emitter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Emitter origin={self.origin} prefix={self.channels.prefix!r}>"
