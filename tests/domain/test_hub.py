"""The hub with in-memory fake connections: welcome, events and acks, every error reply
(each followed by a check that the connection still works), abuse limits, connect and
disconnect hooks, channels, authorizers, presence (with a manual scheduler for the grace
period), emits to every kind of target, encode-once, and server-side rooms."""

from __future__ import annotations

import itertools
import logging
import math
import subprocess
import sys
from collections.abc import Mapping
from typing import Any

import marshmallow
import pytest
from marshmallow import fields

from mlsockets.auth import ANONYMOUS, Principal
from mlsockets.broadcast.base import Channel, ConnectionTarget, Everyone, Tag, Target, User
from mlsockets.broadcast.local import LocalBroadcaster
from mlsockets.channels.authorizers import ChannelAuthorizers
from mlsockets.channels.names import InvalidChannel
from mlsockets.events import EventRouter
from mlsockets.exceptions import Forbidden, InvalidState, Unauthorized, ValidationError
from mlsockets.formatters.base import JSON, MSGPACK, Formatter
from mlsockets.hub import Connection, Hub, HubOptions, Refusal
from mlsockets.scheduling import ManualScheduler
from mlsockets.typing import ConnectionId, Message, UserId

SECRET = "db password is hunter2"
ROOM = "presence-room.1"

_ids = itertools.count(1)


class FakeConnection:
    """A hub connection in memory: records what the hub sends and how it closes it."""

    def __init__(self, principal: Principal = ANONYMOUS, formatter: Formatter = JSON) -> None:
        self.id = ConnectionId(f"conn{next(_ids)}")
        self.principal = principal
        self.formatter = formatter
        self.raw: list[Message] = []  # the encoded messages, as the hub handed them over
        self.closes: list[tuple[int, str]] = []

    def send(self, message: Message) -> None:
        self.raw.append(message)

    def close(self, code: int, reason: str) -> None:
        self.closes.append((code, reason))

    def take(self) -> list[Any]:
        """Decode and forget everything sent so far."""
        decoded = [self.formatter.decode(message) for message in self.raw]
        self.raw.clear()
        return decoded

    def __repr__(self) -> str:
        return f"<FakeConnection {self.id} {self.principal.user_id}>"


def user(user_id: str, tags: frozenset[str] = frozenset(), **info: object) -> Principal:
    return Principal(UserId(user_id), info, tags)


class MessageSchema(marshmallow.Schema):
    text = fields.Str(required=True, validate=marshmallow.validate.Length(max=5))
    room = fields.Str(load_default="lobby")


