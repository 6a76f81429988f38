"""The in-process broadcaster: every emit reaches this process's connections only.

Enough for one process (``mlsockets serve``, one gunicorn worker). With several processes a
broadcast emitted in one of them does not reach the others: use the Redis broadcaster.
"""

from __future__ import annotations

from collections.abc import Mapping

from mlsockets.broadcast.base import Deliver, Target
from mlsockets.exceptions import InvalidState
from mlsockets.typing import ConnectionId

__all__ = ["LocalBroadcaster"]


class LocalBroadcaster:
    """Delivers straight to the hub it is attached to."""

    def __init__(self) -> None:
        self._deliver: Deliver | None = None

    def attach(self, deliver: Deliver) -> None:
        self._deliver = deliver

    def publish(
        self, target: Target, envelope: Mapping[str, object], skip: ConnectionId | None
    ) -> int:
        if self._deliver is None:
            raise InvalidState("the broadcaster is not attached to a hub")
        return self._deliver(target, envelope, skip)

    def channel_added(self, channel: str) -> None:
        pass

    def channel_removed(self, channel: str) -> None:
        pass
