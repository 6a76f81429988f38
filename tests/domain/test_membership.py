"""Membership: channel <-> connection ids, with first-member / last-member transitions."""

from __future__ import annotations

import pytest

from mlsockets.channels.membership import Membership
from mlsockets.typing import ChannelName, ConnectionId

LOBBY, ROOM, OTHER = ChannelName("lobby"), ChannelName("room:1"), ChannelName("room:2")
A, B, C = ConnectionId("a"), ConnectionId("b"), ConnectionId("c")


@pytest.fixture
def m() -> Membership:
    return Membership()


def test_empty(m: Membership) -> None:
    assert m.members(LOBBY) == frozenset()
    assert m.channels_of(A) == frozenset()
    assert m.count(LOBBY) == 0
    assert not m.is_member(LOBBY, A)
    assert m.channels() == []
    assert len(m) == 0


def test_join_reports_only_the_first_local_member(m: Membership) -> None:
    assert m.join(LOBBY, A) is True
    assert m.join(LOBBY, B) is False
    assert m.join(LOBBY, A) is False  # idempotent
    assert m.members(LOBBY) == {A, B}
    assert m.count(LOBBY) == 2
    assert m.is_member(LOBBY, A) and not m.is_member(LOBBY, C)


def test_leave_reports_only_the_last_local_member(m: Membership) -> None:
    m.join(LOBBY, A)
    m.join(LOBBY, B)
    assert m.leave(LOBBY, A) is False
    assert m.leave(LOBBY, A) is False  # idempotent
    assert m.leave(LOBBY, B) is True
    assert m.members(LOBBY) == frozenset()
    assert m.channels() == []


def test_leave_of_a_non_member_is_a_no_op(m: Membership) -> None:
    assert m.leave(LOBBY, A) is False
    m.join(LOBBY, A)
    assert m.leave(LOBBY, B) is False
    assert m.leave(ROOM, A) is False
    assert m.members(LOBBY) == {A}


def test_a_channel_can_be_joined_again_after_emptying(m: Membership) -> None:
    m.join(LOBBY, A)
    m.leave(LOBBY, A)
    assert m.join(LOBBY, A) is True


def test_indexes_both_ways(m: Membership) -> None:
    m.join(LOBBY, A)
    m.join(ROOM, A)
    m.join(ROOM, B)
    assert m.channels_of(A) == {LOBBY, ROOM}
    assert m.channels_of(B) == {ROOM}
    m.leave(ROOM, A)
    assert m.channels_of(A) == {LOBBY}
    m.leave(LOBBY, A)
    assert m.channels_of(A) == frozenset()
    assert m.channels() == [ROOM]


def test_leave_all_returns_channels_in_join_order(m: Membership) -> None:
    m.join(ROOM, A)
    m.join(LOBBY, A)
    m.join(OTHER, A)
    m.join(LOBBY, B)
    assert m.leave_all(A) == [ROOM, LOBBY, OTHER]
    assert m.channels_of(A) == frozenset()
    # The channels that lost their last local member are those now empty.
    assert [ch for ch in (ROOM, LOBBY, OTHER) if m.count(ch) == 0] == [ROOM, OTHER]
    assert m.members(LOBBY) == {B}
    assert m.channels() == [LOBBY]
    assert len(m) == 1


def test_leave_all_of_an_unknown_connection(m: Membership) -> None:
    assert m.leave_all(A) == []


def test_leave_all_is_idempotent(m: Membership) -> None:
    m.join(LOBBY, A)
    assert m.leave_all(A) == [LOBBY]
    assert m.leave_all(A) == []
    assert m.join(LOBBY, A) is True


def test_queries_are_snapshots(m: Membership) -> None:
    m.join(LOBBY, A)
    m.join(LOBBY, B)
    m.join(LOBBY, C)
    members = m.members(LOBBY)
    channels = m.channels_of(A)
    # Iterating while members leave (a failed send disconnecting) cannot break the loop.
    for conn_id in members:
        m.leave_all(conn_id)
    assert members == {A, B, C}
    assert channels == {LOBBY}
    assert len(m) == 0


def test_channels_lists_every_non_empty_channel_in_creation_order(m: Membership) -> None:
    m.join(ROOM, A)
    m.join(LOBBY, B)
    m.join(ROOM, B)
    assert m.channels() == [ROOM, LOBBY]
    assert len(m) == 2
