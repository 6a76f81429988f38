"""Which local connections are in which channel, indexed both ways.

:class:`Membership` knows connection ids only, never connection objects, and never
validates names: the hub parses channel names (:func:`~mlsockets.channels.names.parse_channel`)
and authorizes before it calls :meth:`Membership.join`.

``join`` and ``leave`` report the transitions the cluster relay cares about: a channel's first
local member (subscribe to its Redis channel) and its last (unsubscribe). Both are idempotent,
so a disconnect racing an unsubscribe does no harm.

Every query returns a snapshot, so callers may iterate while sending: a send that fails and
disconnects a connection mid-broadcast cannot break the iteration.
"""

from __future__ import annotations

from mlsockets.typing import ChannelName, ConnectionId

__all__ = ["Membership"]


class Membership:
    """channel -> connection ids, and connection id -> channels. Both in join order."""

    def __init__(self) -> None:
        # dicts as insertion-ordered sets: deterministic order for leave_all and for tests.
        self._members: dict[ChannelName, dict[ConnectionId, None]] = {}
        self._channels: dict[ConnectionId, dict[ChannelName, None]] = {}

    def join(self, channel: ChannelName, conn_id: ConnectionId) -> bool:
        """Put ``conn_id`` in ``channel``.

        Returns:
            True when the channel gained its first local member; False otherwise, including
            when ``conn_id`` already was a member.
        """
        members = self._members.get(channel)
        first = members is None
        if members is None:
            members = self._members[channel] = {}
        elif conn_id in members:
            return False
        members[conn_id] = None
        self._channels.setdefault(conn_id, {})[channel] = None
        return first

    def leave(self, channel: ChannelName, conn_id: ConnectionId) -> bool:
        """Take ``conn_id`` out of ``channel``; a no-op when it is not a member.

        Returns:
            True when the channel lost its last local member.
        """
        members = self._members.get(channel)
        if members is None or conn_id not in members:
            return False
        del members[conn_id]
        channels = self._channels[conn_id]
        del channels[channel]
        if not channels:
            del self._channels[conn_id]
        if members:
            return False
        del self._members[channel]
        return True

    def leave_all(self, conn_id: ConnectionId) -> list[ChannelName]:
        """Take ``conn_id`` out of every channel (on disconnect).

        Returns:
            The channels it was in, in join order. The ones that lost their last local member
            are those for which :meth:`count` is now 0.
        """
        channels = list(self._channels.pop(conn_id, ()))
        for channel in channels:
            members = self._members[channel]
            del members[conn_id]
            if not members:
                del self._members[channel]
        return channels

    def members(self, channel: ChannelName) -> frozenset[ConnectionId]:
        """The connection ids in ``channel`` (empty for an unknown channel)."""
        return frozenset(self._members.get(channel, ()))

    def channels_of(self, conn_id: ConnectionId) -> frozenset[ChannelName]:
        """The channels ``conn_id`` is in (empty for an unknown connection)."""
        return frozenset(self._channels.get(conn_id, ()))

    def is_member(self, channel: ChannelName, conn_id: ConnectionId) -> bool:
        """Whether ``conn_id`` is in ``channel``, in O(1) without a snapshot."""
        return conn_id in self._members.get(channel, ())

    def count(self, channel: ChannelName) -> int:
        """The number of local connections in ``channel``, in O(1)."""
        return len(self._members.get(channel, ()))

    def channels(self) -> list[ChannelName]:
        """Every channel with at least one local member (the relay re-subscribes to these)."""
        return list(self._members)

    def __len__(self) -> int:
        """The number of channels with at least one local member."""
        return len(self._members)
