"""The envelope client (``mlsockets.client.Client``) against a small fake envelope server:
a WSGI app on our gevent server that speaks the wire of docs/design-app.md by hand (the
real hub is tested on its own), plus the reconnection policy as pure functions."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest

from mlsockets.client import Backoff, Client, ErrorReply, ReceivedEvent
from mlsockets.client.backoff import retryable
from mlsockets.exceptions import (
    ConfigurationError,
    ConnectionClosedError,
    ConnectionClosedOK,
    InvalidHandshake,
    MLSocketsError,
    ProtocolError,
)
from mlsockets.formatters.base import choose
from mlsockets.transport.gevent import Server, ServerOptions, WebSocket

FAST_BACKOFF = Backoff(initial=0.01, maximum=0.05)


class FakeHub:
    """Speaks the envelope wire by hand. Endpoints: ``/ws`` (anyone), ``/private`` (needs
    ``Authorization: Bearer good``), ``/raw`` (no subprotocol), ``/rude`` (no welcome).

    Events it understands: ``echo`` (reply with the data), ``chat.send`` (publish a
    ``chat.message`` to the client, then reply), ``fail`` (an ``invalid`` error reply),
    ``slow`` (its reply is sent only before the next reply), ``note`` (no id: answered with
    a ``noted`` event), ``burst`` (``n`` events, then the reply), ``drop`` (close with
    ``code``, without a reply), ``mls.subscribe`` / ``mls.unsubscribe``.
    """

    def __init__(self) -> None:
        self.connections = 0
        self.subscriptions: list[tuple[str, str]] = []  # (connection id, channel)
        self.refuse = False  # refuse every handshake with 401 from now on

    def app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        upgrade = environ["mlsockets.upgrade"]
        path = environ["PATH_INFO"]
        auth = environ.get("HTTP_AUTHORIZATION")
        if self.refuse or (path == "/private" and auth != "Bearer good"):
            start_response("401 Unauthorized", [("Content-Length", "0")])
            return []
        if path == "/raw":
            upgrade.accept(handler=lambda ws: list(ws))
            return []
        formatter = choose(upgrade.request.subprotocols)
        assert formatter is not None
        user = "alice" if auth == "Bearer good" else None

        def handler(ws: WebSocket) -> None:
            self.connections += 1
            conn_id = f"c{self.connections}"
            if path == "/rude":
                ws.send(formatter.encode({"event": "chat.message", "data": None}))
                list(ws)
                return
            welcome = {"connection_id": conn_id, "heartbeat": 25.0, "user_id": user}
            ws.send(formatter.encode({"event": "mls.welcome", "data": welcome}))
            late: list[int] = []
            for message in ws:
                self.handle(ws, formatter, conn_id, formatter.decode(message), late)

        upgrade.accept(subprotocol=formatter.subprotocol, handler=handler)
        return []

    def handle(self, ws: WebSocket, fmt: Any, conn_id: str, env: Any, late: list[int]) -> None:
        event, data, msg_id = env["event"], env.get("data"), env.get("id")

        def send(obj: object) -> None:
            ws.send(fmt.encode(obj))

        def reply(data: object) -> None:
            while late:
                send({"reply": late.pop(), "data": "too late"})
            send({"reply": msg_id, "data": data})

        if event == "echo":
            reply(data)
        elif event == "chat.send":
            send({"event": "chat.message", "channel": "room:lobby", "data": data})
            reply({"ok": True})
        elif event == "fail":
            error = {"code": "invalid", "message": "bad", "fields": {"text": ["required"]}}
            send({"reply": msg_id, "error": error})
        elif event == "slow":
            late.append(msg_id)
        elif event == "note":
            send({"event": "noted", "data": data})
        elif event == "burst":
            for i in range(data):
                send({"event": "tick", "data": i})
            reply(data)
        elif event == "drop":
            ws.close(data, "bye")
        elif event == "mls.subscribe":
            channel = data["channel"]
            if channel.startswith("forbidden"):
                error = {"code": "forbidden", "message": "not for you"}
                send({"reply": msg_id, "error": error})
                return
            self.subscriptions.append((conn_id, channel))
            answer: dict[str, object] = {"channel": channel}
            if channel.startswith("presence-"):
                answer["members"] = [{"user_id": "alice", "info": {}}]
            reply(answer)
            send({"event": "subscribed", "channel": channel, "data": conn_id})
        elif event == "mls.unsubscribe":
            reply({"channel": data["channel"]})


@pytest.fixture
def hub() -> Iterator[tuple[FakeHub, Server]]:
    fake = FakeHub()
    options = ServerOptions(ping_interval=None, close_timeout=0.5, handshake_timeout=0.5)
    server = Server(fake.app, ["127.0.0.1:0"], options=options)
    server.reaper.tick = 0.05
    server.start()
    yield fake, server
    server.shutdown(grace=1.0)


def url(server: Server, path: str = "/ws") -> str:
    host, port = server.addresses[0][:2]
    return f"ws://{host}:{port}{path}"


@pytest.fixture
def client(hub: tuple[FakeHub, Server]) -> Iterator[Client]:
    with Client.connect(url(hub[1]), timeout=5) as c:
        yield c


# -- connecting --------------------------------------------------------------------------


@pytest.mark.parametrize("format", ["json", "msgpack"])
def test_welcome_is_read_on_connect(hub: tuple[FakeHub, Server], format: str) -> None:
    with Client.connect(url(hub[1], "/private"), token="good", format=format) as client:
        assert (client.connection_id, client.user_id, client.heartbeat) == ("c1", "alice", 25.0)
        assert client.subprotocol == f"mlsockets.{format}.v1"
        assert client.connection is not None
        assert client.connection.subprotocol == client.subprotocol
        payload = {"text": "é", "n": [1, 2.5, None, True]}
        assert client.emit("echo", payload, ack=True) == payload


def test_msgpack_carries_bytes(hub: tuple[FakeHub, Server]) -> None:
    with Client.connect(url(hub[1]), format="msgpack") as client:
        assert client.emit("echo", {"blob": b"\x00\xff"}, ack=True) == {"blob": b"\x00\xff"}


def test_refused_handshake_shows_the_status(hub: tuple[FakeHub, Server]) -> None:
    with pytest.raises(InvalidHandshake) as info:
        Client.connect(url(hub[1], "/private"), token="bad", timeout=5)
    assert info.value.status == 401


def test_endpoint_without_envelopes_is_refused(hub: tuple[FakeHub, Server]) -> None:
    with pytest.raises(InvalidHandshake, match="subprotocol"):
        Client.connect(url(hub[1], "/raw"), timeout=5)


def test_first_message_must_be_the_welcome(hub: tuple[FakeHub, Server]) -> None:
    with pytest.raises(ProtocolError, match="mls.welcome"):
        Client.connect(url(hub[1], "/rude"), timeout=5)


def test_bad_arguments(hub: tuple[FakeHub, Server]) -> None:
    with pytest.raises(ValueError, match="unknown format"):
        Client(url(hub[1]), format="xml")
    client = Client(url(hub[1]))
    with pytest.raises(MLSocketsError):  # InvalidState: not opened yet
        client.receive(timeout=1)
    client.open()
    with pytest.raises(MLSocketsError):
        client.open()
    for name in ("", "x" * 129):
        with pytest.raises(ValueError):
            client.emit(name)
    client.close()


# -- events and acks ---------------------------------------------------------------------


def test_ack_returns_the_reply_and_buffers_events_in_order(client: Client) -> None:
    assert client.emit("chat.send", {"text": "hi"}, ack=True) == {"ok": True}
    assert client.emit("burst", 3, ack=True) == 3
    received = [client.receive(timeout=5) for _ in range(4)]
    assert received == [
        ReceivedEvent("chat.message", {"text": "hi"}, "room:lobby"),
        ReceivedEvent("tick", 0),
        ReceivedEvent("tick", 1),
        ReceivedEvent("tick", 2),
    ]


def test_error_reply(client: Client) -> None:
    with pytest.raises(ErrorReply) as info:
        client.emit("fail", {}, ack=True)
    error = info.value
    assert (error.code, error.message, error.fields) == ("invalid", "bad", {"text": ["required"]})
    assert isinstance(error, MLSocketsError)


def test_emit_without_ack_and_receive(client: Client) -> None:
    assert client.emit("note", [1, 2]) is None
    assert client.receive(timeout=5) == ReceivedEvent("noted", [1, 2], None)
    with pytest.raises(TimeoutError):
        client.receive(timeout=0.05)


def test_ack_timeout_drops_the_late_reply(client: Client) -> None:
    with pytest.raises(TimeoutError):
        client.emit("slow", ack=True, timeout=0.05)
    # The server sends the late reply just before this one's: it must not be mistaken.
    assert client.emit("echo", "fresh", ack=True, timeout=5) == "fresh"


def test_subscribe_and_unsubscribe(client: Client) -> None:
    assert client.subscribe("room:a") == {"channel": "room:a"}
    members = [{"user_id": "alice", "info": {}}]
    assert client.subscribe("presence-room") == {"channel": "presence-room", "members": members}
    assert client.channels == ("room:a", "presence-room")
    with pytest.raises(ErrorReply) as info:
        client.subscribe("forbidden-x")
    assert info.value.code == "forbidden"
    assert client.unsubscribe("room:a") == {"channel": "room:a"}
    assert client.channels == ("presence-room",)
    assert [client.receive(timeout=5).channel for _ in range(2)] == ["room:a", "presence-room"]


def test_iteration_ends_on_a_normal_close(client: Client) -> None:
    client.emit("burst", 2)
    client.emit("drop", 1000)
    assert [e.data for e in client] == [0, 1]


def test_close(client: Client) -> None:
    client.close()
    assert client.closed
    with pytest.raises(ConnectionClosedOK):
        client.receive(timeout=1)
    with pytest.raises(ConnectionClosedOK):
        client.emit("echo", 1, ack=True)
    client.close()


def test_emit_from_one_thread_while_another_receives(client: Client) -> None:
    received: list[ReceivedEvent] = []
    reader = threading.Thread(target=lambda: received.extend(client))
    reader.start()
    replies = [client.emit("chat.send", i, ack=True, timeout=5) for i in range(10)]
    assert replies == [{"ok": True}] * 10
    client.emit("burst", 2, ack=True, timeout=5)
    client.close()
    reader.join(5)
    assert not reader.is_alive()
    assert [e.data for e in received] == [*range(10), 0, 1]


# -- reconnection ------------------------------------------------------------------------


def test_reconnects_and_resubscribes(hub: tuple[FakeHub, Server]) -> None:
    fake, server = hub
    reconnected: list[object] = []

    def on_reconnect(c: Client) -> None:  # may itself wait for an ack
        reconnected.append(c.emit("echo", c.connection_id, ack=True, timeout=5))

    with Client.connect(
        url(server), reconnect=True, backoff=FAST_BACKOFF, on_reconnect=on_reconnect, timeout=5
    ) as client:
        client.subscribe("room:a")
        client.subscribe("room:b")
        assert [client.receive(timeout=5).data for _ in range(2)] == ["c1", "c1"]
        # An ack owed by the dropped connection fails; the client carries on.
        with pytest.raises(ConnectionClosedError) as info:
            client.emit("drop", 1012, ack=True, timeout=5)
        assert info.value.code == 1012
        assert [client.receive(timeout=5) for _ in range(2)] == [
            ReceivedEvent("subscribed", "c2", "room:a"),
            ReceivedEvent("subscribed", "c2", "room:b"),
        ]
        assert (client.connection_id, client.reconnects, reconnected) == ("c2", 1, ["c2"])
        assert fake.subscriptions[-2:] == [("c2", "room:a"), ("c2", "room:b")]
        assert client.emit("echo", "again", ack=True, timeout=5) == "again"


def test_logs_never_show_a_token_in_the_url(
    hub: tuple[FakeHub, Server], caplog: pytest.LogCaptureFixture
) -> None:
    _, server = hub
    caplog.set_level(logging.DEBUG, logger="mlsockets")
    with Client.connect(
        url(server) + "?token=s3cret-token&room=1", reconnect=True, backoff=FAST_BACKOFF, timeout=5
    ) as client:
        with pytest.raises(ConnectionClosedError):
            client.emit("drop", 1012, ack=True, timeout=5)
        assert client.emit("echo", "back", ack=True, timeout=5) == "back"
        assert "token=***&room=1" in repr(client)
    assert "reconnected to" in caplog.text and "room=1" in caplog.text
    assert "s3cret-token" not in caplog.text


def test_reconnect_drops_channels_the_server_now_refuses(hub: tuple[FakeHub, Server]) -> None:
    _, server = hub
    with Client.connect(url(server), reconnect=True, backoff=FAST_BACKOFF) as client:
        client.subscribe("room:a")
        client.receive(timeout=5)
        client._channels["forbidden-now"] = None  # as if it had been allowed before
        client.emit("drop", 1001)
        assert client.receive(timeout=5) == ReceivedEvent("subscribed", "c2", "room:a")
        assert client.channels == ("room:a",)


class FixedBackoff(Backoff):
    def delay(self, failures: int, rand: Callable[[], float] = lambda: 1.0) -> float:
        return 0.2


def test_send_while_disconnected_waits_for_the_new_connection(
    hub: tuple[FakeHub, Server],
) -> None:
    _, server = hub
    with Client.connect(url(server), reconnect=True, backoff=FixedBackoff()) as client:
        with pytest.raises(ConnectionClosedError):
            client.emit("drop", 1012, ack=True, timeout=5)
        assert client.connection is None  # the next attempt is 0.2 s away
        assert client.emit("echo", 1, ack=True, timeout=5) == 1
        assert (client.connection_id, client.reconnects) == ("c2", 1)


def test_no_reconnect_after_a_policy_close(hub: tuple[FakeHub, Server]) -> None:
    _, server = hub
    with Client.connect(url(server), reconnect=True, backoff=FAST_BACKOFF) as client:
        client.emit("drop", 1008)
        with pytest.raises(ConnectionClosedError) as info:
            client.receive(timeout=5)
        assert info.value.code == 1008
        assert client.reconnects == 0


def test_reconnect_gives_up_on_a_refusal(hub: tuple[FakeHub, Server]) -> None:
    fake, server = hub
    with Client.connect(url(server), reconnect=True, backoff=FAST_BACKOFF) as client:
        fake.refuse = True
        client.emit("drop", 1012)
        for _ in range(2):  # the failure sticks
            with pytest.raises(InvalidHandshake) as info:
                client.receive(timeout=5)
            assert info.value.status == 401
        assert client.closed


def test_reconnect_gives_up_after_max_attempts(hub: tuple[FakeHub, Server]) -> None:
    _, server = hub
    backoff = Backoff(initial=0.01, maximum=0.02, max_attempts=2)
    client = Client.connect(url(server), reconnect=True, backoff=backoff, timeout=5)
    errors: list[BaseException] = []

    def receive() -> None:
        try:
            client.receive(timeout=5)
        except Exception as exc:
            errors.append(exc)

    reader = threading.Thread(target=receive)
    reader.start()
    server.shutdown(grace=1.0)  # closes with 1001, then nothing listens
    reader.join(5)
    assert [type(e) for e in errors] == [ConnectionRefusedError]
    client.close()


def test_without_reconnect_a_drop_raises(client: Client) -> None:
    client.emit("drop", 1012)
    with pytest.raises(ConnectionClosedError) as info:
        client.receive(timeout=5)
    assert info.value.code == 1012


# -- the policy, as pure functions -------------------------------------------------------


def test_backoff_grows_to_a_cap_with_full_jitter() -> None:
    backoff = Backoff(initial=0.5, maximum=4.0, factor=2.0)
    assert [backoff.cap(n) for n in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert backoff.cap(10_000) == 4.0
    assert backoff.delay(3, rand=lambda: 0.0) == 0.0
    assert backoff.delay(3, rand=lambda: 0.5) == 2.0
    assert all(0 <= backoff.delay(2) <= 2.0 for _ in range(100))
    for bad in ({"initial": -1}, {"initial": 2, "maximum": 1}, {"factor": 0.5}):
        with pytest.raises(ConfigurationError):
            Backoff(**bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        Backoff(max_attempts=0)


def test_retryable() -> None:
    assert retryable(ConnectionClosedOK(1001))
    assert retryable(ConnectionClosedError(1006))
    assert retryable(ConnectionClosedError(1012))
    assert not retryable(ConnectionClosedError(1008))
    assert retryable(ConnectionRefusedError())
    assert retryable(TimeoutError())
    assert retryable(InvalidHandshake("busy", 503))
    assert not retryable(InvalidHandshake("who are you", 401))
    assert not retryable(InvalidHandshake("nope", 403))
    assert retryable(ProtocolError("bad frame"))
    assert not retryable(ValueError())
