"""LocalRegistry: connections by id, user and tag."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from mlsockets.auth import ANONYMOUS, Principal
from mlsockets.registry import ConnectionRegistry, HasIdentity, LocalRegistry
from mlsockets.typing import ConnectionId, UserId

ALICE, BOB = UserId("alice"), UserId("bob")


@dataclass(frozen=True, eq=False)
class FakeConn:
    """A connection as the registry sees it: an id and a principal (identity equality)."""

    id: ConnectionId
    principal: Principal = ANONYMOUS


def conn(conn_id: str, user: UserId | None = None, *tags: str) -> FakeConn:
    return FakeConn(ConnectionId(conn_id), Principal(user, tags=frozenset(tags)))


@pytest.fixture
def registry() -> LocalRegistry[FakeConn]:
    return LocalRegistry()


def test_satisfies_the_protocols(registry: LocalRegistry[FakeConn]) -> None:
    as_protocol: ConnectionRegistry[FakeConn] = registry
    identity: HasIdentity = conn("a")
    as_protocol.add(FakeConn(identity.id, identity.principal))
    assert len(as_protocol) == 1


def test_empty(registry: LocalRegistry[FakeConn]) -> None:
    assert len(registry) == 0
    assert list(registry) == []
    assert registry.get(ConnectionId("a")) is None
    assert registry.by_user(ALICE) == []
    assert registry.by_tag("staff") == []
    assert registry.count_user(ALICE) == 0
    assert ConnectionId("a") not in registry


def test_lookup_by_id(registry: LocalRegistry[FakeConn]) -> None:
    a, b = conn("a", ALICE), conn("b")
    registry.add(a)
    registry.add(b)
    assert registry.get(ConnectionId("a")) is a
    assert registry.get(ConnectionId("b")) is b
    assert ConnectionId("a") in registry
    assert len(registry) == 2


def test_lookup_by_user_in_registration_order(registry: LocalRegistry[FakeConn]) -> None:
    a1, b1, a2 = conn("a1", ALICE), conn("b1", BOB), conn("a2", ALICE)
    for c in (a1, b1, a2):
        registry.add(c)
    assert registry.by_user(ALICE) == [a1, a2]
    assert registry.by_user(BOB) == [b1]
    assert registry.count_user(ALICE) == 2
    assert registry.count_user(BOB) == 1


def test_anonymous_connections_are_not_indexed_by_user(
    registry: LocalRegistry[FakeConn],
) -> None:
    anon = conn("x", None, "guests")
    registry.add(anon)
    assert registry.get(ConnectionId("x")) is anon
    assert registry.by_tag("guests") == [anon]
    assert registry.count_user(ALICE) == 0
    registry.remove(anon)
    assert len(registry) == 0
    assert registry.by_tag("guests") == []


def test_lookup_by_tag(registry: LocalRegistry[FakeConn]) -> None:
    a = conn("a", ALICE, "staff", "beta")
    b = conn("b", BOB, "beta")
    c = conn("c", None)
    for x in (a, b, c):
        registry.add(x)
    assert registry.by_tag("staff") == [a]
    assert registry.by_tag("beta") == [a, b]
    assert registry.by_tag("nobody") == []


def test_remove_cleans_every_index(registry: LocalRegistry[FakeConn]) -> None:
    a1 = conn("a1", ALICE, "staff", "beta")
    a2 = conn("a2", ALICE, "beta")
    registry.add(a1)
    registry.add(a2)
    registry.remove(a1)
    assert registry.get(ConnectionId("a1")) is None
    assert registry.by_user(ALICE) == [a2]
    assert registry.count_user(ALICE) == 1
    assert registry.by_tag("staff") == []
    assert registry.by_tag("beta") == [a2]
    registry.remove(a2)
    assert len(registry) == 0
    assert registry.count_user(ALICE) == 0
    # No empty buckets left behind: the indexes shrink with the live set.
    assert registry._by_user == {} and registry._by_tag == {}


def test_duplicate_id_is_refused(registry: LocalRegistry[FakeConn]) -> None:
    first = conn("a", ALICE, "staff")
    registry.add(first)
    with pytest.raises(ValueError, match="'a' is already registered"):
        registry.add(conn("a", BOB, "other"))
    with pytest.raises(ValueError):
        registry.add(first)
    # The failed adds left nothing behind.
    assert registry.get(ConnectionId("a")) is first
    assert registry.by_user(BOB) == []
    assert registry.by_tag("other") == []
    assert registry.count_user(ALICE) == 1


def test_remove_is_idempotent(registry: LocalRegistry[FakeConn]) -> None:
    a = conn("a", ALICE, "staff")
    registry.remove(a)  # never added
    registry.add(a)
    registry.remove(a)
    registry.remove(a)
    assert len(registry) == 0


def test_a_stale_object_does_not_remove_its_successor(
    registry: LocalRegistry[FakeConn],
) -> None:
    old = conn("a", ALICE)
    new = conn("a", ALICE)
    registry.add(old)
    registry.remove(old)
    registry.add(new)
    registry.remove(old)  # a late disconnect of the old object
    assert registry.get(ConnectionId("a")) is new
    assert registry.count_user(ALICE) == 1


def test_lookups_are_snapshots(registry: LocalRegistry[FakeConn]) -> None:
    conns = [conn(str(i), ALICE, "t") for i in range(5)]
    for c in conns:
        registry.add(c)
    # Removing connections while iterating (a failed send disconnects) breaks nothing.
    for c in registry:
        registry.remove(c)
    assert len(registry) == 0
    for c in conns:
        registry.add(c)
    for c in registry.by_user(ALICE):
        registry.remove(c)
    for c in conns:
        registry.add(c)
    for c in registry.by_tag("t"):
        registry.remove(c)
    assert len(registry) == 0


def test_iteration_in_registration_order(registry: LocalRegistry[FakeConn]) -> None:
    conns = [conn(name) for name in ("c", "a", "b")]
    for c in conns:
        registry.add(c)
    assert list(registry) == conns
