"""Several hubs in this process, each with its own RedisBroadcaster (its own relay greenlet and
node id), connected through a real redis-server: fan-out, targets, presence, purge, faults.

Connections are in-memory fakes; "exactly once" is checked with a marker published after the
event through Redis only (an Emitter): Redis delivers in order, so once the marker arrived, a
duplicate of the event would have arrived too.
"""

from __future__ import annotations

import itertools
import json
import logging
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster_support import Processes, RedisServer, free_port, wait_for

from mlsockets.auth import Principal
from mlsockets.broadcast.base import (
    BroadcastUnavailable,
    ClusterUnavailable,
    ConnectionTarget,
    Tag,
    User,
)
from mlsockets.broadcast.emitter import Emitter
from mlsockets.broadcast.redis import RedisBroadcaster, RelayState
from mlsockets.broadcast.relay import ReconnectBackoff
from mlsockets.channels.authorizers import ChannelAuthorizers
from mlsockets.events import EventRouter
from mlsockets.exceptions import ConfigurationError
from mlsockets.formatters.base import FORMATTERS, MSGPACK, Formatter
from mlsockets.hub import Hub, HubOptions
from mlsockets.registry.redis import RedisRegistry
from mlsockets.scheduling import ManualScheduler
from mlsockets.typing import ConnectionId

JSON = FORMATTERS["mlsockets.json.v1"]
FAST = ReconnectBackoff(initial=0.02, maximum=0.2)
_ids = itertools.count(1)


class FakeConn:
    """A hub connection that records the envelopes it is sent."""

    def __init__(
        self, user: str | None = None, tags: tuple[str, ...] = (), formatter: Formatter = JSON
    ) -> None:
        self.id = ConnectionId(f"conn-{next(_ids)}")
        info = {"name": user.title()} if user else {}
        self.principal = Principal(user_id=user, info=info, tags=frozenset(tags))  # type: ignore[arg-type]
        self.formatter = formatter
        self.sent: list[dict[str, Any]] = []
        self.closed: tuple[int, str] | None = None

    def send(self, message: str | bytes) -> None:
        self.sent.append(self.formatter.decode(message))  # type: ignore[arg-type]

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.sent if e.get("event") == name]

    def got(self, name: str, count: int = 1) -> Callable[[], bool]:
        return lambda: len(self.events(name)) >= count


Make = Callable[..., Hub]


@pytest.fixture
def make_hub(redis_server: RedisServer, prefix: str) -> Iterator[Make]:
    """``make_hub(url=None, **from_url_options)``: a hub on its own RedisBroadcaster;
    every broadcaster is closed after the test."""
    made: list[RedisBroadcaster] = []

    def make(url: str | None = None, **options: Any) -> Hub:
        options.setdefault("backoff", FAST)
        options.setdefault("prefix", prefix)
        broadcaster = RedisBroadcaster.from_url(url or redis_server.url, **options)
        made.append(broadcaster)
        authorizers = ChannelAuthorizers()
        authorizers.add("presence-room.{id}", lambda principal, id: dict(principal.info))
        return Hub(EventRouter(), authorizers, broadcaster=broadcaster, options=_OPTIONS)

    yield make
    for broadcaster in made:
        broadcaster.close()


_OPTIONS = HubOptions(heartbeat=None)


def connect(hub: Hub, user: str | None = None, *channels: str, tags: tuple[str, ...] = ()) -> Any:
    conn = FakeConn(user, tags)
    assert hub.connect(conn)
    for channel in channels:
        subscribe(hub, conn, channel)
    return conn


def subscribe(hub: Hub, conn: FakeConn, channel: str) -> dict[str, Any]:
    msg_id = next(_ids)
    envelope = {"event": "mls.subscribe", "data": {"channel": channel}, "id": msg_id}
    hub.receive(conn, conn.formatter.encode(envelope))
    (reply,) = [e for e in conn.sent if e.get("reply") == msg_id]
    assert "error" not in reply, reply
    return reply["data"]  # type: ignore[no-any-return]