class Recorder:
    """Handlers and hooks that remember how they were called."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any, Any]] = []

    def handler(self, name: str, result: object = None) -> Any:
        def handle(conn: Any, data: Any) -> object:
            self.calls.append((name, conn, data))
            return result

        return handle


def raising(exc: Exception) -> Any:
    def handler(conn: Any, data: Any) -> object:
        raise exc

    return handler


@pytest.fixture
def calls() -> Recorder:
    return Recorder()


@pytest.fixture
def router(calls: Recorder) -> EventRouter:
    router = EventRouter()
    router.add("echo", lambda conn, data: data)
    router.add("note", calls.handler("note", "ignored"))
    router.add("chat.send", lambda conn, data: {"ok": True, **data}, MessageSchema)
    router.add("secret", raising(RuntimeError(SECRET)))
    router.add("login", raising(Unauthorized("log in first")))
    router.add("admin", raising(Forbidden("admins only")))
    router.add("check", raising(ValidationError("bad value", {"x": ["too big"]})))
    router.add("weird", lambda conn, data: object())
    router.add("nan", lambda conn, data: math.nan)
    return router


@pytest.fixture
def authorizers() -> ChannelAuthorizers:
    return ChannelAuthorizers()


@pytest.fixture
def scheduler() -> ManualScheduler:
    return ManualScheduler()


class MakeHub:
    def __init__(
        self, router: EventRouter, authorizers: ChannelAuthorizers, scheduler: ManualScheduler
    ) -> None:
        self.router = router
        self.authorizers = authorizers
        self.scheduler = scheduler

    def __call__(self, **options: Any) -> Hub:
        return Hub(
            self.router,
            self.authorizers,
            scheduler=self.scheduler,
            clock=self.scheduler.clock,
            options=HubOptions(**options),
        )


@pytest.fixture
def make(
    router: EventRouter, authorizers: ChannelAuthorizers, scheduler: ManualScheduler
) -> MakeHub:
    return MakeHub(router, authorizers, scheduler)


@pytest.fixture
def hub(make: MakeHub) -> Hub:
    return make()


def connect(
    hub: Hub, principal: Principal = ANONYMOUS, formatter: Formatter = JSON
) -> FakeConnection:
    """A connection the hub accepted, its welcome already read."""
    conn = FakeConnection(principal, formatter)
    assert hub.connect(conn)
    (welcome,) = conn.take()
    assert welcome["event"] == "mls.welcome"
    return conn


@pytest.fixture
def conn(hub: Hub) -> FakeConnection:
    return connect(hub)


def send(
    hub: Hub, conn: FakeConnection, event: str, data: object = None, msg_id: int | None = None
) -> list[Any]:
    """Send one envelope from ``conn``; return what the hub sent back to it."""
    envelope: dict[str, object] = {"event": event, "data": data}
    if msg_id is not None:
        envelope["id"] = msg_id
    return send_raw(hub, conn, conn.formatter.encode(envelope))


def send_raw(hub: Hub, conn: FakeConnection, message: Message) -> list[Any]:
    hub.receive(conn, message)
    return conn.take()


def subscribe(hub: Hub, conn: FakeConnection, channel: str, msg_id: int = 1) -> list[Any]:
    return send(hub, conn, "mls.subscribe", {"channel": channel}, msg_id)


def error(msg_id: int, code: str, message: str, **extra: object) -> dict[str, object]:
    return {"reply": msg_id, "error": {"code": code, "message": message, **extra}}


def mls_error(code: str, message: str, **extra: object) -> dict[str, object]:
    return {"event": "mls.error", "data": {"code": code, "message": message, **extra}}


def assert_works(hub: Hub, conn: FakeConnection) -> None:
    """The connection still gets correct replies, and was not closed."""
    assert send(hub, conn, "echo", {"still": "here"}, 4242) == [
        {"reply": 4242, "data": {"still": "here"}}
    ]
    assert conn.closes == []


# -- connecting ------------------------------------------------------------------------------


class TestWelcome:
    def test_anonymous(self, hub: Hub) -> None:
        conn = FakeConnection()
        assert hub.connect(conn)
        assert conn.take() == [
            {
                "event": "mls.welcome",
                "data": {"connection_id": conn.id, "heartbeat": 20.0, "user_id": None},
            }
        ]
        assert len(hub) == 1
        assert hub.registry.get(conn.id) is conn

    def test_user_and_heartbeat_option(self, make: MakeHub) -> None:
        hub = make(heartbeat=None)
        conn = FakeConnection(user("7"))
        assert hub.connect(conn)
        (welcome,) = conn.take()
        assert welcome["data"] == {"connection_id": conn.id, "heartbeat": None, "user_id": "7"}

    def test_msgpack_welcome_is_binary(self, hub: Hub) -> None:
        conn = FakeConnection(formatter=MSGPACK)
        assert hub.connect(conn)
        assert isinstance(conn.raw[0], bytes)
        assert conn.take()[0]["data"]["connection_id"] == conn.id

    def test_connect_hooks_run_before_the_welcome(self, router: EventRouter, hub: Hub) -> None:
        seen: list[tuple[Any, int]] = []
        router.on_connect(lambda c: seen.append((c, len(c.raw))))
        conn = connect(hub)
        assert seen == [(conn, 0)]


class TestConnectionLimit:
    def test_max_connections_per_user(self, make: MakeHub, router: EventRouter) -> None:
        hub = make(max_connections_per_user=2)
        hooks: list[Any] = []
        router.on_connect(hooks.append)
        first, second = connect(hub, user("7")), connect(hub, user("7"))
        third = FakeConnection(user("7"))
        assert not hub.connect(third)
        assert hub.last_refusal == Refusal(1008, "too many connections")
        assert third.raw == [] and third.closes == []  # the adapter closes, with last_refusal
        assert hooks == [first, second]  # the refused one never reached the hooks
        assert len(hub) == 2
        # Another user, and anonymous connections, are not counted against user 7.
        connect(hub, user("8"))
        connect(hub)
        connect(hub)
        # One leaves: there is room again.
        hub.disconnect(first)
        again = connect(hub, user("7"))
        assert_works(hub, again)
        assert_works(hub, second)

    def test_no_limit_by_default(self, hub: Hub) -> None:
        for _ in range(5):
            connect(hub, user("7"))
        assert hub.registry.count_user(UserId("7")) == 5


class TestConnectHooks:
    @pytest.mark.parametrize(
        ("exc", "reason"),
        [(Unauthorized("log in first"), "log in first"), (Forbidden("banned"), "banned")],
    )
    def test_refusal(
        self, router: EventRouter, hub: Hub, calls: Recorder, exc: Exception, reason: str
    ) -> None:
        def hook(conn: Any) -> None:
            if conn.principal.user_id == "bad":
                raise exc

        router.on_connect(hook)
        router.on_disconnect(lambda c: calls.calls.append(("disconnect", c, None)))
        bad = FakeConnection(user("bad"))
        assert not hub.connect(bad)
        assert hub.last_refusal == Refusal(1008, reason)
        assert bad.raw == []
        assert len(hub) == 0 and hub.registry.get(bad.id) is None
        # The adapter reports the close: the refused connection is unknown, no hooks run.
        hub.receive(bad, JSON.encode({"event": "echo", "id": 1}))
        hub.disconnect(bad)
        assert bad.raw == [] and calls.calls == []
        # The hub and the other connections are fine.
        good = connect(hub, user("good"))
        assert_works(hub, good)

    def test_crashing_hook(
        self, router: EventRouter, hub: Hub, caplog: pytest.LogCaptureFixture
    ) -> None:
        def hook(conn: Any) -> None:
            if conn.principal.user_id == "crash":
                raise RuntimeError(SECRET)

        router.on_connect(hook)
        crash = FakeConnection(user("crash"))
        with caplog.at_level(logging.ERROR, logger="mlsockets.events"):
            assert not hub.connect(crash)
        assert hub.last_refusal == Refusal(1011, "internal error")
        assert crash.raw == [] and len(hub) == 0
        (record,) = caplog.records
        assert record.levelno == logging.ERROR and record.exc_info is not None
        assert SECRET in caplog.text  # in the log, never on the wire
        assert_works(hub, connect(hub, user("fine")))

    def test_hook_may_join_rooms(self, router: EventRouter, hub: Hub) -> None:
        """A connect hook puts the connection in its rooms (``hub.join``) before the welcome."""
        router.on_connect(lambda c: hub.join(c, f"user.{c.principal.user_id}"))
        conn = connect(hub, user("7"))
        assert hub.emit("hello", 1, to="user.7") == 1
        assert conn.take() == [{"event": "hello", "channel": "user.7", "data": 1}]

    def test_hook_emits_do_not_precede_the_welcome(self, router: EventRouter, hub: Hub) -> None:
        def hook(conn: Any) -> None:
            hub.join(conn, "lobby")
            hub.emit("early", None, to="lobby")
            hub.emit("early", None, to=ConnectionTarget(conn.id))

        router.on_connect(hook)
        conn = FakeConnection()
        assert hub.connect(conn)
        assert [m["event"] for m in conn.take()] == ["mls.welcome"]

    def test_refused_after_joining_leaves_no_trace(self, router: EventRouter) -> None:
        broadcaster = RecordingBroadcaster()
        hub = Hub(router, broadcaster=broadcaster)

        def hook(conn: Any) -> None:
            hub.join(conn, "lobby")
            raise Forbidden("no")

        router.on_connect(hook)
        conn = FakeConnection()
        assert not hub.connect(conn)
        assert hub.membership.channels_of(conn.id) == frozenset()
        assert len(hub.membership) == 0
        assert broadcaster.changes == [("added", "lobby"), ("removed", "lobby")]

    def test_refused_connection_leaves_shared_rooms(self, router: EventRouter) -> None:
        broadcaster = RecordingBroadcaster()
        hub = Hub(router, broadcaster=broadcaster)
        stays = connect(hub)
        hub.join(stays, "lobby")

        def hook(conn: Any) -> None:
            hub.join(conn, "lobby")
            hub.join(conn, "hall")
            raise Unauthorized("no")

        router.on_connect(hook)
        assert not hub.connect(FakeConnection())
        assert hub.membership.members("lobby") == {stays.id}  # type: ignore[arg-type]
        assert broadcaster.changes == [("added", "lobby"), ("added", "hall"), ("removed", "hall")]

    def test_hook_may_leave_rooms(self, router: EventRouter) -> None:
        broadcaster = RecordingBroadcaster()
        hub = Hub(router, broadcaster=broadcaster)
        stays = connect(hub)
        hub.join(stays, "shared")

        def hook(conn: Any) -> None:
            for room in ("mine", "shared"):
                hub.join(conn, room)
                hub.leave(conn, room)
            hub.join(conn, "kept")

        router.on_connect(hook)
        conn = connect(hub)
        assert hub.membership.channels_of(conn.id) == {"kept"}
        assert hub.membership.members("shared") == {stays.id}  # type: ignore[arg-type]
        assert broadcaster.changes == [
            ("added", "shared"),
            ("added", "mine"),
            ("removed", "mine"),
            ("added", "kept"),
        ]


class TestDisconnect:
    def test_hooks_run_once(self, router: EventRouter, hub: Hub) -> None:
        gone: list[Any] = []
        router.on_disconnect(gone.append)
        conn = connect(hub)
        other = connect(hub)
        hub.disconnect(conn)
        hub.disconnect(conn)  # the transport may report twice: harmless
        assert gone == [conn]
        assert len(hub) == 1 and hub.registry.get(conn.id) is None
        # Messages that arrive after the disconnect are dropped.
        assert send(hub, conn, "echo", 1, 1) == []
        assert_works(hub, other)

    def test_crashing_disconnect_hook_is_logged(
        self, router: EventRouter, hub: Hub, caplog: pytest.LogCaptureFixture
    ) -> None:
        def boom(conn: Any) -> None:
            raise RuntimeError("oops")

        router.on_disconnect(boom)
        conn = connect(hub)
        with caplog.at_level(logging.ERROR, logger="mlsockets.events"):
            hub.disconnect(conn)
        assert "disconnect hook" in caplog.text
        assert len(hub) == 0

    def test_disconnect_leaves_channels(self, hub: Hub) -> None:
        conn, other = connect(hub), connect(hub)
        subscribe(hub, conn, "news")
        hub.join(conn, "room:1")
        hub.disconnect(conn)
        assert hub.membership.channels_of(conn.id) == frozenset()
        assert hub.emit("x", to="news") == 0
        assert hub.emit("x", to="room:1") == 0
        assert hub.emit("x") == 1
        assert other.take() == [{"event": "x", "data": None}]


# -- events ----------------------------------------------------------------------------------


class TestEvents:
    def test_ack_carries_the_return_value(self, hub: Hub, conn: FakeConnection) -> None:
        assert send(hub, conn, "echo", {"a": [1, 2]}, 7) == [{"reply": 7, "data": {"a": [1, 2]}}]
        assert send(hub, conn, "chat.send", {"text": "hi"}, 0) == [
            {"reply": 0, "data": {"ok": True, "text": "hi", "room": "lobby"}}
        ]

    def test_none_is_acked_as_null(
        self, router: EventRouter, hub: Hub, conn: FakeConnection
    ) -> None:
        router.add("nothing", lambda c, d: None)
        assert send(hub, conn, "nothing", None, 2**53 - 1) == [{"reply": 2**53 - 1, "data": None}]

    def test_without_id_no_reply(self, hub: Hub, conn: FakeConnection, calls: Recorder) -> None:
        assert send(hub, conn, "note", {"n": 1}) == []
        assert calls.calls == [("note", conn, {"n": 1})]
        # A return value nobody asked for is not even encoded.
        assert send(hub, conn, "weird") == []
        assert_works(hub, conn)

    def test_handler_sees_the_connection_and_validated_data(
        self, router: EventRouter, hub: Hub
    ) -> None:
        seen: list[Any] = []

        def whoami(conn: Any, data: Any) -> object:
            seen.append((conn, data))
            return conn.principal.user_id

        router.add("whoami", whoami)
        conn = connect(hub, user("7"))
        assert send(hub, conn, "whoami", [1], 1) == [{"reply": 1, "data": "7"}]
        assert seen == [(conn, [1])]

    def test_msgpack(self, hub: Hub) -> None:
        conn = connect(hub, formatter=MSGPACK)
        hub.receive(conn, MSGPACK.encode({"event": "echo", "data": b"\x00\xff", "id": 3}))
        assert isinstance(conn.raw[0], bytes)
        assert conn.take() == [{"reply": 3, "data": b"\x00\xff"}]


class TestErrorReplies:
    """Each bad input gets its error, and the same connection keeps working afterwards."""

    @pytest.mark.parametrize(
        ("message", "reason"),
        [
            ("{not json", "invalid JSON"),
            ("NaN", "invalid JSON"),
            (b'{"event": "echo"}', "expects text messages"),
            ("[1, 2]", "an envelope must be an object, not an array"),
            ('"echo"', "an envelope must be an object, not a string"),
            ("{}", "missing 'event'"),
            ('{"event": ""}', "'event' must not be empty"),
            ('{"event": 5}', "'event' must be a string, not a number"),
            ('{"event": "' + "e" * 129 + '"}', "longer than 128"),
        ],
    )
    def test_malformed_without_id(
        self, hub: Hub, conn: FakeConnection, message: Message, reason: str
    ) -> None:
        (reply,) = send_raw(hub, conn, message)
        assert reply["event"] == "mls.error"
        assert reply["data"]["code"] == "bad_envelope"
        assert reason in reply["data"]["message"]
        assert "event" not in reply["data"]
        assert_works(hub, conn)

    def test_malformed_with_a_valid_id_is_a_reply(self, hub: Hub, conn: FakeConnection) -> None:
        (reply,) = send_raw(hub, conn, '{"event": "echo", "id": 5, "extra": 1}')
        assert reply == error(
            5, "bad_envelope", "unexpected keys: 'extra' (allowed: event, data, id)"
        )
        (reply,) = send_raw(hub, conn, '{"id": 6}')
        assert reply == error(6, "bad_envelope", "missing 'event'")
        assert_works(hub, conn)

    def test_malformed_with_a_valid_event_names_it(self, hub: Hub, conn: FakeConnection) -> None:
        (reply,) = send_raw(hub, conn, '{"event": "chat.send", "id": -1}')
        assert reply["event"] == "mls.error"
        assert reply["data"]["event"] == "chat.send"
        assert reply["data"]["code"] == "bad_envelope"
        assert "'id' must be an integer" in reply["data"]["message"]
        (reply,) = send_raw(hub, conn, '{"event": "chat.send", "id": true}')
        assert reply["data"]["event"] == "chat.send"
        assert_works(hub, conn)

    def test_msgpack_malformed(self, hub: Hub) -> None:
        conn = connect(hub, formatter=MSGPACK)
        (reply,) = send_raw(hub, conn, '{"event": "echo"}')
        assert reply["data"]["code"] == "bad_envelope"
        assert "expects binary messages" in reply["data"]["message"]
        (reply,) = send_raw(hub, conn, b"\xc1")
        assert reply["data"]["code"] == "bad_envelope"
        assert_works(hub, conn)

    def test_unknown_event(self, hub: Hub, conn: FakeConnection) -> None:
        assert send(hub, conn, "nope", None, 1) == [
            error(1, "unknown_event", "unknown event 'nope'")
        ]
        assert send(hub, conn, "nope") == [
            mls_error("unknown_event", "unknown event 'nope'", event="nope")
        ]
        assert_works(hub, conn)

    @pytest.mark.parametrize("event", ["mls.custom", "mls.welcome", "mls.pong", "mls.error"])
    def test_unknown_system_event(self, hub: Hub, conn: FakeConnection, event: str) -> None:
        assert send(hub, conn, event, None, 1) == [
            error(1, "unknown_event", f"unknown event {event!r}")
        ]
        assert send(hub, conn, event) == [
            mls_error("unknown_event", f"unknown event {event!r}", event=event)
        ]
        assert_works(hub, conn)

    def test_invalid_data_has_marshmallow_fields(self, hub: Hub, conn: FakeConnection) -> None:
        assert send(hub, conn, "chat.send", {"text": "too long", "x": 1}, 2) == [
            error(
                2,
                "invalid",
                "invalid data",
                fields={"text": ["Longer than maximum length 5."], "x": ["Unknown field."]},
            )
        ]
        assert send(hub, conn, "chat.send", {}) == [
            mls_error(
                "invalid",
                "invalid data",
                fields={"text": ["Missing data for required field."]},
                event="chat.send",
            )
        ]
        (reply,) = send(hub, conn, "chat.send", "not an object", 3)
        assert reply["error"]["code"] == "invalid" and reply["error"]["fields"]
        assert_works(hub, conn)

    def test_validation_error_from_a_handler(self, hub: Hub, conn: FakeConnection) -> None:
        assert send(hub, conn, "check", None, 1) == [
            error(1, "invalid", "bad value", fields={"x": ["too big"]})
        ]
        assert_works(hub, conn)

    def test_unauthorized_and_forbidden(self, hub: Hub, conn: FakeConnection) -> None:
        assert send(hub, conn, "login", None, 1) == [error(1, "unauthorized", "log in first")]
        assert send(hub, conn, "admin", None, 2) == [error(2, "forbidden", "admins only")]
        assert send(hub, conn, "admin") == [mls_error("forbidden", "admins only", event="admin")]
        assert_works(hub, conn)

    def test_handler_exception_is_internal_and_logged(
        self, hub: Hub, conn: FakeConnection, caplog: pytest.LogCaptureFixture
    ) -> None:
        with caplog.at_level(logging.ERROR, logger="mlsockets.events"):
            replies = send(hub, conn, "secret", None, 1) + send(hub, conn, "secret")
        assert replies == [
            error(1, "internal", "internal error"),
            mls_error("internal", "internal error", event="secret"),
        ]
        assert SECRET not in repr(replies)
        assert len(caplog.records) == 2
        for record in caplog.records:
            assert record.name == "mlsockets.events" and record.levelno == logging.ERROR
            assert record.exc_info is not None and "'secret'" in record.getMessage()
        assert "Traceback" in caplog.text and SECRET in caplog.text
        assert_works(hub, conn)

    @pytest.mark.parametrize("event", ["weird", "nan"])
    def test_unencodable_return_value(
        self, hub: Hub, conn: FakeConnection, caplog: pytest.LogCaptureFixture, event: str
    ) -> None:
        with caplog.at_level(logging.ERROR, logger="mlsockets.events"):
            assert send(hub, conn, event, None, 9) == [error(9, "internal", "internal error")]
        (record,) = caplog.records
        assert record.exc_info is not None and repr(event) in record.getMessage()
        assert_works(hub, conn)

    def test_unencodable_for_msgpack(self, router: EventRouter, hub: Hub) -> None:
        router.add("huge", lambda c, d: 2**70)
        conn = connect(hub, formatter=MSGPACK)
        assert send(hub, conn, "huge", None, 1) == [error(1, "internal", "internal error")]
        assert_works(hub, conn)


class TestMalformedBudget:
    def test_close_after_max_bad_envelopes(
        self, make: MakeHub, calls: Recorder, caplog: pytest.LogCaptureFixture
    ) -> None:
        hub = make(max_bad_envelopes=3)
        conn, other = connect(hub), connect(hub)
        for _ in range(3):
            (reply,) = send_raw(hub, conn, "garbage")
            assert reply["data"]["code"] == "bad_envelope"
        assert conn.closes == []
        with caplog.at_level(logging.WARNING, logger="mlsockets.hub"):
            assert send_raw(hub, conn, "garbage") == []
        assert conn.closes == [(1008, "too many malformed messages")]
        assert "too many malformed messages" in caplog.text
        # Once the hub closed it, the connection's later messages are not handled.
        assert send(hub, conn, "note", 1, 1) == []
        assert send_raw(hub, conn, "garbage") == []
        assert calls.calls == []
        assert conn.closes == [(1008, "too many malformed messages")]
        # Other connections never noticed.
        assert_works(hub, other)
        hub.disconnect(conn)
        assert len(hub) == 1

    def test_window_forgets_old_mistakes(self, make: MakeHub, scheduler: ManualScheduler) -> None:
        hub = make(max_bad_envelopes=2, bad_window=10.0)
        conn = connect(hub)
        for _ in range(5):
            send_raw(hub, conn, "garbage")
            send_raw(hub, conn, "garbage")
            scheduler.advance(10.0)
        assert conn.closes == []
        assert_works(hub, conn)

    def test_every_kind_of_bad_envelope_counts(self, make: MakeHub) -> None:
        hub = make(max_bad_envelopes=2)
        conn = connect(hub)
        send_raw(hub, conn, b"binary")
        send_raw(hub, conn, '{"event": "echo", "id": 1, "x": 0}')
        assert conn.closes == []
        send_raw(hub, conn, "[]")
        assert conn.closes == [(1008, "too many malformed messages")]

    def test_errors_of_valid_envelopes_do_not_count(self, make: MakeHub) -> None:
        hub = make(max_bad_envelopes=1)
        conn = connect(hub)
        for msg_id in range(5):
            send(hub, conn, "nope", None, msg_id)
            send(hub, conn, "chat.send", {}, msg_id)
            send(hub, conn, "mls.subscribe", {"channel": ""}, msg_id)
        assert_works(hub, conn)


class TestRateLimit:
    def test_rate_limited_then_closed(
        self, make: MakeHub, scheduler: ManualScheduler, calls: Recorder
    ) -> None:
        hub = make(rate=1.0, burst=2, rate_strikes=2)
        conn, other = connect(hub), connect(hub)
        assert send(hub, conn, "echo", 1, 1) == [{"reply": 1, "data": 1}]
        assert send(hub, conn, "echo", 2, 2) == [{"reply": 2, "data": 2}]
        # The bucket is empty: the next messages are not handled, and answered as errors.
        assert send(hub, conn, "echo", 3, 3) == [error(3, "rate_limited", "too many messages")]
        assert send(hub, conn, "note", 4) == [
            mls_error("rate_limited", "too many messages", event="note")
        ]
        assert calls.calls == []
        assert conn.closes == []
        # The strikes are used up: closed with 1008, no reply.
        assert send(hub, conn, "echo", 5, 5) == []
        assert conn.closes == [(1008, "rate limit exceeded")]
        assert send(hub, conn, "note", 6) == []
        scheduler.advance(10.0)  # even with tokens again, a closed connection stays ignored
        assert send(hub, conn, "note", 7) == []
        assert calls.calls == []
        assert_works(hub, other)

    def test_tokens_come_back(self, make: MakeHub, scheduler: ManualScheduler) -> None:
        hub = make(rate=2.0, burst=1, rate_strikes=1)
        conn = connect(hub)
        send(hub, conn, "echo", 0, 0)
        (reply,) = send(hub, conn, "echo", 0, 1)
        assert reply["error"]["code"] == "rate_limited"
        scheduler.advance(0.5)
        assert_works(hub, conn)

    def test_strikes_count_only_consecutive_refusals(
        self, make: MakeHub, scheduler: ManualScheduler
    ) -> None:
        hub = make(rate=1.0, burst=1, rate_strikes=1)
        conn = connect(hub)
        for round_ in range(3):  # one refusal per burst, bursts apart: never closed
            assert send(hub, conn, "echo", round_, 0) == [{"reply": 0, "data": round_}]
            (reply,) = send(hub, conn, "echo", round_, 1)
            assert reply["error"]["code"] == "rate_limited"
            scheduler.advance(1.0)
        assert conn.closes == []
        assert_works(hub, conn)

    def test_rate_limited_garbage(self, make: MakeHub) -> None:
        hub = make(rate=1.0, burst=1, rate_strikes=5)
        conn = connect(hub)
        send(hub, conn, "echo", 0, 0)
        assert send_raw(hub, conn, "garbage") == [mls_error("rate_limited", "too many messages")]
        assert send_raw(hub, conn, '{"event": "x", "id": 3, "y": 0}') == [
            error(3, "rate_limited", "too many messages")
        ]


# -- system events and channels ---------------------------------------------------------------


class TestPing:
    def test_pong_with_the_same_data(self, hub: Hub, conn: FakeConnection) -> None:
        assert send(hub, conn, "mls.ping", {"t": 1.5}) == [
            {"event": "mls.pong", "data": {"t": 1.5}}
        ]
        assert send(hub, conn, "mls.ping") == [{"event": "mls.pong", "data": None}]
        assert_works(hub, conn)

    def test_msgpack(self, hub: Hub) -> None:
        conn = connect(hub, formatter=MSGPACK)
        assert send(hub, conn, "mls.ping", b"\x01") == [{"event": "mls.pong", "data": b"\x01"}]


class TestSubscribe:
    def test_public_channel(self, hub: Hub, conn: FakeConnection) -> None:
        assert subscribe(hub, conn, "room:lobby", 3) == [
            {"reply": 3, "data": {"channel": "room:lobby"}}
        ]
        assert hub.emit("chat.message", {"text": "hi"}, to="room:lobby") == 1
        assert conn.take() == [
            {"event": "chat.message", "channel": "room:lobby", "data": {"text": "hi"}}
        ]
        assert send(hub, conn, "mls.unsubscribe", {"channel": "room:lobby"}, 4) == [
            {"reply": 4, "data": {"channel": "room:lobby"}}
        ]
        assert hub.emit("chat.message", {"text": "hi"}, to="room:lobby") == 0
        assert conn.take() == []

    def test_without_id_no_ack(self, hub: Hub, conn: FakeConnection) -> None:
        assert send(hub, conn, "mls.subscribe", {"channel": "news"}) == []
        assert hub.membership.channels_of(conn.id) == {"news"}
        assert send(hub, conn, "mls.unsubscribe", {"channel": "news"}) == []
        assert hub.membership.channels_of(conn.id) == frozenset()

    def test_subscribing_twice_is_harmless(self, hub: Hub, conn: FakeConnection) -> None:
        subscribe(hub, conn, "news", 1)
        assert subscribe(hub, conn, "news", 2) == [{"reply": 2, "data": {"channel": "news"}}]
        assert hub.emit("x", to="news") == 1
        assert len(conn.take()) == 1

    @pytest.mark.parametrize(
        ("data", "reason"),
        [
            ({"channel": ""}, "channel name is empty"),
            ({"channel": "bad name"}, "channel name contains an invalid character: ' '"),
            ({"channel": "x" * 201}, "channel name is longer than 200 characters"),
            ({"channel": "private-"}, "is a bare prefix"),
            ({"channel": "caf\u00e9"}, "invalid character"),
            ({"channel": 42}, 'expected {"channel": "<name>"}'),
            ({}, 'expected {"channel": "<name>"}'),
            ("news", 'expected {"channel": "<name>"}'),
            (None, 'expected {"channel": "<name>"}'),
        ],
    )
    @pytest.mark.parametrize("event", ["mls.subscribe", "mls.unsubscribe"])
    def test_invalid_channel(
        self, hub: Hub, conn: FakeConnection, event: str, data: object, reason: str
    ) -> None:
        (reply,) = send(hub, conn, event, data, 8)
        assert reply["reply"] == 8
        assert reply["error"]["code"] == "invalid_channel"
        assert reason in reply["error"]["message"]
        (reply,) = send(hub, conn, event, data)
        assert reply["data"]["code"] == "invalid_channel" and reply["data"]["event"] == event
        assert hub.membership.channels_of(conn.id) == frozenset()
        assert_works(hub, conn)

    def test_not_subscribed(self, hub: Hub, conn: FakeConnection) -> None:
        assert send(hub, conn, "mls.unsubscribe", {"channel": "news"}, 1) == [
            error(1, "not_subscribed", "not subscribed to news")
        ]
        subscribe(hub, conn, "news")
        send(hub, conn, "mls.unsubscribe", {"channel": "news"}, 2)
        assert send(hub, conn, "mls.unsubscribe", {"channel": "news"}) == [
            mls_error("not_subscribed", "not subscribed to news", event="mls.unsubscribe")
        ]
        assert_works(hub, conn)

    def test_too_many_subscriptions(self, make: MakeHub) -> None:
        hub = make(max_channels_per_connection=2)
        conn = connect(hub)
        subscribe(hub, conn, "a")
        hub.join(conn, "b")  # server-side rooms count too
        assert subscribe(hub, conn, "c", 5) == [error(5, "forbidden", "too many subscriptions")]
        assert subscribe(hub, conn, "a", 6) == [{"reply": 6, "data": {"channel": "a"}}]
        send(hub, conn, "mls.unsubscribe", {"channel": "a"}, 7)
        assert subscribe(hub, conn, "c", 8) == [{"reply": 8, "data": {"channel": "c"}}]
        assert_works(hub, conn)

    def test_broadcaster_hears_first_and_last_member(self, router: EventRouter) -> None:
        broadcaster = RecordingBroadcaster()
        hub = Hub(router, broadcaster=broadcaster)
        a, b = connect(hub), connect(hub)
        subscribe(hub, a, "news")
        subscribe(hub, b, "news")
        send(hub, a, "mls.unsubscribe", {"channel": "news"})
        assert broadcaster.changes == [("added", "news")]
        hub.disconnect(b)
        assert broadcaster.changes == [("added", "news"), ("removed", "news")]


class TestAuthorizers:
    def test_private_channel_without_authorizer(self, hub: Hub) -> None:
        conn = connect(hub, user("7"))
        assert subscribe(hub, conn, "private-user.7") == [
            error(1, "forbidden", "private channel 'private-user.7' has no authorizer")
        ]
        assert hub.membership.channels_of(conn.id) == frozenset()
        assert_works(hub, conn)

    def test_pattern_params(self, authorizers: ChannelAuthorizers, hub: Hub) -> None:
        seen: list[tuple[Any, str]] = []

        @authorizers.channel("private-user.{id}")
        def own(principal: Principal, id: str) -> bool:
            seen.append((principal.user_id, id))
            return principal.user_id == id

        conn = connect(hub, user("7"))
        assert subscribe(hub, conn, "private-user.7") == [
            {"reply": 1, "data": {"channel": "private-user.7"}}
        ]
        assert subscribe(hub, conn, "private-user.8", 2) == [
            error(2, "forbidden", "not allowed to subscribe to 'private-user.8'")
        ]
        # "{id}" never spans a separator: no authorizer matches, so a private channel is refused.
        (reply,) = subscribe(hub, conn, "private-user.7.x", 3)
        assert reply["error"]["code"] == "forbidden"
        assert seen == [("7", "7"), ("7", "8")]
        assert hub.membership.channels_of(conn.id) == {"private-user.7"}
        anonymous = connect(hub)
        (reply,) = subscribe(hub, anonymous, "private-user.7")
        assert reply["error"]["code"] == "forbidden"

    def test_priorities(self, authorizers: ChannelAuthorizers, hub: Hub) -> None:
        order: list[str] = []

        def check(name: str, verdict: object) -> Any:
            def authorizer(principal: Principal, **params: str) -> object:
                order.append(name)
                return verdict

            return authorizer

        authorizers.add("private-team.{team}", check("low", True), priority=-1)
        authorizers.add("private-team.{team}", check("high", True), priority=10)
        authorizers.add("private-{kind}.{name}", check("any", True))
        authorizers.add("private-team.blocked", check("blocker", False), priority=5)
        conn = connect(hub, user("7"))
        assert subscribe(hub, conn, "private-team.a")[0]["data"] == {"channel": "private-team.a"}
        assert order == ["high", "any", "low"]
        order.clear()
        (reply,) = subscribe(hub, conn, "private-team.blocked", 2)
        assert reply == error(2, "forbidden", "not allowed to subscribe to 'private-team.blocked'")
        assert order == ["high", "blocker"]  # the refusal stops the lower priorities

    def test_public_channel_refused_by_a_matching_authorizer(
        self, authorizers: ChannelAuthorizers, hub: Hub
    ) -> None:
        authorizers.add("staff.{room}", lambda principal, room: "staff" in principal.tags)
        staff = connect(hub, user("1", frozenset({"staff"})))
        guest = connect(hub, user("2"))
        assert subscribe(hub, staff, "staff.x")[0] == {"reply": 1, "data": {"channel": "staff.x"}}
        assert subscribe(hub, guest, "staff.x")[0]["error"]["code"] == "forbidden"
        assert subscribe(hub, guest, "lobby")[0] == {"reply": 1, "data": {"channel": "lobby"}}

    def test_authorizer_raising(
        self, authorizers: ChannelAuthorizers, hub: Hub, caplog: pytest.LogCaptureFixture
    ) -> None:
        def banned(principal: Principal, name: str) -> bool:
            raise Forbidden("you are banned")

        def broken(principal: Principal, name: str) -> bool:
            raise RuntimeError(SECRET)

        def nobody(principal: Principal, name: str) -> bool:
            raise Unauthorized("sign in")

        authorizers.add("private-banned.{name}", banned)
        authorizers.add("private-broken.{name}", broken)
        authorizers.add("private-signin.{name}", nobody)
        conn = connect(hub, user("7"))
        assert subscribe(hub, conn, "private-banned.x") == [error(1, "forbidden", "you are banned")]
        assert subscribe(hub, conn, "private-signin.x") == [error(1, "unauthorized", "sign in")]
        with caplog.at_level(logging.ERROR, logger="mlsockets.events"):
            replies = subscribe(hub, conn, "private-broken.x", 2)
        assert replies == [error(2, "internal", "internal error")]
        (record,) = caplog.records
        assert record.exc_info is not None and SECRET in caplog.text
        assert hub.membership.channels_of(conn.id) == frozenset()
        assert_works(hub, conn)


# -- presence --------------------------------------------------------------------------------


def member(user_id: str, **info: object) -> dict[str, object]:
    return {"user_id": user_id, "info": info}


def presence(*members: dict[str, object]) -> dict[str, object]:
    return {"event": "mls.presence", "data": {"channel": ROOM, "members": list(members)}}


def joined(user_id: str, **info: object) -> dict[str, object]:
    return {
        "event": "mls.joined",
        "channel": ROOM,
        "data": {"channel": ROOM, "member": member(user_id, **info)},
    }


def left(user_id: str, **info: object) -> dict[str, object]:
    return {
        "event": "mls.left",
        "channel": ROOM,
        "data": {"channel": ROOM, "member": member(user_id, **info)},
    }


def acked(msg_id: int, *members: dict[str, object]) -> dict[str, object]:
    return {"reply": msg_id, "data": {"channel": ROOM, "members": list(members)}}


@pytest.fixture
def rooms(authorizers: ChannelAuthorizers) -> ChannelAuthorizers:
    @authorizers.channel("presence-room.{room}")
    def room(principal: Principal, room: str) -> object:
        if room == "closed":
            return False
        return {"name": principal.info.get("name")}

    return authorizers


@pytest.mark.usefixtures("rooms")
class TestPresence:
    def test_anonymous_refused(self, hub: Hub, conn: FakeConnection) -> None:
        assert subscribe(hub, conn, ROOM) == [
            error(1, "unauthorized", "presence channels need a signed-in user")
        ]
        assert hub.presence.members(ROOM) == []  # type: ignore[arg-type]
        assert_works(hub, conn)

    def test_refused_by_the_authorizer(self, hub: Hub) -> None:
        conn = connect(hub, user("a"))
        (reply,) = subscribe(hub, conn, "presence-room.closed")
        assert reply["error"]["code"] == "forbidden"
        (reply,) = subscribe(hub, conn, "presence-hall")  # no authorizer matches
        assert reply["error"]["code"] == "forbidden"

    def test_members_and_joined(self, hub: Hub) -> None:
        ann = connect(hub, user("ann", name="Ann"))
        assert subscribe(hub, ann, ROOM, 1) == [
            presence(member("ann", name="Ann")),
            acked(1, member("ann", name="Ann")),
        ]
        bob = connect(hub, user("bob", name="Bob"))
        both = (member("ann", name="Ann"), member("bob", name="Bob"))
        assert subscribe(hub, bob, ROOM, 2) == [presence(*both), acked(2, *both)]
        assert ann.take() == [joined("bob", name="Bob")]  # to the others only

    def test_two_connections_are_one_member(self, hub: Hub) -> None:
        ann = connect(hub, user("ann", name="Ann"))
        subscribe(hub, ann, ROOM)
        bob1 = connect(hub, user("bob", name="Bob"))
        bob2 = connect(hub, user("bob", name="Bobby"))  # later info is ignored
        subscribe(hub, bob1, ROOM)
        assert ann.take() == [joined("bob", name="Bob")]
        both = (member("ann", name="Ann"), member("bob", name="Bob"))
        assert subscribe(hub, bob2, ROOM, 3) == [presence(*both), acked(3, *both)]
        assert ann.take() == [] and bob1.take() == []
        # One of Bob's connections leaves: Bob is still there.
        assert send(hub, bob1, "mls.unsubscribe", {"channel": ROOM}, 4) == [
            {"reply": 4, "data": {"channel": ROOM}}
        ]
        assert ann.take() == [] and bob2.take() == []
        # The last one leaves: mls.left, once.
        hub.disconnect(bob2)
        assert ann.take() == [left("bob", name="Bob")]
        assert bob1.take() == []  # unsubscribed: not told
        assert hub.presence.members(ROOM) == [("ann", {"name": "Ann"})]  # type: ignore[arg-type]

    def test_left_on_unsubscribe(self, hub: Hub) -> None:
        ann, bob = connect(hub, user("ann", name="Ann")), connect(hub, user("bob", name="Bob"))
        subscribe(hub, ann, ROOM)
        subscribe(hub, bob, ROOM)
        ann.take()
        assert send(hub, bob, "mls.unsubscribe", {"channel": ROOM}) == []
        assert ann.take() == [left("bob", name="Bob")]
        # And back: a new join.
        subscribe(hub, bob, ROOM)
        assert ann.take() == [joined("bob", name="Bob")]

    def test_left_on_server_leave(self, hub: Hub) -> None:
        ann, bob = connect(hub, user("ann", name="Ann")), connect(hub, user("bob", name="Bob"))
        subscribe(hub, ann, ROOM)
        subscribe(hub, bob, ROOM)
        ann.take()
        hub.leave(bob, ROOM)
        assert ann.take() == [left("bob", name="Bob")]
        assert bob.take() == []

    def test_authorizer_returning_true_gives_empty_info(
        self, authorizers: ChannelAuthorizers, hub: Hub
    ) -> None:
        authorizers.add("presence-open", lambda principal: True)
        ann = connect(hub, user("ann", name="Ann"))
        assert subscribe(hub, ann, "presence-open")[0]["data"]["members"] == [member("ann")]

    def test_grace_period_suppresses_flaps(self, make: MakeHub, scheduler: ManualScheduler) -> None:
        hub = make(presence_grace=5.0)
        ann, bob = connect(hub, user("ann", name="Ann")), connect(hub, user("bob", name="Bob"))
        subscribe(hub, ann, ROOM)
        subscribe(hub, bob, ROOM)
        assert ann.take() == [joined("bob", name="Bob")]
        # Bob reloads the page: his connection drops ...
        hub.disconnect(bob)
        scheduler.advance(4.9)
        assert ann.take() == []
        # ... and a newcomer still sees him, in his grace period.
        cid = connect(hub, user("cid", name="Cid"))
        (snapshot, _) = subscribe(hub, cid, ROOM)
        assert [m["user_id"] for m in snapshot["data"]["members"]] == ["ann", "bob", "cid"]
        assert ann.take() == [joined("cid", name="Cid")]
        # Bob is back within the grace period: no mls.left, no mls.joined.
        bob = connect(hub, user("bob", name="Bob"))
        subscribe(hub, bob, ROOM)
        assert scheduler.pending == 0
        scheduler.advance(60.0)
        assert ann.take() == [] and cid.take() == []
        # Bob leaves for good: mls.left once the grace period is over.
        send(hub, bob, "mls.unsubscribe", {"channel": ROOM})
        scheduler.advance(4.9)
        assert ann.take() == []
        scheduler.advance(0.1)
        assert ann.take() == [left("bob", name="Bob")]
        assert cid.take() == [left("bob", name="Bob")]
        assert [m.user_id for m in hub.presence.members(ROOM)] == ["ann", "cid"]  # type: ignore[arg-type]

    def test_unencodable_member_info_is_logged(
        self, authorizers: ChannelAuthorizers, hub: Hub, caplog: pytest.LogCaptureFixture
    ) -> None:
        """An authorizer's bug: the hub logs it and carries on (the subscriber gets no ack)."""
        authorizers.add("presence-odd", lambda principal: {"avatar": b"\x89PNG"})
        ann = connect(hub, user("ann"))
        with caplog.at_level(logging.ERROR, logger="mlsockets.hub"):
            assert subscribe(hub, ann, "presence-odd") == []
        assert [r.levelno for r in caplog.records] == [logging.ERROR] * 2
        assert "'mls.presence'" in caplog.records[0].getMessage()
        msgpack = connect(hub, user("bob"), MSGPACK)  # msgpack carries bytes
        (snapshot, reply) = subscribe(hub, msgpack, "presence-odd")
        assert snapshot["data"]["members"][0] == {"user_id": "ann", "info": {"avatar": b"\x89PNG"}}
        assert_works(hub, ann)

    def test_grace_needs_a_scheduler(self, router: EventRouter) -> None:
        with pytest.raises(ValueError):
            Hub(router, options=HubOptions(presence_grace=1.0))


