"""Where an envelope goes, and the Broadcaster protocol that carries it there.

A *target* names the receivers: a channel, a user (all of their connections), one
connection, a tag, or everyone. The hub resolves targets against its own connections; a
broadcaster decides whether the envelope must also travel to other processes (the local one
never does; the Redis one, :mod:`mlsockets.broadcast.redis`, relays it).

A broadcaster that relays raises :class:`BroadcastUnavailable` from :meth:`Broadcaster.publish`
when the other processes cannot be reached: never a silent loss. Its ``delivered`` attribute
says how many connections of this process got the envelope anyway.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from mlsockets.channels.names import parse_channel
from mlsockets.exceptions import MLSocketsError
from mlsockets.formatters.envelope import event_envelope
from mlsockets.typing import ConnectionId

__all__ = [
    "ClusterUnavailable",
    "BroadcastUnavailable",
    "Channel",
    "User",
    "ConnectionTarget",
    "Tag",
    "Everyone",
    "Target",
    "Deliver",
    "Broadcaster",
    "addressed",
]


class ClusterUnavailable(MLSocketsError):
    """The cluster's shared state (Redis) cannot be reached: a registry query failed, or
    Redis was unreachable. Transient: the relay and the registry reconnect by themselves."""


class BroadcastUnavailable(ClusterUnavailable):
    """An envelope could not be relayed to the other processes of the cluster.

    Raised by a relaying :meth:`Broadcaster.publish` (hence ``Hub.emit``) and by
    :meth:`mlsockets.broadcast.emitter.Emitter.emit` while Redis is unreachable or the relay
    is reconnecting, instead of dropping the envelope silently.

    Attributes:
        delivered: how many connections of this process received it anyway (the local
            delivery does not depend on Redis); None where there is no local delivery (an
            emitter).
    """

    def __init__(self, message: str, delivered: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.delivered = delivered


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
        """Deliver (and relay, where that applies); return the number of local receivers.

        Raises:
            BroadcastUnavailable: (relaying broadcasters) the local receivers got it, the
                other processes could not be reached.
        """

    def channel_added(self, channel: str) -> None: ...

    def channel_removed(self, channel: str) -> None: ...


def addressed(
    event: str, data: object, to: str | Target | None
) -> tuple[Target, dict[str, object]]:
    """The target and envelope of an emit: ``to`` is a channel name, a Target, or None for
    everyone; a channel target puts its name in the envelope. Raises ``InvalidChannel`` for a
    bad channel name. Shared by the hub and the publish-only Emitter."""
    target: Target
    if to is None:
        target = Everyone()
    elif isinstance(to, str):
        target = Channel(parse_channel(to)[1])
    else:
        target = to
    channel = target.name if isinstance(target, Channel) else None
    return target, event_envelope(event, data, channel)