def broadcaster(hub: Hub) -> RedisBroadcaster:
    assert isinstance(hub.broadcaster, RedisBroadcaster)
    return hub.broadcaster


def cluster(hub: Hub) -> RedisRegistry:
    registry = broadcaster(hub).cluster
    assert registry is not None
    return registry


def marker(url: str, prefix: str, *conns: FakeConn, to: str | None = None) -> None:
    """Publish ``marker`` through Redis only and wait until every ``conns`` has it."""
    with Emitter.from_url(url, prefix=prefix) as emitter:
        n = len(conns[0].events("marker")) if conns else 0
        emitter.emit("marker", None, to=to)
    for conn in conns:
        wait_for(conn.got("marker", n + 1), what=f"the marker at {conn.id}")


class TestFanOut:
    def test_a_channel_emit_reaches_every_hub_once_and_skips_the_sender(
        self, make_hub: Make, redis_server: RedisServer, prefix: str
    ) -> None:
        a, b, c = make_hub(), make_hub(), make_hub()
        sender = connect(a, "u1", "room:lobby")
        a2 = connect(a, "u2", "room:lobby")
        b1 = connect(b, "u3", "room:lobby")
        c1 = connect(c, "u4")  # not in the channel
        assert a.emit("chat", {"text": "hi"}, to="room:lobby", skip=sender.id) == 1
        marker(redis_server.url, prefix, sender, a2, b1, to="room:lobby")
        assert [len(x.events("chat")) for x in (sender, a2, b1, c1)] == [0, 1, 1, 0]
        assert b1.events("chat") == [
            {"event": "chat", "channel": "room:lobby", "data": {"text": "hi"}}
        ]
        stats_a, stats_b = broadcaster(a).stats, broadcaster(b).stats
        assert stats_a.published == 1 and stats_a.own == 1  # its own copy came back, ignored
        assert stats_b.delivered >= 1
        assert broadcaster(c).stats.received == 0  # not subscribed to the channel

    def test_users_connections_tags_and_everyone_across_hubs(
        self, make_hub: Make, redis_server: RedisServer, prefix: str
    ) -> None:
        a, b = make_hub(), make_hub()
        alice_a = connect(a, "alice", tags=("staff",))
        alice_b = connect(b, "alice")
        bob_b = connect(b, "bob", tags=("staff",))
        anon_a = connect(a)
        b.emit("to-user", 1, to=User("alice"))
        b.emit("to-conn", 2, to=ConnectionTarget(alice_a.id))
        a.emit("to-tag", 3, to=Tag("staff"))
        a.emit("to-all", 4)
        everyone = (alice_a, alice_b, bob_b, anon_a)
        marker(redis_server.url, prefix, *everyone)
        counts = {
            name: [len(x.events(name)) for x in everyone]
            for name in ("to-user", "to-conn", "to-tag", "to-all")
        }
        assert counts == {
            "to-user": [1, 1, 0, 0],
            "to-conn": [1, 0, 0, 0],
            "to-tag": [1, 0, 1, 0],
            "to-all": [1, 1, 1, 1],
        }

    def test_a_local_connection_target_is_not_relayed(self, make_hub: Make) -> None:
        a = make_hub()
        conn = connect(a, "x")
        published = broadcaster(a).stats.published
        assert a.emit("direct", None, to=ConnectionTarget(conn.id)) == 1
        assert broadcaster(a).stats.published == published

    def test_redis_subscriptions_follow_the_first_and_last_local_member(
        self, make_hub: Make, redis_server: RedisServer, prefix: str
    ) -> None:
        a, b = make_hub(), make_hub()
        client = redis_server.client()
        name = f"{prefix}:c:room:x"

        def subscribers() -> int:
            return int(dict(client.pubsub_numsub(name))[name.encode()])

        assert subscribers() == 0
        first = connect(a, "u1", "room:x")
        assert subscribers() == 1  # confirmed before the subscribe was acknowledged
        second = connect(a, "u2", "room:x")
        connect(b, "u3", "room:x")
        assert subscribers() == 2
        a.disconnect(first)
        assert subscribers() == 2
        a.disconnect(second)
        wait_for(lambda: subscribers() == 1, what="the unsubscription")
        client.close()

    def test_unencodable_data_fails_before_anyone_gets_it(self, make_hub: Make) -> None:
        a = make_hub()
        conn = connect(a, "u", "room:x")
        with pytest.raises(TypeError, match="nor msgpack"):
            a.emit("bad", {1, 2}, to="room:x")  # a set: neither JSON nor msgpack
        assert conn.events("bad") == []
        assert broadcaster(a).stats.published == 0

    def test_bytes_reach_msgpack_clients_of_every_hub(
        self,
        make_hub: Make,
        redis_server: RedisServer,
        prefix: str,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        a, b = make_hub(), make_hub()
        packed_a = FakeConn("u1", formatter=MSGPACK)
        packed_b, plain_b = FakeConn("u2", formatter=MSGPACK), FakeConn("u3")
        for hub, conn in ((a, packed_a), (b, packed_b), (b, plain_b)):
            assert hub.connect(conn)
            subscribe(hub, conn, "room:bin")
        with caplog.at_level(logging.ERROR, "mlsockets.hub"):
            assert a.emit("blob", {"png": b"\x89PNG"}, to="room:bin") == 1
            marker(redis_server.url, prefix, packed_a, packed_b, plain_b, to="room:bin")
        expected = {"event": "blob", "channel": "room:bin", "data": {"png": b"\x89PNG"}}
        assert packed_a.events("blob") == [expected]
        assert packed_b.events("blob") == [expected]  # through Redis, as msgpack
        # A JSON client gets nothing, as in one process; its node logs why.
        assert plain_b.events("blob") == []
        assert any("cannot encode 'blob' as json" in r.getMessage() for r in caplog.records)

    def test_malformed_and_future_relay_messages_are_dropped(
        self,
        make_hub: Make,
        redis_server: RedisServer,
        prefix: str,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        a = make_hub()
        conn = connect(a, "u")
        client = redis_server.client()
        future = json.dumps({"v": 99, "origin": "tomorrow", "target": ["everyone", None]})
        with caplog.at_level(logging.WARNING, "mlsockets.broadcast"):
            client.publish(f"{prefix}:all", b"garbage")
            client.publish(f"{prefix}:all", future)
            client.publish(f"{prefix}:all", future)
            marker(redis_server.url, prefix, conn)
        assert broadcaster(a).stats.dropped == 3
        assert broadcaster(a).state == "connected"
        warnings = [r.getMessage() for r in caplog.records if "tomorrow" in r.getMessage()]
        assert len(warnings) == 1  # once per origin and version
        client.close()

    def test_unix_socket_url(self, make_hub: Make, redis_server: RedisServer, prefix: str) -> None:
        a, b = make_hub(redis_server.unix_url), make_hub(redis_server.unix_url)
        x = connect(a, "u1", "room:u")
        y = connect(b, "u2", "room:u")
        a.emit("hello", None, to="room:u")
        marker(redis_server.unix_url, prefix, x, y, to="room:u")
        assert (len(x.events("hello")), len(y.events("hello"))) == (1, 1)


class TestPresence:
    def test_presence_is_one_member_list_across_hubs(self, make_hub: Make) -> None:
        a, b = make_hub(), make_hub()
        room = "presence-room.1"
        alice = connect(a, "alice")
        assert subscribe(a, alice, room)["members"] == [
            {"user_id": "alice", "info": {"name": "Alice"}}
        ]
        bob = connect(b, "bob")
        members = subscribe(b, bob, room)["members"]
        assert [m["user_id"] for m in members] == ["alice", "bob"]
        wait_for(alice.got("mls.joined"), what="alice hearing that bob joined")
        assert alice.events("mls.joined")[0]["data"]["member"] == {
            "user_id": "bob",
            "info": {"name": "Bob"},
        }
        # A second tab on the other node: the same member, no mls.joined.
        alice_tab = connect(b, "alice")
        assert [m["user_id"] for m in subscribe(b, alice_tab, room)["members"]] == [
            "alice",
            "bob",
        ]
        assert cluster(a).user_connections("alice").keys() == {alice.id, alice_tab.id}
        assert cluster(a).online_users() == ["alice", "bob"]
        # The first tab closes: alice is still present through hub b.
        a.disconnect(alice)
        # The last tab closes: she leaves, and bob hears it once.
        b.disconnect(alice_tab)
        wait_for(bob.got("mls.left"), what="bob hearing that alice left")
        assert [e["data"]["member"]["user_id"] for e in bob.events("mls.left")] == ["alice"]
        assert len(bob.events("mls.joined")) == 0
        assert [m.user_id for m in cluster(a).channel_members(room)] == ["bob"]
        assert cluster(b).online_users() == ["bob"]

    def test_max_connections_per_user_counts_the_cluster(
        self, make_hub: Make, redis_server: RedisServer, prefix: str
    ) -> None:
        options = HubOptions(heartbeat=None, max_connections_per_user=1)
        first = RedisBroadcaster.from_url(redis_server.url, prefix=prefix, backoff=FAST)
        second = RedisBroadcaster.from_url(redis_server.url, prefix=prefix, backoff=FAST)
        try:
            a = Hub(broadcaster=first, options=options)
            b = Hub(broadcaster=second, options=options)
            assert a.connect(FakeConn("carol"))
            assert not b.connect(FakeConn("carol"))
            assert b.last_refusal is not None and b.last_refusal.code == 1008
        finally:
            first.close()
            second.close()

    def test_a_dead_node_is_purged_and_its_members_leave(self, make_hub: Make) -> None:
        a = make_hub(ttl=0.6)
        dead = make_hub(ttl=0.6)
        room = "presence-room.2"
        alice = connect(a, "alice", room)
        bob = connect(dead, "bob", room)
        wait_for(alice.got("mls.joined"), what="alice hearing that bob joined")
        assert cluster(a).online_users() == ["alice", "bob"]
        # The node stops without a word (as if SIGKILLed): no heartbeat, no goodbye.
        broadcaster(dead).close(deregister=False)
        wait_for(alice.got("mls.left"), what="the purge of the dead node")
        assert alice.events("mls.left")[0]["data"] == {
            "channel": room,
            "member": {"user_id": "bob", "info": {"name": "Bob"}},
        }
        assert cluster(a).online_users() == ["alice"]
        assert cluster(a).nodes() == [cluster(a).node_id]
        assert cluster(a).purged_nodes == 1
        assert bob.events("mls.left") == []

    def test_a_graceful_close_deregisters_at_once(self, make_hub: Make) -> None:
        a = make_hub()
        leaving = make_hub()
        room = "presence-room.3"
        alice = connect(a, "alice", room)
        connect(leaving, "bob", room)
        wait_for(alice.got("mls.joined"), what="bob joining")
        broadcaster(leaving).close()
        wait_for(alice.got("mls.left"), what="bob leaving with his node")
        assert cluster(a).nodes() == [cluster(a).node_id]

    def test_a_server_side_join_is_cluster_presence(self, make_hub: Make) -> None:
        a, b = make_hub(), make_hub()
        room = "presence-room.4"
        alice = connect(a, "alice", room)
        bob = connect(b, "bob")
        b.join(bob, room, info={"name": "Bobby"})  # server code: no authorizer
        (snapshot,) = bob.events("mls.presence")
        assert [m["user_id"] for m in snapshot["data"]["members"]] == ["alice", "bob"]
        wait_for(alice.got("mls.joined"), what="alice hearing that bob joined")
        assert alice.events("mls.joined")[0]["data"]["member"] == {
            "user_id": "bob",
            "info": {"name": "Bobby"},
        }
        assert [m.user_id for m in cluster(a).channel_members(room)] == ["alice", "bob"]
        # A client subscribe of a second tab on the other node: still one member.
        bob_tab = connect(a, "bob", room)
        b.leave(bob, room)
        a.disconnect(bob_tab)
        wait_for(alice.got("mls.left"), what="alice hearing that bob left")
        assert [e["data"]["member"]["user_id"] for e in alice.events("mls.left")] == ["bob"]
        assert len(alice.events("mls.joined")) == 1
        assert [m.user_id for m in cluster(b).channel_members(room)] == ["alice"]

    def test_hub_close_cancels_grace_and_the_others_hear_left_at_once(
        self, make_hub: Make, redis_server: RedisServer, prefix: str
    ) -> None:
        a = make_hub()
        scheduler = ManualScheduler()  # never advanced: a timer could only fire by mistake
        broadcaster = RedisBroadcaster.from_url(
            redis_server.url, prefix=prefix, backoff=FAST, ttl=60.0
        )
        authorizers = ChannelAuthorizers()
        authorizers.add("presence-room.{id}", lambda principal, id: dict(principal.info))
        b = Hub(
            EventRouter(),
            authorizers,
            broadcaster=broadcaster,
            scheduler=scheduler,
            options=HubOptions(heartbeat=None, presence_grace=30.0),
        )
        room = "presence-room.5"
        alice = connect(a, "alice", room)
        bob = connect(b, "bob", room)
        wait_for(alice.got("mls.joined"), what="bob joining")
        b.disconnect(bob)  # his grace period starts: still a member everywhere
        assert scheduler.pending == 1
        assert [m.user_id for m in cluster(a).channel_members(room)] == ["alice", "bob"]
        b.close()  # the server shut down
        assert scheduler.pending == 0
        assert broadcaster.state == "closed"
        # The node left the cluster now, not after its 60 s TTL, and took bob with it.
        wait_for(alice.got("mls.left"), what="bob leaving with his node")
        assert alice.events("mls.left")[0]["data"]["member"]["user_id"] == "bob"
        assert cluster(a).nodes() == [cluster(a).node_id]
        assert not b.connect(FakeConn("carol"))


class TestFaults:
    def test_redis_killed_and_restarted(
        self, make_hub: Make, private_redis: RedisServer, prefix: str
    ) -> None:
        url = private_redis.url
        a, b = make_hub(url, ttl=1.5), make_hub(url, ttl=1.5)
        room = "presence-room.9"
        alice = connect(a, "alice", "room:f", room)
        bob = connect(b, "bob", "room:f", room)
        a.emit("before", None, to="room:f")
        wait_for(bob.got("before"), what="the first broadcast")

        private_redis.kill()
        wait_for(lambda: broadcaster(a).state == "reconnecting", what="a noticing")
        wait_for(lambda: broadcaster(b).state == "reconnecting", what="b noticing")
        with pytest.raises(BroadcastUnavailable) as info:
            a.emit("during", None, to="room:f")
        assert info.value.delivered == 1  # local delivery goes on
        assert alice.events("during") and not bob.events("during")
        with pytest.raises(ClusterUnavailable):
            cluster(a).online_users()
        # Connections come and go during the outage; presence answers locally.
        carol = connect(b, "carol", room)
        assert [m["user_id"] for m in subscribe(b, carol, room)["members"]] == ["bob", "carol"]

        private_redis.start()  # empty: no persistence
        wait_for(lambda: broadcaster(a).state == "connected", what="a reconnecting")
        wait_for(lambda: broadcaster(b).state == "connected", what="b reconnecting")
        a.emit("after", None, to="room:f")
        wait_for(bob.got("after"), what="a broadcast after the restart")
        # The registries wrote their state back into the empty Redis.
        wait_for(lambda: cluster(a).healthy and cluster(b).healthy, what="the registries resyncing")
        assert cluster(a).online_users() == ["alice", "bob", "carol"]
        assert [m.user_id for m in cluster(a).channel_members(room)] == ["alice", "bob", "carol"]

        # carol joined during the outage: alice hears it once Redis is back, as an
        # mls.joined from b, or in the member list every hub re-sends after an outage.
        def alice_knows_carol() -> bool:
            return any(
                e["data"]["member"]["user_id"] == "carol" for e in alice.events("mls.joined")
            ) or any(
                "carol" in [m["user_id"] for m in e["data"]["members"]]
                for e in alice.events("mls.presence")
            )

        wait_for(alice_knows_carol, what="alice hearing about carol")

        def last_member_list() -> list[str]:
            return [m["user_id"] for m in alice.events("mls.presence")[-1]["data"]["members"]]

        wait_for(
            lambda: last_member_list() == ["alice", "bob", "carol"],
            what="the member list re-sent after the outage",
        )
        assert broadcaster(a).stats.disconnects == 1
        assert broadcaster(a).stats.connects == 2

    def test_unreachable_at_start_fails_clearly_when_told_to(self, prefix: str) -> None:
        url = f"redis://127.0.0.1:{free_port()}/0"
        broadcaster = RedisBroadcaster.from_url(
            url, prefix=prefix, startup="fail", startup_timeout=0.3, backoff=FAST
        )
        with pytest.raises(ConfigurationError, match=r"cannot reach Redis at redis://127\.0\.0\.1"):
            Hub(broadcaster=broadcaster)
        assert broadcaster.state == "closed"

    def test_unreachable_at_start_retries_by_default(
        self, redis_executable: str, tmp_path: Path, prefix: str
    ) -> None:
        server = RedisServer(redis_executable, tmp_path)
        broadcaster = RedisBroadcaster.from_url(
            server.url, prefix=prefix, backoff=FAST, startup_timeout=0.2
        )
        try:
            hub = Hub(broadcaster=broadcaster)
            conn = FakeConn("u")
            assert hub.connect(conn)
            assert broadcaster.state == RelayState.CONNECTING
            with pytest.raises(BroadcastUnavailable):
                hub.emit("early")
            assert conn.events("early")  # delivered locally all the same
            server.start()
            wait_for(lambda: broadcaster.state == "connected", what="the late connection")
            hub.emit("late")
            cluster_registry = broadcaster.cluster
            assert cluster_registry is not None
            wait_for(lambda: cluster_registry.healthy, what="the registry registering")
            assert cluster_registry.online_users() == ["u"]
        finally:
            broadcaster.close()
            server.kill()

    def test_an_unresponsive_redis_is_detected_by_the_keepalive(
        self, make_hub: Make, private_redis: RedisServer, prefix: str
    ) -> None:
        a = make_hub(private_redis.url, keepalive=0.2)
        b = make_hub(private_redis.url)
        x = connect(a, "u1", "room:k")
        y = connect(b, "u2", "room:k")
        # SIGSTOP: the TCP connections stay up but nothing answers, as in a partition. Stopped
        # until the relay noticed (a fixed pause could end before a relay starved of CPU on a
        # busy machine even looked), then resumed.
        assert private_redis.proc is not None
        private_redis.proc.send_signal(signal.SIGSTOP)
        try:
            wait_for(lambda: broadcaster(a).state == "reconnecting", what="the keepalive failing")
        finally:
            private_redis.proc.send_signal(signal.SIGCONT)
        wait_for(lambda: broadcaster(a).state == "connected", what="the relay coming back")
        b.emit("after-pause", None, to="room:k")
        wait_for(x.got("after-pause"), what="a broadcast after the pause")
        assert y.events("after-pause")

    def test_a_node_purged_while_alive_registers_again_and_is_announced(
        self, make_hub: Make, redis_server: RedisServer, prefix: str
    ) -> None:
        a = make_hub(ttl=30)
        b = make_hub(ttl=30)  # long: its own heartbeat does not run during the test
        room = "presence-room.7"
        alice = connect(a, "alice", room)
        connect(b, "bob", room)
        wait_for(alice.got("mls.joined"), what="bob joining")
        # b misses its heartbeats (a long pause): its key expires, a purges it.
        admin = redis_server.client()
        admin.delete(f"{prefix}:node:{cluster(b).node_id}")
        assert cluster(a).purge_dead() == 1
        wait_for(alice.got("mls.left"), what="bob purged with his node")
        # b wakes up, finds its key gone, registers again and announces bob again.
        cluster(b).wake()
        wait_for(alice.got("mls.joined", 2), what="bob announced again")
        assert alice.events("mls.joined")[-1]["data"]["member"]["user_id"] == "bob"
        assert cluster(a).online_users() == ["alice", "bob"]
        assert not admin.exists(f"{prefix}:tomb:{cluster(b).node_id}")
        admin.close()

    def test_a_dispatch_hook_runs_relay_deliveries(
        self, make_hub: Make, redis_server: RedisServer, prefix: str
    ) -> None:
        queued: list[Callable[[], None]] = []
        a = make_hub(dispatch=queued.append)
        conn = connect(a, "u", "room:d")
        with Emitter.from_url(redis_server.url, prefix=prefix) as emitter:
            emitter.emit("queued", None, to="room:d")
        wait_for(lambda: queued, what="the delivery handed to dispatch")
        assert conn.events("queued") == []
        queued.pop()()
        assert len(conn.events("queued")) == 1

    def test_invalid_urls(self) -> None:
        with pytest.raises(ConfigurationError, match="not a Redis URL"):
            RedisBroadcaster.from_url("http://example.com")
        with pytest.raises(ConfigurationError, match="not a Redis URL"):
            Emitter.from_url("amqp://guest:secret@x")


class TestEmitter:
    def test_reaches_every_hub(
        self, make_hub: Make, redis_server: RedisServer, prefix: str
    ) -> None:
        a, b = make_hub(), make_hub()
        x = connect(a, "u1", "room:e")
        y = connect(b, "u2", "room:e")
        z = connect(b, "u3")
        with Emitter.from_url(redis_server.url, prefix=prefix) as emitter:
            assert emitter.emit("news", {"n": 1}, to="room:e") == 2
            assert emitter.emit("all", None, skip=y.id) == 2
        marker(redis_server.url, prefix, x, y, z)
        assert [len(c.events("news")) for c in (x, y, z)] == [1, 1, 0]
        assert [len(c.events("all")) for c in (x, y, z)] == [1, 0, 1]

    def test_raises_when_redis_is_unreachable(self, prefix: str) -> None:
        emitter = Emitter.from_url(f"redis://:hunter2@127.0.0.1:{free_port()}/0", prefix=prefix)
        with pytest.raises(BroadcastUnavailable) as info:
            emitter.emit("x")
        assert "hunter2" not in str(info.value)
        assert info.value.delivered is None
        emitter.close()

    def test_bytes_from_another_process_reach_msgpack_clients(
        self, make_hub: Make, redis_server: RedisServer, prefix: str, processes: Processes
    ) -> None:
        """An Emitter in a separate process (a job) sends bytes: a msgpack relay message."""
        a = make_hub()
        packed, plain = FakeConn("u1", formatter=MSGPACK), FakeConn("u2")
        for conn in (packed, plain):
            assert a.connect(conn)
            subscribe(a, conn, "room:job")
        code = (
            "import sys\n"
            "from mlsockets import Emitter\n"
            "with Emitter.from_url(sys.argv[1], prefix=sys.argv[2]) as emitter:\n"
            "    print(emitter.emit('report', {'pdf': b'%PDF\\x00'}, to='room:job'))\n"
        )
        job = processes.python("-c", code, redis_server.url, prefix)
        out, _ = job.communicate(timeout=60)
        assert job.returncode == 0, processes.stderr(job)
        assert out.strip() == "1"  # one node has members of the channel
        marker(redis_server.url, prefix, packed, plain, to="room:job")
        assert packed.events("report") == [
            {"event": "report", "channel": "room:job", "data": {"pdf": b"%PDF\x00"}}
        ]
        assert plain.events("report") == []  # JSON cannot carry bytes (its node logs it)