@pytest.mark.usefixtures("rooms")
class TestServerSidePresence:
    """``hub.join(conn, "presence-...")`` does what a client's ``mls.subscribe`` does."""

    def test_join_is_like_a_subscribe(self, hub: Hub) -> None:
        ann = connect(hub, user("ann", name="Ann"))
        subscribe(hub, ann, ROOM)
        ann.take()
        bob = connect(hub, user("bob"))
        hub.join(bob, ROOM, info={"name": "Bob"})
        both = (member("ann", name="Ann"), member("bob", name="Bob"))
        assert bob.take() == [presence(*both)]  # the member list, no ack: nobody asked
        assert ann.take() == [joined("bob", name="Bob")]
        assert hub.presence.members(ROOM) == [  # type: ignore[arg-type]
            ("ann", {"name": "Ann"}),
            ("bob", {"name": "Bob"}),
        ]
        hub.join(bob, ROOM, info={"name": "Again"})  # already in: nothing happens
        assert ann.take() == [] and bob.take() == []
        hub.leave(bob, ROOM)
        assert ann.take() == [left("bob", name="Bob")]
        assert bob.take() == []

    def test_default_info_is_empty_and_a_second_tab_is_one_member(self, hub: Hub) -> None:
        ann = connect(hub, user("ann", name="Ann"))
        subscribe(hub, ann, ROOM)
        ann.take()
        bob1, bob2 = connect(hub, user("bob")), connect(hub, user("bob"))
        hub.join(bob1, ROOM)
        assert ann.take() == [joined("bob")]
        hub.join(bob2, ROOM)
        assert ann.take() == []  # one member, two connections
        assert bob2.take() == [presence(member("ann", name="Ann"), member("bob"))]
        hub.disconnect(bob1)
        assert ann.take() == []
        send(hub, bob2, "mls.unsubscribe", {"channel": ROOM})  # a client may leave it
        assert ann.take() == [left("bob")]
        assert hub.presence.members(ROOM) == [("ann", {"name": "Ann"})]  # type: ignore[arg-type]

    def test_disconnect_announces_left(self, hub: Hub) -> None:
        ann, bob = connect(hub, user("ann", name="Ann")), connect(hub, user("bob"))
        subscribe(hub, ann, ROOM)
        hub.join(bob, ROOM)
        ann.take()
        hub.disconnect(bob)
        assert ann.take() == [left("bob")]

    def test_anonymous_is_refused_before_anything_changed(
        self, hub: Hub, conn: FakeConnection
    ) -> None:
        with pytest.raises(InvalidState, match="presence channels need a signed-in user"):
            hub.join(conn, ROOM)
        assert hub.membership.channels_of(conn.id) == frozenset()
        assert hub.presence.members(ROOM) == []  # type: ignore[arg-type]
        assert_works(hub, conn)

    def test_from_a_connect_hook_after_the_welcome(self, router: EventRouter, hub: Hub) -> None:
        ann = connect(hub, user("ann", name="Ann"))
        subscribe(hub, ann, ROOM)
        ann.take()
        router.on_connect(lambda c: hub.join(c, ROOM, info={"name": "Bob"}))
        bob = FakeConnection(user("bob"))
        assert hub.connect(bob)
        welcome, snapshot = bob.take()
        assert welcome["event"] == "mls.welcome"
        assert snapshot == presence(member("ann", name="Ann"), member("bob", name="Bob"))
        assert ann.take() == [joined("bob", name="Bob")]

    def test_refused_connection_never_joined_presence(self, router: EventRouter, hub: Hub) -> None:
        ann = connect(hub, user("ann", name="Ann"))
        subscribe(hub, ann, ROOM)
        ann.take()

        def hook(conn: Any) -> None:
            hub.join(conn, ROOM)
            raise Forbidden("no")

        router.on_connect(hook)
        bob = FakeConnection(user("bob"))
        assert not hub.connect(bob)
        assert bob.raw == [] and ann.take() == []
        assert [m.user_id for m in hub.presence.members(ROOM)] == ["ann"]  # type: ignore[arg-type]

    def test_hook_that_joins_and_leaves_announces_nothing(
        self, router: EventRouter, hub: Hub
    ) -> None:
        ann = connect(hub, user("ann", name="Ann"))
        subscribe(hub, ann, ROOM)
        ann.take()

        def hook(conn: Any) -> None:
            hub.join(conn, ROOM)
            hub.leave(conn, ROOM)

        router.on_connect(hook)
        bob = connect(hub, user("bob"))
        assert bob.take() == [] and ann.take() == []
        assert [m.user_id for m in hub.presence.members(ROOM)] == ["ann"]  # type: ignore[arg-type]


