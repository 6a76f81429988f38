"""Presence: users, not connections; joined on the first, left after the last; grace."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from types import MappingProxyType

import pytest

from mlsockets.channels.presence import Member, Presence
from mlsockets.scheduling import ManualScheduler, Timer
from mlsockets.typing import ChannelName, ConnectionId, UserId

ROOM, HALL = ChannelName("presence-room.1"), ChannelName("presence-hall")
ALICE, BOB = UserId("alice"), UserId("bob")
TAB1, TAB2, TAB3 = ConnectionId("tab1"), ConnectionId("tab2"), ConnectionId("tab3")
INFO = {"name": "Alice"}

Left = tuple[ChannelName, UserId, Mapping[str, object]]


@pytest.fixture
def presence() -> Presence:
    return Presence()


@pytest.fixture
def scheduler() -> ManualScheduler:
    return ManualScheduler()


@pytest.fixture
def left() -> list[Left]:
    return []


@pytest.fixture
def graced(scheduler: ManualScheduler, left: list[Left]) -> Presence:
    return Presence(scheduler, grace=5.0, on_left=lambda *args: left.append(args))


class TestWithoutGrace:
    def test_empty(self, presence: Presence) -> None:
        assert presence.members(ROOM) == []
        assert not presence.is_present(ROOM, ALICE)
        assert presence.connections(ROOM, ALICE) == frozenset()
        assert presence.channels() == []
        assert presence.grace == 0.0

    def test_joined_only_on_the_first_connection(self, presence: Presence) -> None:
        assert presence.add(ROOM, ALICE, TAB1, INFO) is True
        assert presence.add(ROOM, ALICE, TAB2, INFO) is False
        assert presence.add(ROOM, ALICE, TAB2, INFO) is False  # repeated add
        assert presence.connections(ROOM, ALICE) == {TAB1, TAB2}

    def test_two_tabs_are_one_member(self, presence: Presence) -> None:
        presence.add(ROOM, ALICE, TAB1, INFO)
        presence.add(ROOM, ALICE, TAB2, INFO)
        assert presence.members(ROOM) == [Member(ALICE, INFO)]

    def test_left_only_after_the_last_connection(self, presence: Presence) -> None:
        presence.add(ROOM, ALICE, TAB1, INFO)
        presence.add(ROOM, ALICE, TAB2, INFO)
        assert presence.remove(ROOM, ALICE, TAB1) is False
        assert presence.is_present(ROOM, ALICE)
        assert presence.remove(ROOM, ALICE, TAB2) is True
        assert not presence.is_present(ROOM, ALICE)
        assert presence.members(ROOM) == []
        assert presence.channels() == []

    def test_rejoin_after_leaving_is_a_new_join_with_new_info(self, presence: Presence) -> None:
        presence.add(ROOM, ALICE, TAB1, INFO)
        presence.remove(ROOM, ALICE, TAB1)
        assert presence.add(ROOM, ALICE, TAB1, {"name": "Alice 2"}) is True
        assert presence.info(ROOM, ALICE) == {"name": "Alice 2"}

    def test_members_in_join_order_unpack_as_pairs(self, presence: Presence) -> None:
        presence.add(ROOM, BOB, TAB3, {"name": "Bob"})
        presence.add(ROOM, ALICE, TAB1, INFO)
        assert [(user, dict(info)) for user, info in presence.members(ROOM)] == [
            (BOB, {"name": "Bob"}),
            (ALICE, INFO),
        ]

    def test_channels_are_independent(self, presence: Presence) -> None:
        assert presence.add(ROOM, ALICE, TAB1, INFO) is True
        assert presence.add(HALL, ALICE, TAB1, INFO) is True
        assert presence.remove(ROOM, ALICE, TAB1) is True
        assert presence.members(HALL) == [Member(ALICE, INFO)]
        assert presence.channels() == [HALL]

    def test_other_users_keep_the_channel(self, presence: Presence) -> None:
        presence.add(ROOM, ALICE, TAB1, INFO)
        presence.add(ROOM, BOB, TAB2, {})
        assert presence.remove(ROOM, ALICE, TAB1) is True
        assert presence.members(ROOM) == [Member(BOB, {})]
        assert presence.channels() == [ROOM]

    def test_info_is_copied_read_only_and_fixed_by_the_first_connection(
        self, presence: Presence
    ) -> None:
        info = {"name": "Alice"}
        presence.add(ROOM, ALICE, TAB1, info)
        info["name"] = "mutated"
        presence.add(ROOM, ALICE, TAB2, {"name": "ignored"})
        stored = presence.info(ROOM, ALICE)
        assert stored == {"name": "Alice"}
        assert isinstance(stored, MappingProxyType)

    def test_info_of_a_non_member_raises(self, presence: Presence) -> None:
        with pytest.raises(KeyError):
            presence.info(ROOM, ALICE)
        presence.add(ROOM, BOB, TAB1, {})
        with pytest.raises(KeyError):
            presence.info(ROOM, ALICE)

    def test_anonymous_cannot_join(self, presence: Presence) -> None:
        with pytest.raises(ValueError, match="presence needs a user id"):
            presence.add(ROOM, None, TAB1, {})
        assert presence.channels() == []

    @pytest.mark.parametrize(
        ("channel", "user", "conn"),
        [(HALL, ALICE, TAB1), (ROOM, BOB, TAB1), (ROOM, ALICE, TAB2), (ROOM, None, TAB1)],
    )
    def test_remove_of_an_unknown_connection_is_a_no_op(
        self, presence: Presence, channel: ChannelName, user: UserId | None, conn: ConnectionId
    ) -> None:
        presence.add(ROOM, ALICE, TAB1, INFO)
        assert presence.remove(channel, user, conn) is False
        assert presence.connections(ROOM, ALICE) == {TAB1}

    def test_remove_twice(self, presence: Presence) -> None:
        presence.add(ROOM, ALICE, TAB1, INFO)
        assert presence.remove(ROOM, ALICE, TAB1) is True
        assert presence.remove(ROOM, ALICE, TAB1) is False

    def test_a_scheduler_without_grace_is_not_used(self, scheduler: ManualScheduler) -> None:
        calls: list[Left] = []
        presence = Presence(scheduler, grace=0, on_left=lambda *args: calls.append(args))
        presence.add(ROOM, ALICE, TAB1, INFO)
        assert presence.remove(ROOM, ALICE, TAB1) is True  # decided now
        assert scheduler.pending == 0
        assert calls == []  # on_left is for timer-decided leaves only


class TestConfiguration:
    @pytest.mark.parametrize("grace", [-1.0, math.nan])
    def test_grace_must_be_a_non_negative_number(
        self, scheduler: ManualScheduler, grace: float
    ) -> None:
        with pytest.raises(ValueError, match="grace must be >= 0"):
            Presence(scheduler, grace=grace)

    def test_grace_needs_a_scheduler(self) -> None:
        with pytest.raises(ValueError, match="needs a scheduler"):
            Presence(None, grace=1.0)


class TestGrace:
    def test_last_leave_is_decided_by_the_timer(
        self, graced: Presence, scheduler: ManualScheduler, left: list[Left]
    ) -> None:
        assert graced.add(ROOM, ALICE, TAB1, INFO) is True
        assert graced.remove(ROOM, ALICE, TAB1) is False
        # Still a member during the grace, with no connection.
        assert graced.members(ROOM) == [Member(ALICE, INFO)]
        assert graced.is_present(ROOM, ALICE)
        assert graced.connections(ROOM, ALICE) == frozenset()
        scheduler.advance(4.999)
        assert left == []
        scheduler.advance(0.001)
        assert left == [(ROOM, ALICE, INFO)]
        assert graced.members(ROOM) == []
        assert graced.channels() == []

    def test_state_is_already_updated_when_on_left_runs(self, scheduler: ManualScheduler) -> None:
        seen: list[list[Member]] = []
        presence: Presence

        def on_left(channel: ChannelName, user: UserId, info: Mapping[str, object]) -> None:
            seen.append(presence.members(channel))

        presence = Presence(scheduler, grace=1, on_left=on_left)
        presence.add(ROOM, ALICE, TAB1, INFO)
        presence.remove(ROOM, ALICE, TAB1)
        scheduler.advance(1)
        assert seen == [[]]

    def test_rejoin_within_grace_cancels_the_timer_without_flapping(
        self, graced: Presence, scheduler: ManualScheduler, left: list[Left]
    ) -> None:
        graced.add(ROOM, ALICE, TAB1, INFO)
        graced.remove(ROOM, ALICE, TAB1)  # page reload: the old tab goes...
        scheduler.advance(3)
        assert graced.add(ROOM, ALICE, TAB2, {"name": "new"}) is False  # ...and comes back
        assert scheduler.pending == 0
        scheduler.advance(100)
        assert left == []
        assert graced.members(ROOM) == [Member(ALICE, INFO)]  # info unchanged: no re-announce
        assert graced.connections(ROOM, ALICE) == {TAB2}

    def test_the_same_connection_id_may_come_back(
        self, graced: Presence, scheduler: ManualScheduler, left: list[Left]
    ) -> None:
        graced.add(ROOM, ALICE, TAB1, INFO)
        graced.remove(ROOM, ALICE, TAB1)
        assert graced.add(ROOM, ALICE, TAB1, INFO) is False
        scheduler.advance(10)
        assert left == []

    def test_a_new_grace_period_starts_on_each_last_leave(
        self, graced: Presence, scheduler: ManualScheduler, left: list[Left]
    ) -> None:
        graced.add(ROOM, ALICE, TAB1, INFO)
        graced.remove(ROOM, ALICE, TAB1)  # grace until 5
        scheduler.advance(4)
        graced.add(ROOM, ALICE, TAB2, INFO)
        scheduler.advance(0.5)
        graced.remove(ROOM, ALICE, TAB2)  # a new grace, until 9.5
        scheduler.advance(4.9)
        assert left == []
        assert graced.is_present(ROOM, ALICE)
        scheduler.advance(0.1)
        assert left == [(ROOM, ALICE, INFO)]

    def test_a_non_last_leave_schedules_nothing(
        self, graced: Presence, scheduler: ManualScheduler
    ) -> None:
        graced.add(ROOM, ALICE, TAB1, INFO)
        graced.add(ROOM, ALICE, TAB2, INFO)
        assert graced.remove(ROOM, ALICE, TAB1) is False
        assert scheduler.pending == 0

    def test_remove_of_a_member_in_grace_is_a_no_op(
        self, graced: Presence, scheduler: ManualScheduler, left: list[Left]
    ) -> None:
        graced.add(ROOM, ALICE, TAB1, INFO)
        graced.remove(ROOM, ALICE, TAB1)
        assert graced.remove(ROOM, ALICE, TAB1) is False
        assert scheduler.pending == 1
        scheduler.advance(5)
        assert len(left) == 1

    def test_users_and_channels_have_their_own_timers(
        self, graced: Presence, scheduler: ManualScheduler, left: list[Left]
    ) -> None:
        graced.add(ROOM, ALICE, TAB1, INFO)
        graced.add(ROOM, BOB, TAB2, {"name": "Bob"})
        graced.add(HALL, ALICE, TAB1, INFO)
        graced.remove(ROOM, ALICE, TAB1)
        scheduler.advance(1)
        graced.remove(ROOM, BOB, TAB2)
        scheduler.advance(1)
        graced.remove(HALL, ALICE, TAB1)
        graced.add(ROOM, BOB, TAB3, {"name": "Bob"})  # only Bob's timer is cancelled
        scheduler.advance(10)
        assert left == [(ROOM, ALICE, INFO), (HALL, ALICE, INFO)]
        assert graced.members(ROOM) == [Member(BOB, {"name": "Bob"})]

    def test_without_on_left_the_member_still_expires(self, scheduler: ManualScheduler) -> None:
        presence = Presence(scheduler, grace=2)
        presence.add(ROOM, ALICE, TAB1, INFO)
        presence.remove(ROOM, ALICE, TAB1)
        scheduler.advance(2)
        assert presence.members(ROOM) == []

    def test_on_left_exceptions_reach_the_scheduler_after_the_state_changed(
        self, scheduler: ManualScheduler
    ) -> None:
        def on_left(channel: ChannelName, user: UserId, info: Mapping[str, object]) -> None:
            raise RuntimeError("broadcast failed")

        presence = Presence(scheduler, grace=1, on_left=on_left)
        presence.add(ROOM, ALICE, TAB1, INFO)
        presence.remove(ROOM, ALICE, TAB1)
        with pytest.raises(RuntimeError, match="broadcast failed"):
            scheduler.advance(1)
        assert presence.members(ROOM) == []

    def test_clear_cancels_timers_silently(
        self, graced: Presence, scheduler: ManualScheduler, left: list[Left]
    ) -> None:
        graced.add(ROOM, ALICE, TAB1, INFO)
        graced.add(ROOM, BOB, TAB2, {})
        graced.remove(ROOM, ALICE, TAB1)
        graced.clear()
        assert scheduler.pending == 0
        scheduler.advance(10)
        assert left == []
        assert graced.channels() == []
        assert graced.add(ROOM, ALICE, TAB1, INFO) is True

    def test_close_cancels_timers_and_schedules_none_afterwards(
        self, graced: Presence, scheduler: ManualScheduler, left: list[Left]
    ) -> None:
        graced.add(ROOM, ALICE, TAB1, INFO)
        graced.remove(ROOM, ALICE, TAB1)  # in grace
        graced.close()
        graced.close()  # twice is fine
        assert scheduler.pending == 0
        # A connection that still closes after the hub: forgotten at once, nobody told.
        assert graced.add(ROOM, BOB, TAB2, {}) is True
        assert graced.remove(ROOM, BOB, TAB2) is False
        assert scheduler.pending == 0
        assert scheduler.advance(60) == 0
        assert left == [] and graced.channels() == []

    def test_close_without_grace_announces_nothing(self, presence: Presence) -> None:
        presence.add(ROOM, ALICE, TAB1, INFO)
        presence.close()
        presence.add(ROOM, ALICE, TAB1, INFO)
        assert presence.remove(ROOM, ALICE, TAB1) is False
        assert presence.members(ROOM) == []


class LateScheduler:
    """A scheduler whose cancel() does not stop the call, as when a greenlet timer has
    already been dequeued: the callback must notice it is stale and do nothing."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, Callable[[], None]]] = []

    def call_later(self, delay: float, fn: Callable[[], None]) -> Timer:
        self.calls.append((delay, fn))
        return _NoCancel()

    def fire_all(self) -> None:
        calls, self.calls = self.calls, []
        for _, fn in calls:
            fn()


