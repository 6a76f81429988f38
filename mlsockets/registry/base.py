"""The connection registry protocol: find this process's connections by id, user or tag.

A registry holds connection objects, so it only ever holds the connections of its own
process. What a cluster adds (the ``redis`` registry) is knowledge about the other nodes, such
as :meth:`ConnectionRegistry.count_user` across the cluster; object lookups stay local.

Registries are generic over the connection type: anything with an ``id`` and a ``principal``
(:class:`HasIdentity`), such as the hub's ``Connection``. The principal is immutable, so the
user and tags a connection is indexed under cannot change while it is registered.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, TypeVar

from mlsockets.auth import Principal
from mlsockets.typing import ConnectionId, UserId

__all__ = ["ConnectionRegistry", "HasIdentity", "ConnT"]


class HasIdentity(Protocol):
    """What a registry needs of a connection. Read-only, so frozen dataclasses qualify."""

    @property
    def id(self) -> ConnectionId: ...

    @property
    def principal(self) -> Principal: ...


ConnT = TypeVar("ConnT", bound=HasIdentity)


class ConnectionRegistry(Protocol[ConnT]):
    """The connections of this process, indexed by id, user id and tag.

    Lookups return snapshots (lists), so a caller may iterate while sending, even when a
    failed send removes a connection from the registry.
    """

    def add(self, conn: ConnT) -> None:
        """Register ``conn``; raises ``ValueError`` when its id is already registered."""
        ...

    def remove(self, conn: ConnT) -> None:
        """Unregister ``conn``; a no-op when it is not registered."""
        ...

    def get(self, conn_id: ConnectionId) -> ConnT | None:
        """The connection with this id, or None."""
        ...

    def by_user(self, user_id: UserId) -> list[ConnT]:
        """The user's connections, in registration order."""
        ...

    def by_tag(self, tag: str) -> list[ConnT]:
        """The connections whose principal carries ``tag``, in registration order."""
        ...

    def count_user(self, user_id: UserId) -> int:
        """How many connections the user has (cluster-wide in a cluster registry)."""
        ...

    def __len__(self) -> int:
        """The number of connections registered in this process."""
        ...

    def __iter__(self) -> Iterator[ConnT]:
        """Every connection of this process (a snapshot), in registration order."""
        ...