@pytest.mark.usefixtures("rooms")
class TestClose:
    def test_no_grace_timer_fires_after_close(
        self, make: MakeHub, scheduler: ManualScheduler
    ) -> None:
        hub = make(presence_grace=5.0)
        ann, bob = connect(hub, user("ann", name="Ann")), connect(hub, user("bob", name="Bob"))
        subscribe(hub, ann, ROOM)
        subscribe(hub, bob, ROOM)
        ann.take()
        hub.disconnect(bob)  # Bob's grace period starts
        assert scheduler.pending == 1
        hub.close()
        assert scheduler.pending == 0
        hub.disconnect(ann)  # a connection closed after the hub: no timer either
        assert scheduler.pending == 0
        assert scheduler.advance(60.0) == 0
        assert ann.take() == []
        assert hub.presence.members(ROOM) == []  # type: ignore[arg-type]
        hub.close()  # twice is fine

    def test_closed_hub_refuses_connections(self, hub: Hub) -> None:
        hub.close()
        conn = FakeConnection(user("ann"))
        assert not hub.connect(conn)
        assert hub.last_refusal == Refusal(1001, "server shutting down")
        assert conn.raw == [] and len(hub) == 0

    def test_closes_a_broadcaster_that_can_be_closed(self, router: EventRouter) -> None:
        class Closable(LocalBroadcaster):
            closed = 0

            def close(self) -> None:
                self.closed += 1

        broadcaster = Closable()
        hub = Hub(router, broadcaster=broadcaster)
        hub.close()
        hub.close()
        assert broadcaster.closed == 1
        Hub(router).close()  # the local broadcaster has nothing to close

    def test_close_at_exit_runs_in_a_real_interpreter(self) -> None:
        code = (
            "from mlsockets.broadcast.local import LocalBroadcaster\n"
            "from mlsockets.hub import Hub\n"
            "class B(LocalBroadcaster):\n"
            "    def close(self):\n"
            "        print('closed', flush=True)\n"
            "hub = Hub(broadcaster=B())\n"
            "hub.close_at_exit()\n"
            "dropped = Hub(broadcaster=B())\n"
            "dropped.close_at_exit()\n"
            "del dropped\n"
            "import gc; gc.collect()\n"  # a weak reference: a collected hub is not closed
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
        )
        assert out.stdout == "closed\n"