class _NoCancel:
    def cancel(self) -> None:
        pass


class TestStaleTimers:
    def test_a_late_timer_after_rejoin_does_nothing(self, left: list[Left]) -> None:
        late = LateScheduler()
        presence = Presence(late, grace=1, on_left=lambda *a: left.append(a))
        presence.add(ROOM, ALICE, TAB1, INFO)
        presence.remove(ROOM, ALICE, TAB1)
        presence.add(ROOM, ALICE, TAB2, INFO)
        late.fire_all()
        assert left == []
        assert presence.connections(ROOM, ALICE) == {TAB2}

    def test_a_late_timer_does_not_cut_a_newer_grace_short(self, left: list[Left]) -> None:
        late = LateScheduler()
        presence = Presence(late, grace=1, on_left=lambda *a: left.append(a))
        presence.add(ROOM, ALICE, TAB1, INFO)
        presence.remove(ROOM, ALICE, TAB1)  # timer 1
        presence.add(ROOM, ALICE, TAB2, INFO)  # cancel fails to stop timer 1
        presence.remove(ROOM, ALICE, TAB2)  # timer 2
        first, second = late.calls
        late.calls = [first]
        late.fire_all()
        assert left == []  # timer 1 is stale
        assert presence.is_present(ROOM, ALICE)
        late.calls = [second]
        late.fire_all()
        assert left == [(ROOM, ALICE, INFO)]

    def test_a_late_timer_after_clear_and_rejoin_does_nothing(self, left: list[Left]) -> None:
        late = LateScheduler()
        presence = Presence(late, grace=1, on_left=lambda *a: left.append(a))
        presence.add(ROOM, ALICE, TAB1, INFO)
        presence.remove(ROOM, ALICE, TAB1)
        presence.clear()
        presence.add(ROOM, ALICE, TAB1, INFO)
        presence.remove(ROOM, ALICE, TAB1)
        stale, _ = late.calls
        late.calls = [stale]
        late.fire_all()  # another entry now: ignored
        assert presence.is_present(ROOM, ALICE)
        assert left == []

    def test_a_late_timer_after_clear_does_nothing(self, left: list[Left]) -> None:
        late = LateScheduler()
        presence = Presence(late, grace=1, on_left=lambda *a: left.append(a))
        presence.add(ROOM, ALICE, TAB1, INFO)
        presence.remove(ROOM, ALICE, TAB1)
        presence.clear()
        late.fire_all()
        assert left == []
