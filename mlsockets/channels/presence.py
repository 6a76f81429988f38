"""Who is in a presence channel: users, not connections.

A user with two tabs open is one member with two connections. :meth:`Presence.add` returns
True only for a user's first connection in a channel (announce ``mls.joined``) and
:meth:`Presence.remove` True only when the last one left (announce ``mls.left``), so the
other members never see a user join twice.

Grace period: with ``grace > 0``, a user whose last connection leaves stays a member for
``grace`` seconds. :meth:`Presence.remove` then returns False and schedules a timer through
the injected :class:`~mlsockets.scheduling.Scheduler`; when it fires and the user has still
no connection in the channel, the member is removed and ``on_left(channel, user_id, info)``
is called (the caller announces ``mls.left`` there). A re-:meth:`~Presence.add` within the
grace cancels the timer and returns False: a page reload does not flap ``mls.left`` /
``mls.joined``. With ``grace == 0``, ``on_left`` is never called: ``remove`` returning True
is the signal.

Rules:

- presence needs a user id: :meth:`Presence.add` raises ``ValueError`` for an anonymous
  connection (``user_id`` None); the hub refuses a presence subscribe before that;
- a member's info is fixed by their first connection; a later connection's info is ignored,
  since the other members were never told about a change;
- :meth:`Presence.members` includes members in their grace period.

No I/O and no clock: time passes only through the scheduler.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import NamedTuple

from mlsockets.scheduling import Scheduler, Timer
from mlsockets.typing import ChannelName, ConnectionId, UserId

__all__ = ["Member", "OnLeft", "Presence"]

#: Called as ``on_left(channel, user_id, info)`` when a grace period ends with the user gone.
OnLeft = Callable[[ChannelName, UserId, Mapping[str, object]], None]


class Member(NamedTuple):
    """One user present in a channel; unpacks as ``user_id, info``."""

    user_id: UserId
    info: Mapping[str, object]


class _Entry:
    """One user in one channel."""

    __slots__ = ("info", "connections", "timer", "generation")

    def __init__(self, info: Mapping[str, object]) -> None:
        self.info = info
        self.connections: dict[ConnectionId, None] = {}  # an ordered set
        self.timer: Timer | None = None
        # Bumped whenever a grace timer is scheduled or cancelled: a timer that fires anyway
        # (cancel raced with it) sees a different generation and does nothing.
        self.generation = 0


class Presence:
    """Per channel: user id -> (info, connection ids), with an optional grace period.

    Args:
        scheduler: runs grace timers; required when ``grace > 0``.
        grace: seconds a user stays a member after their last connection left (>= 0).
        on_left: called as ``on_left(channel, user_id, info)`` when a grace period expires
            with the user gone; never called when ``grace == 0``. An exception it raises goes
            to the scheduler (the member is already removed by then).

    Raises:
        ValueError: ``grace`` is negative or NaN, or ``grace > 0`` without a scheduler.
    """

    def __init__(
        self,
        scheduler: Scheduler | None = None,
        grace: float = 0.0,
        on_left: OnLeft | None = None,
    ) -> None:
        if math.isnan(grace) or grace < 0:
            raise ValueError(f"presence grace must be >= 0 seconds, not {grace!r}")
        if grace > 0 and scheduler is None:
            raise ValueError("a presence grace period needs a scheduler")
        self._scheduler = scheduler
        self._grace = grace
        self._on_left = on_left
        self._channels: dict[ChannelName, dict[UserId, _Entry]] = {}
        self._closed = False

    @property
    def grace(self) -> float:
        """The grace period, in seconds."""
        return self._grace

    def add(
        self,
        channel: ChannelName,
        user_id: UserId | None,
        conn_id: ConnectionId,
        info: Mapping[str, object],
    ) -> bool:
        """Record that connection ``conn_id`` of ``user_id`` is in ``channel``.

        Args:
            info: the member info shown to others; kept (copied, read-only) only when this
                makes the user a member.

        Returns:
            ``joined``: True only when the user was not a member (announce ``mls.joined``);
            False for another connection of a member, a repeated add, or a return within
            the grace period (whose timer is cancelled).

        Raises:
            ValueError: ``user_id`` is None (presence channels need a signed-in user).
        """
        if user_id is None:
            raise ValueError("presence needs a user id: anonymous connections cannot join")
        users = self._channels.setdefault(channel, {})
        entry = users.get(user_id)
        joined = entry is None
        if entry is None:
            entry = users[user_id] = _Entry(MappingProxyType(dict(info)))
        elif entry.timer is not None:
            entry.timer.cancel()
            entry.timer = None
            entry.generation += 1
        entry.connections[conn_id] = None
        return joined

    def remove(self, channel: ChannelName, user_id: UserId | None, conn_id: ConnectionId) -> bool:
        """Record that connection ``conn_id`` of ``user_id`` left ``channel``.

        A no-op returning False when that connection is not recorded (anonymous included),
        so the hub may call it on every disconnect.

        Returns:
            ``left``: True when the user's last connection left and there is no grace period
            (announce ``mls.left``). With a grace period, False: the timer decides, and
            reports through ``on_left``. After :meth:`close`, always False.
        """
        users = self._channels.get(channel)
        if users is None or user_id is None:
            return False
        entry = users.get(user_id)
        if entry is None or conn_id not in entry.connections:
            return False
        del entry.connections[conn_id]
        if entry.connections:
            return False
        if self._closed:  # shut down: forget at once, nobody is left to tell
            self._forget(channel, users, user_id)
            return False
        if self._scheduler is None or self._grace == 0:
            self._forget(channel, users, user_id)
            return True
        entry.generation += 1
        generation = entry.generation
        entry.timer = self._scheduler.call_later(
            self._grace, lambda: self._expire(channel, user_id, entry, generation)
        )
        return False

    def _expire(
        self, channel: ChannelName, user_id: UserId, entry: _Entry, generation: int
    ) -> None:
        users = self._channels.get(channel)
        # The entry may have been cleared, replaced, rejoined or rescheduled since.
        if users is None or users.get(user_id) is not entry or entry.generation != generation:
            return
        entry.timer = None
        self._forget(channel, users, user_id)
        if self._on_left is not None:
            self._on_left(channel, user_id, entry.info)

    def _forget(self, channel: ChannelName, users: dict[UserId, _Entry], user_id: UserId) -> None:
        del users[user_id]
        if not users:
            del self._channels[channel]

    def members(self, channel: ChannelName) -> list[Member]:
        """The members of ``channel``, in the order they joined, those in grace included."""
        users = self._channels.get(channel, {})
        return [Member(user_id, entry.info) for user_id, entry in users.items()]

    def info(self, channel: ChannelName, user_id: UserId) -> Mapping[str, object]:
        """The member info of ``user_id`` in ``channel``.

        Raises:
            KeyError: the user is not a member of the channel.
        """
        return self._channels[channel][user_id].info

    def is_present(self, channel: ChannelName, user_id: UserId) -> bool:
        """Whether ``user_id`` is a member of ``channel`` (in grace included)."""
        return user_id in self._channels.get(channel, {})

    def connections(self, channel: ChannelName, user_id: UserId) -> frozenset[ConnectionId]:
        """The user's connections in ``channel``; empty in grace or when not a member."""
        entry = self._channels.get(channel, {}).get(user_id)
        return frozenset(entry.connections) if entry is not None else frozenset()

    def channels(self) -> list[ChannelName]:
        """Every channel with at least one member."""
        return list(self._channels)

    def clear(self) -> None:
        """Forget everyone and cancel pending grace timers (hub shutdown); no ``on_left``."""
        for users in self._channels.values():
            for entry in users.values():
                if entry.timer is not None:
                    entry.timer.cancel()
                    entry.timer = None
        self._channels.clear()

    def close(self) -> None:
        """Shut down (the hub's :meth:`~mlsockets.hub.Hub.close`): :meth:`clear`, and from
        now on :meth:`remove` forgets a user's last connection at once and returns False:
        no timer is scheduled and ``on_left`` is never called again. Safe to call twice."""
        self._closed = True
        self.clear()