# -- emitting --------------------------------------------------------------------------------


class RecordingBroadcaster(LocalBroadcaster):
    def __init__(self) -> None:
        super().__init__()
        self.changes: list[tuple[str, str]] = []

    def channel_added(self, channel: str) -> None:
        self.changes.append(("added", channel))

    def channel_removed(self, channel: str) -> None:
        self.changes.append(("removed", channel))


class TestEmit:
    @pytest.fixture
    def people(self, hub: Hub) -> dict[str, FakeConnection]:
        people = {
            "ann1": connect(hub, user("ann", frozenset({"staff"}))),
            "ann2": connect(hub, user("ann", frozenset({"staff"})), MSGPACK),
            "bob": connect(hub, user("bob")),
            "anon": connect(hub),
        }
        hub.join(people["ann1"], "room:1")
        subscribe(hub, people["bob"], "room:1")
        people["bob"].take()
        return people

    def received(self, people: Mapping[str, FakeConnection]) -> dict[str, list[Any]]:
        return {name: msgs for name, conn in people.items() if (msgs := conn.take())}

    def test_to_channel(self, hub: Hub, people: dict[str, FakeConnection]) -> None:
        assert hub.emit("news", {"n": 1}, to="room:1") == 2
        message = {"event": "news", "channel": "room:1", "data": {"n": 1}}
        assert self.received(people) == {"ann1": [message], "bob": [message]}
        assert hub.emit("news", {"n": 1}, to=Channel("room:1")) == 2
        assert self.received(people) == {"ann1": [message], "bob": [message]}
        assert hub.emit("news", to="room:empty") == 0

    def test_to_user(self, hub: Hub, people: dict[str, FakeConnection]) -> None:
        assert hub.emit("dm", "hi", to=User("ann")) == 2
        assert self.received(people) == {
            "ann1": [{"event": "dm", "data": "hi"}],
            "ann2": [{"event": "dm", "data": "hi"}],
        }
        assert hub.emit("dm", "hi", to=User("nobody")) == 0

    def test_to_connection(self, hub: Hub, people: dict[str, FakeConnection]) -> None:
        assert hub.emit("direct", [1], to=ConnectionTarget(people["anon"].id)) == 1
        assert self.received(people) == {"anon": [{"event": "direct", "data": [1]}]}
        assert hub.emit("direct", to=ConnectionTarget("gone")) == 0

    def test_to_tag(self, hub: Hub, people: dict[str, FakeConnection]) -> None:
        assert hub.emit("memo", None, to=Tag("staff")) == 2
        assert set(self.received(people)) == {"ann1", "ann2"}
        assert hub.emit("memo", to=Tag("nobody")) == 0

    @pytest.mark.parametrize("to", [None, Everyone()])
    def test_to_everyone(
        self, hub: Hub, people: dict[str, FakeConnection], to: Target | None
    ) -> None:
        assert hub.emit("all", True, to=to) == 4
        assert self.received(people) == {name: [{"event": "all", "data": True}] for name in people}

    def test_skip_excludes_the_sender(self, hub: Hub, people: dict[str, FakeConnection]) -> None:
        assert hub.emit("news", 1, to="room:1", skip=people["bob"].id) == 1
        assert set(self.received(people)) == {"ann1"}
        assert hub.emit("all", 1, skip=people["anon"].id) == 3
        assert set(self.received(people)) == {"ann1", "ann2", "bob"}
        assert hub.emit("dm", 1, to=User("ann"), skip=people["ann2"].id) == 1
        assert set(self.received(people)) == {"ann1"}

    def test_from_a_handler_with_skip(self, router: EventRouter, hub: Hub) -> None:
        def say(conn: Any, data: Any) -> str:
            hub.emit("said", data, to="lobby", skip=conn.id)
            return "sent"

        router.add("say", say)
        a, b, c = connect(hub), connect(hub), connect(hub)
        for conn in (a, b, c):
            subscribe(hub, conn, "lobby")
        assert send(hub, a, "say", "hello", 1) == [{"reply": 1, "data": "sent"}]
        said = {"event": "said", "channel": "lobby", "data": "hello"}
        assert b.take() == [said] and c.take() == [said]

    def test_invalid_channel_name(self, hub: Hub) -> None:
        with pytest.raises(InvalidChannel):
            hub.emit("x", to="bad name")

    def test_encode_once(self, hub: Hub) -> None:
        js = [connect(hub) for _ in range(3)]
        mp = [connect(hub, formatter=MSGPACK) for _ in range(2)]
        for conn in js + mp:
            hub.join(conn, "room:1")
        assert hub.emit("news", {"n": 1, "text": "caf\u00e9"}, to="room:1") == 5
        (text,) = {id(conn.raw[-1]) for conn in js}  # one object for every JSON receiver
        (binary,) = {id(conn.raw[-1]) for conn in mp}  # and one for every msgpack receiver
        assert text != binary
        assert all(type(conn.raw[-1]) is str for conn in js)
        assert all(type(conn.raw[-1]) is bytes for conn in mp)
        expected = {"event": "news", "channel": "room:1", "data": {"n": 1, "text": "caf\u00e9"}}
        assert all(conn.take() == [expected] for conn in js + mp)

    def test_send_many_gets_each_group_once(self, router: EventRouter) -> None:
        batches: list[tuple[list[Connection], Message]] = []
        hub = Hub(router, send_many=lambda conns, payload: batches.append((list(conns), payload)))
        js = [connect(hub) for _ in range(2)]
        mp = connect(hub, formatter=MSGPACK)
        assert hub.emit("all", 1) == 3
        assert [(conns, type(payload)) for conns, payload in batches] == [
            (js, str),
            ([mp], bytes),
        ]
        assert all(conn.raw == [] for conn in [*js, mp])  # send_many delivers, not the hub

    def test_send_bulk_class_hook(self, hub: Hub) -> None:
        """A connection class with ``send_bulk`` gets its group in one call."""
        batches: list[tuple[list[Any], Message]] = []

        class BulkConnection(FakeConnection):
            @classmethod
            def send_bulk(cls, conns: list[Any], message: Message) -> None:
                batches.append((conns, message))

        bulk = [BulkConnection() for _ in range(2)]
        for conn in bulk:
            assert hub.connect(conn)
        plain = connect(hub)
        assert hub.emit("all", 1) == 3
        assert batches == [(bulk, '{"event":"all","data":1}')]
        assert plain.take() == [{"event": "all", "data": 1}]

    def test_unencodable_data(
        self, hub: Hub, people: dict[str, FakeConnection], caplog: pytest.LogCaptureFixture
    ) -> None:
        with caplog.at_level(logging.ERROR, logger="mlsockets.hub"):
            # bytes: msgpack carries them, JSON cannot; an object: neither.
            assert hub.emit("blob", b"\x00", to=User("ann")) == 1
            assert hub.emit("object", object()) == 0
        assert self.received(people) == {"ann2": [{"event": "blob", "data": b"\x00"}]}
        assert [r.levelno for r in caplog.records] == [logging.ERROR] * 3
        assert all(r.exc_info is not None for r in caplog.records)
        assert "'blob' as json" in caplog.records[0].getMessage()
        assert_works(hub, people["anon"])

    def test_mixed_formats_and_system_events(self, hub: Hub, rooms: ChannelAuthorizers) -> None:
        a = connect(hub, user("a"), MSGPACK)
        b = connect(hub, user("b"))
        subscribe(hub, a, ROOM)
        subscribe(hub, b, ROOM)
        assert a.take() == [joined("b", name=None)]


