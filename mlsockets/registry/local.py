"""An in-process connection registry: dicts, O(1) per lookup and per change."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

from mlsockets.registry.base import ConnT
from mlsockets.typing import ConnectionId, UserId

__all__ = ["LocalRegistry"]

K = TypeVar("K")


class LocalRegistry(Generic[ConnT]):
    """The :class:`~mlsockets.registry.base.ConnectionRegistry` of a single process.

    Anonymous connections (``principal.user_id`` None) are indexed by id and tags only.
    """

    def __init__(self) -> None:
        self._by_id: dict[ConnectionId, ConnT] = {}
        # Inner dicts keyed by connection id: O(1) removal, registration order kept.
        self._by_user: dict[UserId, dict[ConnectionId, ConnT]] = {}
        self._by_tag: dict[str, dict[ConnectionId, ConnT]] = {}

    def add(self, conn: ConnT) -> None:
        """Register ``conn``.

        Raises:
            ValueError: a connection with the same id is registered (ids must be unique;
                silently replacing one would leave the old one unreachable but open).
        """
        conn_id = conn.id
        if conn_id in self._by_id:
            raise ValueError(f"connection {conn_id!r} is already registered")
        self._by_id[conn_id] = conn
        principal = conn.principal
        if principal.user_id is not None:
            self._by_user.setdefault(principal.user_id, {})[conn_id] = conn
        for tag in principal.tags:
            self._by_tag.setdefault(tag, {})[conn_id] = conn

    def remove(self, conn: ConnT) -> None:
        """Unregister ``conn``; a no-op when it is not the registered connection of its id."""
        conn_id = conn.id
        # Identity, not just the id: a stale object must not unregister its successor.
        if self._by_id.get(conn_id) is not conn:
            return
        del self._by_id[conn_id]
        principal = conn.principal
        if principal.user_id is not None:
            _discard(self._by_user, principal.user_id, conn_id)
        for tag in principal.tags:
            _discard(self._by_tag, tag, conn_id)

    def get(self, conn_id: ConnectionId) -> ConnT | None:
        """The connection with this id, or None."""
        return self._by_id.get(conn_id)

    def by_user(self, user_id: UserId) -> list[ConnT]:
        """The user's connections, in registration order (a snapshot)."""
        return list(self._by_user.get(user_id, {}).values())

    def by_tag(self, tag: str) -> list[ConnT]:
        """The connections tagged ``tag``, in registration order (a snapshot)."""
        return list(self._by_tag.get(tag, {}).values())

    def count_user(self, user_id: UserId) -> int:
        """How many connections the user has in this process, in O(1)."""
        return len(self._by_user.get(user_id, ()))

    def __contains__(self, conn_id: object) -> bool:
        return conn_id in self._by_id

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[ConnT]:
        """Every connection (a snapshot taken now), in registration order."""
        return iter(list(self._by_id.values()))


def _discard(index: dict[K, dict[ConnectionId, ConnT]], key: K, conn_id: ConnectionId) -> None:
    bucket = index[key]
    del bucket[conn_id]
    if not bucket:
        del index[key]  # no empty buckets: the index stays as small as the live set
