"""The hub end to end: ``SocketApp`` on the gevent server, real sockets, the Python client.

Covers the handshake (admission: 401 / 403 / 429 with no 101, 400 without a subprotocol,
plain HTTP beside the endpoint), the welcome, acks and error replies over the wire (the
connection still works afterwards), channels and broadcasts emitted by the test, presence
across clients (grace timers on the gevent loop), abusive clients closed with 1008 while
others carry on, and one emit reaching 200 subscribers exactly once. The last section
checks ``HubConnection`` against stand-in WebSockets, for the paths sockets cannot reach
on demand.
"""

from __future__ import annotations

import http.client
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import gevent
import marshmallow
import pytest
from marshmallow import fields

from mlsockets.admission import Admission, HandshakeRateLimiter, OriginPolicy
from mlsockets.auth import ANONYMOUS, Principal
from mlsockets.channels.authorizers import ChannelAuthorizers
from mlsockets.client import Client, ErrorReply, ReceivedEvent, connect
from mlsockets.events import EventRouter
from mlsockets.exceptions import (
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    Forbidden,
    InvalidHandshake,
    Unauthorized,
)
from mlsockets.formatters.base import JSON, JSON_SUBPROTOCOL, MSGPACK_SUBPROTOCOL
from mlsockets.hub import Hub, HubOptions
from mlsockets.tokens import TokenAuthenticator
from mlsockets.transport.gevent.scheduling import GeventScheduler
from mlsockets.typing import ConnectionId, Message
from mlsockets.wsgi import HubConnection, accept_into_hub

if TYPE_CHECKING:  # conftest is not importable by name: several directories have one
    from conftest import Running, StartHub

SECRET = "a token secret of at least 16 bytes"
LEAK = "db password is hunter2"
ROOM = "presence-room.1"

pytestmark = pytest.mark.timeout(30)


class MessageSchema(marshmallow.Schema):
    text = fields.Str(required=True, validate=marshmallow.validate.Length(max=5))


def make_hub(**options: Any) -> Hub:
    """A small chat hub: echo, a validated event, a failing one, a broadcast with skip=."""
    router = EventRouter()
    authorizers = ChannelAuthorizers()
    hub = Hub(router, authorizers, scheduler=GeventScheduler(), options=HubOptions(**options))

    @router.on("echo")
    def echo(conn: Any, data: Any) -> Any:
        return data

    @router.on("chat.send", schema=MessageSchema)
    def chat_send(conn: Any, data: Any) -> dict[str, Any]:
        hub.emit("chat.message", data, to="lobby", skip=conn.id)
        return {"sent": True}

    @router.on("secret")
    def secret(conn: Any, data: Any) -> None:
        raise RuntimeError(LEAK)

    @router.on("admin")
    def admin(conn: Any, data: Any) -> None:
        raise Forbidden("admins only")

    @router.on("whoami")
    def whoami(conn: Any, data: Any) -> Any:
        return {"user_id": conn.principal.user_id, "connection_id": conn.id}

    @authorizers.channel("presence-room.{room}")
    def room(principal: Principal, room: str) -> object:
        return {"name": principal.info.get("name")}

    @authorizers.channel("private-user.{id}")
    def own(principal: Principal, id: str) -> bool:
        return principal.user_id == id

    return hub


@pytest.fixture
def tokens() -> TokenAuthenticator:
    return TokenAuthenticator(SECRET)


@pytest.fixture
def served(serve_hub: StartHub) -> Running:
    return serve_hub(make_hub())