# -- server-side rooms -----------------------------------------------------------------------


class TestRooms:
    def test_join_and_leave(self, hub: Hub, conn: FakeConnection) -> None:
        hub.join(conn, "room:1")
        assert conn.take() == []  # no ack: nobody asked
        assert hub.emit("x", 1, to="room:1") == 1
        assert conn.take() == [{"event": "x", "channel": "room:1", "data": 1}]
        hub.leave(conn, "room:1")
        hub.leave(conn, "room:1")  # not a member: a no-op
        assert hub.emit("x", 1, to="room:1") == 0
        assert conn.take() == []

    def test_no_authorization(self, hub: Hub, conn: FakeConnection) -> None:
        hub.join(conn, "private-secret")  # server code decides
        assert hub.emit("x", to="private-secret") == 1

    def test_client_can_unsubscribe_a_server_room(self, hub: Hub, conn: FakeConnection) -> None:
        hub.join(conn, "room:1")
        assert send(hub, conn, "mls.unsubscribe", {"channel": "room:1"}, 1) == [
            {"reply": 1, "data": {"channel": "room:1"}}
        ]
        assert hub.emit("x", to="room:1") == 0

    def test_unknown_connection_is_ignored(self, hub: Hub) -> None:
        stranger = FakeConnection()
        hub.join(stranger, "room:1")
        hub.leave(stranger, "room:1")
        assert hub.emit("x", to="room:1") == 0
        assert len(hub.membership) == 0

    def test_invalid_name(self, hub: Hub, conn: FakeConnection) -> None:
        with pytest.raises(InvalidChannel):
            hub.join(conn, "no spaces")
        with pytest.raises(InvalidChannel):
            hub.leave(conn, "")

    def test_broadcaster_hears_rooms(self, router: EventRouter) -> None:
        broadcaster = RecordingBroadcaster()
        hub = Hub(router, broadcaster=broadcaster)
        conn = connect(hub)
        hub.join(conn, "room:1")
        hub.join(conn, "room:1")
        hub.leave(conn, "room:1")
        assert broadcaster.changes == [("added", "room:1"), ("removed", "room:1")]


def test_defaults() -> None:
    hub = Hub()
    conn = connect(hub)
    assert send(hub, conn, "anything", None, 1) == [
        error(1, "unknown_event", "unknown event 'anything'")
    ]
    assert subscribe(hub, conn, "news") == [{"reply": 1, "data": {"channel": "news"}}]
    assert hub.options == HubOptions()
