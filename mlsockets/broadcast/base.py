"""Where an envelope goes, and the Broadcaster protocol that carries it there.

A *target* names the receivers: a channel, a user (all of their connections), one
connection, a tag, or everyone. The hub resolves targets against its own connections; a
broadcaster decides whether the envelope must also travel to other processes (the local one
never does; the Redis one, in the cluster issue, relays it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from mlsockets.typing import ConnectionId

__all__ = [
    "Channel",
    "User",
    "ConnectionTarget",
    "Tag",
    "Everyone",
    "Target",
    "Deliver",
    "Broadcaster",
]


@dataclass(frozen=True, slots=True)
class Channel:
    """Every connection subscribed to (or joined to) ``name``."""

    name: str


@dataclass(frozen=True, slots=True)
class User:
    """Every connection of the user ``user_id``."""

    user_id: str


@dataclass(frozen=True, slots=True)
class ConnectionTarget:
    """One connection."""

    connection_id: str


@dataclass(frozen=True, slots=True)
class Tag:
    """Every connection whose principal carries ``tag``."""

    tag: str


@dataclass(frozen=True, slots=True)
class Everyone:
    """Every connection."""


Target = Channel | User | ConnectionTarget | Tag | Everyone

#: ``deliver(target, envelope, skip) -> receivers``: the hub's local delivery. ``envelope`` is
#: a plain mapping (formatters encode it once per format); ``skip`` excludes one connection.
Deliver = Callable[[Target, Mapping[str, object], ConnectionId | None], int]


class Broadcaster(Protocol):
    """Carries envelopes to their targets.

    Call protocol: the hub calls :meth:`attach` once with its local delivery; then
    :meth:`publish` for every emit, and :meth:`channel_added` / :meth:`channel_removed`
    when a channel gains its first or loses its last local member (a cluster relay
    subscribes and unsubscribes then).
    """

    def attach(self, deliver: Deliver) -> None: ...

    def publish(
        self, target: Target, envelope: Mapping[str, object], skip: ConnectionId | None
    ) -> int:
        """Deliver (and relay, where that applies); return the number of local receivers."""

    def channel_added(self, channel: str) -> None: ...

    def channel_removed(self, channel: str) -> None: ...