@pytest.fixture
def authed(serve_hub: StartHub, tokens: TokenAuthenticator) -> Running:
    return serve_hub(make_hub(), admission=Admission(authenticate=tokens))


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Yield to the server until ``condition()`` holds (a deadline, not a timing assertion)."""
    with gevent.Timeout(timeout, AssertionError(f"still false after {timeout} s")):
        while not condition():
            gevent.sleep(0.005)


def next_event(client: Client, skip_system: bool = False) -> ReceivedEvent:
    while True:
        event = client.receive(timeout=5)
        if not (skip_system and event.event.startswith("mls.")):
            return event


def until(client: Client, event: str) -> list[ReceivedEvent]:
    """The events ``client`` receives before ``event`` (which is consumed)."""
    seen = []
    while (received := client.receive(timeout=5)).event != event:
        seen.append(received)
    return seen


# -- connecting and events -------------------------------------------------------------------


class TestConnect:
    @pytest.mark.parametrize("fmt", ["json", "msgpack"])
    def test_welcome_and_acks(self, served: Running, fmt: str) -> None:
        client = served.client(format=fmt)
        assert isinstance(client.connection_id, str) and client.connection_id
        assert client.user_id is None
        assert client.heartbeat == served.hub.options.heartbeat
        wait_for(lambda: len(served.hub) == 1)
        assert served.hub.registry.get(client.connection_id) is not None  # type: ignore[arg-type]
        assert client.emit("echo", {"a": [1, 2.5, None]}, ack=True) == {"a": [1, 2.5, None]}
        assert client.emit("whoami", ack=True)["connection_id"] == client.connection_id
        assert client.emit("echo", "no ack wanted") is None
        if fmt == "msgpack":
            assert client.emit("echo", b"\x00\xff", ack=True) == b"\x00\xff"
        assert client.emit("echo", 1, ack=True) == 1  # in order: the unacked one was handled

    def test_token_gives_the_user(self, authed: Running, tokens: TokenAuthenticator) -> None:
        client = authed.client(token=tokens.make_token("ann", info={"name": "Ann"}))
        assert client.user_id == "ann"
        assert client.emit("whoami", ack=True)["user_id"] == "ann"

    def test_disconnect_is_noticed(self, served: Running) -> None:
        gone: list[Any] = []
        served.hub.router.on_disconnect(gone.append)
        client = served.client()
        wait_for(lambda: len(served.hub) == 1)
        client.close()
        wait_for(lambda: len(served.hub) == 0)
        assert [conn.id for conn in gone] == [client.connection_id]


class TestErrorReplies:
    def test_each_error_then_still_working(
        self, served: Running, caplog: pytest.LogCaptureFixture
    ) -> None:
        client = served.client()
        with pytest.raises(ErrorReply) as unknown:
            client.emit("nope", ack=True)
        assert (unknown.value.code, unknown.value.message) == (
            "unknown_event",
            "unknown event 'nope'",
        )
        assert client.emit("echo", 1, ack=True) == 1

        with pytest.raises(ErrorReply) as invalid:
            client.emit("chat.send", {"text": "far too long"}, ack=True)
        assert invalid.value.code == "invalid"
        assert invalid.value.fields == {"text": ["Longer than maximum length 5."]}
        assert client.emit("echo", 2, ack=True) == 2

        with pytest.raises(ErrorReply) as forbidden:
            client.emit("admin", ack=True)
        assert (forbidden.value.code, forbidden.value.message) == ("forbidden", "admins only")

        with caplog.at_level(logging.ERROR, logger="mlsockets.events"):
            with pytest.raises(ErrorReply) as internal:
                client.emit("secret", ack=True)
        assert (internal.value.code, internal.value.message) == ("internal", "internal error")
        assert LEAK not in str(internal.value) and LEAK in caplog.text
        assert client.emit("echo", 3, ack=True) == 3

        with pytest.raises(ErrorReply) as channel:
            client.subscribe("bad name")
        assert channel.value.code == "invalid_channel"
        with pytest.raises(ErrorReply) as private:
            client.subscribe("private-user.1")
        assert private.value.code == "forbidden"
        with pytest.raises(ErrorReply) as presence:
            client.subscribe(ROOM)
        assert presence.value.code == "unauthorized"
        with pytest.raises(ErrorReply) as not_subscribed:
            client.unsubscribe("news")
        assert not_subscribed.value.code == "not_subscribed"
        assert client.emit("echo", 4, ack=True) == 4

    def test_errors_without_id_arrive_as_mls_error(self, served: Running) -> None:
        client = served.client()
        client.emit("nope", {"x": 1})
        event = next_event(client)
        assert event == ReceivedEvent(
            "mls.error",
            {"code": "unknown_event", "message": "unknown event 'nope'", "event": "nope"},
        )
        assert client.connection is not None
        client.connection.send("{not json")
        event = next_event(client)
        assert event.event == "mls.error" and event.data["code"] == "bad_envelope"
        assert client.emit("echo", "fine", ack=True) == "fine"

    def test_ping(self, served: Running) -> None:
        client = served.client(format="msgpack")
        client.emit("mls.ping", {"t": 1})
        assert next_event(client) == ReceivedEvent("mls.pong", {"t": 1})


class TestAbuse:
    def test_repeated_garbage_is_closed_while_others_work(self, serve_hub: StartHub) -> None:
        running = serve_hub(make_hub(max_bad_envelopes=3))
        bad, good = running.client(), running.client()
        assert bad.connection is not None
        for _ in range(10):
            bad.connection.send("garbage")
        codes = []
        with pytest.raises(ConnectionClosedError) as closed:
            while True:
                codes.append(next_event(bad).data["code"])
        assert codes == ["bad_envelope"] * 3
        assert closed.value.code == 1008
        assert closed.value.reason == "too many malformed messages"
        assert good.emit("echo", "unbothered", ack=True) == "unbothered"
        wait_for(lambda: len(running.hub) == 1)

    def test_rate_limit(self, serve_hub: StartHub) -> None:
        running = serve_hub(make_hub(rate=0.001, burst=2, rate_strikes=1))
        greedy, other = running.client(), running.client()
        assert greedy.emit("echo", 1, ack=True) == 1
        assert greedy.emit("echo", 2, ack=True) == 2
        with pytest.raises(ErrorReply) as limited:
            greedy.emit("echo", 3, ack=True)
        assert limited.value.code == "rate_limited"
        with pytest.raises(ConnectionClosedError) as closed:
            greedy.emit("echo", 4, ack=True)
        assert (closed.value.code, closed.value.reason) == (1008, "rate limit exceeded")
        assert other.emit("echo", "unbothered", ack=True) == "unbothered"


# -- the handshake ---------------------------------------------------------------------------


def raw_get(running: Running, path: str, headers: dict[str, str] | None = None) -> Any:
    conn = http.client.HTTPConnection(*running.http, timeout=5)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


UPGRADE = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version": "13",
    "Sec-WebSocket-Protocol": JSON_SUBPROTOCOL,
}


class TestHandshake:
    @pytest.fixture
    def guarded(self, serve_hub: StartHub, tokens: TokenAuthenticator) -> Running:
        admission = Admission(
            origin=OriginPolicy(["https://good.example"]),
            rate_limiter=HandshakeRateLimiter(rate=0.001, burst=5),
            authenticate=tokens,
            challenge='Bearer realm="test"',
        )
        return serve_hub(make_hub(), admission=admission)

    def test_refusals_and_admission(self, guarded: Running, tokens: TokenAuthenticator) -> None:
        token = tokens.make_token("ann")
        # No token: 401, and a real HTTP response (no 101 first).
        status, headers, body = raw_get(guarded, "/ws", UPGRADE)
        assert status == 401
        assert headers["WWW-Authenticate"] == 'Bearer realm="test"'
        assert "Upgrade" not in headers and body == b"missing token\n"
        with pytest.raises(InvalidHandshake) as missing:
            guarded.client()
        assert missing.value.status == 401
        with pytest.raises(InvalidHandshake) as forged:
            guarded.client(token=token[:-2] + "xx")
        assert forged.value.status == 401
        # A page from another site: 403, before the rate limit is charged.
        for _ in range(3):
            with pytest.raises(InvalidHandshake) as origin:
                guarded.client(token=token, headers={"Origin": "https://evil.example"})
            assert origin.value.status == 403
        # The right origin, and no origin at all (not a browser), get in.
        ann = guarded.client(token=token, headers={"Origin": "https://good.example"})
        assert ann.user_id == "ann"
        bob = guarded.client(token=tokens.make_token("bob"), format="msgpack")
        assert bob.user_id == "bob"
        # The burst of 5 is spent: 429, however good the credentials.
        with pytest.raises(InvalidHandshake) as limited:
            guarded.client(token=token)
        assert limited.value.status == 429
        status, headers, _ = raw_get(
            guarded, "/ws", {**UPGRADE, "Authorization": f"Bearer {token}"}
        )
        assert status == 429 and int(headers["Retry-After"]) >= 1
        # Only the admitted ones reached the hub, and they still work.
        assert len(guarded.hub) == 2
        assert ann.emit("echo", 1, ack=True) == 1 and bob.emit("echo", 2, ack=True) == 2

    def test_without_a_subprotocol(self, served: Running) -> None:
        for offered in ([], ["chat.v2"]):
            with pytest.raises(InvalidHandshake) as refused:
                connect(served.url, subprotocols=offered, timeout=5)
            assert refused.value.status == 400
            assert JSON_SUBPROTOCOL in refused.value.reason
            assert MSGPACK_SUBPROTOCOL in refused.value.reason
        assert served.client().emit("echo", 1, ack=True) == 1

    def test_plain_http_beside_the_endpoint(self, serve_hub: StartHub) -> None:
        def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"page " + environ["PATH_INFO"].encode()]

        bare = serve_hub(make_hub())
        assert raw_get(bare, "/ws")[0] == 426
        assert raw_get(bare, "/other")[0] == 404
        with pytest.raises(InvalidHandshake) as elsewhere:
            Client.connect(bare.url.replace("/ws", "/elsewhere"), timeout=5)
        assert elsewhere.value.status == 404
        with_app = serve_hub(make_hub(), app=app, path="/socket")
        assert raw_get(with_app, "/index")[::2] == (200, b"page /index")
        assert with_app.client().emit("echo", "here", ack=True) == "here"

    def test_crashing_authenticate_hook_is_a_500(self, serve_hub: StartHub) -> None:
        def authenticate(request: Any) -> Principal:
            if request.query.get("crash"):
                raise RuntimeError(LEAK)
            return ANONYMOUS

        running = serve_hub(
            make_hub(), admission=Admission(authenticate=authenticate, allow_anonymous=True)
        )
        with pytest.raises(InvalidHandshake) as crashed:
            Client.connect(running.url + "?crash=1", timeout=5)
        assert crashed.value.status == 500 and LEAK not in crashed.value.reason
        assert running.client().emit("echo", 1, ack=True) == 1


class TestConnectRefusals:
    def test_connect_hooks(self, authed: Running, tokens: TokenAuthenticator) -> None:
        def hook(conn: Any) -> None:
            if conn.principal.user_id == "banned":
                raise Unauthorized("banned")
            if conn.principal.user_id == "crash":
                raise RuntimeError(LEAK)

        authed.hub.router.on_connect(hook)
        with pytest.raises(ConnectionClosedError) as banned:
            authed.client(token=tokens.make_token("banned"))
        assert (banned.value.code, banned.value.reason) == (1008, "banned")
        with pytest.raises(ConnectionClosedError) as crashed:
            authed.client(token=tokens.make_token("crash"))
        assert (crashed.value.code, crashed.value.reason) == (1011, "internal error")
        assert authed.client(token=tokens.make_token("ann")).emit("echo", 1, ack=True) == 1
        assert len(authed.hub) == 1

    def test_too_many_connections(self, serve_hub: StartHub, tokens: TokenAuthenticator) -> None:
        running = serve_hub(
            make_hub(max_connections_per_user=2), admission=Admission(authenticate=tokens)
        )
        token = tokens.make_token("ann")
        first, second = running.client(token=token), running.client(token=token)
        with pytest.raises(ConnectionClosedError) as refused:
            running.client(token=token)
        assert (refused.value.code, refused.value.reason) == (1008, "too many connections")
        first.close()
        wait_for(lambda: len(running.hub) == 1)
        assert running.client(token=token).emit("echo", 1, ack=True) == 1
        assert second.emit("echo", 2, ack=True) == 2

    def test_rooms_joined_in_the_connect_hook(
        self, authed: Running, tokens: TokenAuthenticator
    ) -> None:
        hub = authed.hub
        hub.router.on_connect(lambda conn: hub.join(conn, f"user.{conn.principal.user_id}"))
        ann1 = authed.client(token=tokens.make_token("ann"))
        ann2 = authed.client(token=tokens.make_token("ann"), format="msgpack")
        assert hub.emit("notice", "hi ann", to="user.ann") == 2
        for client in (ann1, ann2):
            assert next_event(client) == ReceivedEvent("notice", "hi ann", "user.ann")


# -- channels and presence -------------------------------------------------------------------


class TestChannels:
    def test_subscribe_and_broadcasts(self, served: Running) -> None:
        js, mp = served.client(), served.client(format="msgpack")
        for client in (js, mp):
            assert client.subscribe("news") == {"channel": "news"}
        assert served.hub.emit("news.item", {"title": "caf\u00e9"}, to="news") == 2
        for client in (js, mp):
            assert next_event(client) == ReceivedEvent("news.item", {"title": "caf\u00e9"}, "news")
        assert js.unsubscribe("news") == {"channel": "news"}
        assert served.hub.emit("news.item", 2, to="news") == 1
        assert next_event(mp) == ReceivedEvent("news.item", 2, "news")
        served.hub.emit("direct", 3, to=None)
        assert next_event(js) == ReceivedEvent("direct", 3) == next_event(mp)

    def test_handler_broadcast_skips_the_sender(self, served: Running) -> None:
        a, b, c = served.client(), served.client(), served.client(format="msgpack")
        for client in (a, b, c):
            client.subscribe("lobby")
        assert a.emit("chat.send", {"text": "hi"}, ack=True) == {"sent": True}
        served.hub.emit("end", to="lobby")
        assert until(a, "end") == []
        for client in (b, c):
            assert until(client, "end") == [ReceivedEvent("chat.message", {"text": "hi"}, "lobby")]

    def test_private_channel(self, authed: Running, tokens: TokenAuthenticator) -> None:
        ann = authed.client(token=tokens.make_token("7"))
        assert ann.subscribe("private-user.7") == {"channel": "private-user.7"}
        with pytest.raises(ErrorReply) as refused:
            ann.subscribe("private-user.8")
        assert refused.value.code == "forbidden"
        authed.hub.emit("secret", 1, to="private-user.7")
        assert next_event(ann) == ReceivedEvent("secret", 1, "private-user.7")


def member(user_id: str, name: str) -> dict[str, Any]:
    return {"user_id": user_id, "info": {"name": name}}


class TestPresence:
    def test_joined_and_left(self, authed: Running, tokens: TokenAuthenticator) -> None:
        ann = authed.client(token=tokens.make_token("ann", info={"name": "Ann"}))
        assert ann.subscribe(ROOM) == {"channel": ROOM, "members": [member("ann", "Ann")]}
        assert next_event(ann) == ReceivedEvent(
            "mls.presence", {"channel": ROOM, "members": [member("ann", "Ann")]}
        )
        bob_token = tokens.make_token("bob", info={"name": "Bob"})
        bob1 = authed.client(token=bob_token)
        bob2 = authed.client(token=bob_token, format="msgpack")
        assert len(bob1.subscribe(ROOM)["members"]) == 2
        assert next_event(ann) == ReceivedEvent(
            "mls.joined", {"channel": ROOM, "member": member("bob", "Bob")}, ROOM
        )
        assert len(bob2.subscribe(ROOM)["members"]) == 2  # one member, two connections
        bob1.close()
        wait_for(lambda: len(authed.hub) == 2)  # bob1's disconnect was handled: no mls.left
        bob2.close()
        # The next event ann sees is the one mls.left, after bob's last connection.
        assert next_event(ann) == ReceivedEvent(
            "mls.left", {"channel": ROOM, "member": member("bob", "Bob")}, ROOM
        )

    def test_grace_period_on_the_gevent_loop(
        self, serve_hub: StartHub, tokens: TokenAuthenticator
    ) -> None:
        running = serve_hub(make_hub(presence_grace=0.05), admission=Admission(authenticate=tokens))
        ann = running.client(token=tokens.make_token("ann", info={"name": "Ann"}))
        ann.subscribe(ROOM)
        bob = running.client(token=tokens.make_token("bob", info={"name": "Bob"}))
        bob.subscribe(ROOM)
        bob.close()
        assert until(ann, "mls.left")[-1].event == "mls.joined"
        assert [m["user_id"] for m in ann.subscribe(ROOM)["members"]] == ["ann"]

    def test_reconnect_within_grace_does_not_flap(
        self, serve_hub: StartHub, tokens: TokenAuthenticator
    ) -> None:
        running = serve_hub(make_hub(presence_grace=30.0), admission=Admission(authenticate=tokens))
        ann = running.client(token=tokens.make_token("ann", info={"name": "Ann"}))
        ann.subscribe(ROOM)
        bob_token = tokens.make_token("bob", info={"name": "Bob"})
        bob = running.client(token=bob_token)
        bob.subscribe(ROOM)
        bob.close()
        wait_for(lambda: len(running.hub) == 1)
        again = running.client(token=bob_token)  # a page reload
        assert len(again.subscribe(ROOM)["members"]) == 2
        running.hub.emit("end", to=ROOM)
        seen = [e.event for e in until(ann, "end")]
        assert seen == ["mls.presence", "mls.joined"]  # no mls.left, no second mls.joined
        # Leave no 30 s timer behind on the loop (the hub has no shutdown of its own).
        for client in (ann, again):
            client.close()
        wait_for(lambda: len(running.hub) == 0)
        running.hub.presence.clear()


class TestCrowd:
    def test_one_emit_reaches_200_subscribers_once(self, served: Running) -> None:
        clients = [
            served.client(format="msgpack" if i % 3 == 0 else "json", compression=i % 2 == 0)
            for i in range(200)
        ]
        for client in clients:
            client.subscribe("crowd")
        sender = ConnectionId(str(clients[0].connection_id))
        assert served.hub.emit("hello", {"n": 1}, to="crowd", skip=sender) == 199
        assert served.hub.emit("end", to="crowd") == 200
        hello = ReceivedEvent("hello", {"n": 1}, "crowd")
        assert until(clients[0], "end") == []
        for client in clients[1:]:
            assert until(client, "end") == [hello]


# -- HubConnection without sockets -----------------------------------------------------------


class FakeWebSocket:
    """The few RawWebSocket members HubConnection uses."""

    def __init__(self, fail: bool = False) -> None:
        self.sent: list[Message] = []
        self.closes: list[tuple[int, str]] = []
        self.fail = fail

    def send(self, message: Message, binary: bool | None = None) -> None:
        if self.fail:
            raise ConnectionClosedOK(1000, "bye")
        self.sent.append(message)

    def close(self, code: int = 1000, reason: str = "") -> None:
        self.closes.append((code, reason))


class BulkWebSocket(FakeWebSocket):
    batches: list[tuple[list[Any], Message]] = []

    @staticmethod
    def broadcast(sockets: list[Any], message: Message) -> int:
        BulkWebSocket.batches.append((sockets, message))
        return len(sockets)


class TestHubConnection:
    def test_send_and_close(self) -> None:
        conn = HubConnection(ANONYMOUS, JSON)
        conn.send("lost")  # not open yet: dropped
        conn.close(1000, "")
        ws = FakeWebSocket()
        conn.ws = ws  # type: ignore[assignment]
        conn.send("hello")
        conn.close(1008, "go away")
        assert ws.sent == ["hello"] and ws.closes == [(1008, "go away")]
        ws.fail = True
        conn.send("too late")  # closing already: the hub hears through disconnect()
        assert repr(conn) == f"<HubConnection {conn.id} user=None>"
        assert HubConnection(ANONYMOUS, JSON).id != conn.id

    def test_send_bulk(self) -> None:
        BulkWebSocket.batches = []
        bulk = [HubConnection(ANONYMOUS, JSON, BulkWebSocket()) for _ in range(3)]  # type: ignore[arg-type]
        HubConnection.send_bulk([*bulk, HubConnection(ANONYMOUS, JSON)], "m1")
        assert BulkWebSocket.batches == [([c.ws for c in bulk], "m1")]
        # Sockets of different classes, or of a class without broadcast: one send each.
        plain = HubConnection(ANONYMOUS, JSON, FakeWebSocket())  # type: ignore[arg-type]
        HubConnection.send_bulk(iter([bulk[0], plain]), "m2")
        assert bulk[0].ws.sent == ["m2"] and plain.ws.sent == ["m2"]  # type: ignore[union-attr]
        HubConnection.send_bulk([plain], "m3")
        assert plain.ws.sent == ["m2", "m3"]  # type: ignore[union-attr]
        HubConnection.send_bulk([HubConnection(ANONYMOUS, JSON)], "m4")
        HubConnection.send_bulk([], "m5")
        assert len(BulkWebSocket.batches) == 1

    def test_refused_without_a_recorded_refusal(self) -> None:
        class Refusing(Hub):
            def connect(self, conn: Any) -> bool:
                return False

        class Upgrade:
            def accept(self, principal: Any, subprotocol: Any, **callbacks: Any) -> None:
                self.callbacks = callbacks

        upgrade = Upgrade()
        accept_into_hub(upgrade, Refusing(), ANONYMOUS, JSON)  # type: ignore[arg-type]
        ws = FakeWebSocket()
        upgrade.callbacks["on_open"](ws)
        assert ws.closes == [(1008, "refused")]


def test_shutdown_closes_clients_with_going_away(serve_hub: StartHub) -> None:
    running = serve_hub(make_hub())
    client = running.client()
    running.server.shutdown(grace=1)
    with pytest.raises(ConnectionClosed) as closed:
        client.receive(timeout=5)
    assert closed.value.code == 1001
