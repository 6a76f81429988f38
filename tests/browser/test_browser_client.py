"""mlsockets.js in headless Chromium: connection, requests and acks, channels and the
X-Socket-ID skip, final closes, and the application heartbeat.

Every wait is for a condition, with a generous deadline; nothing asserts on durations.
"""

from __future__ import annotations

from typing import Any

LOBBY = "room:lobby"


def broadcast(server: Any, text: str, to: str = LOBBY) -> Any:
    """Publish ``chat.message`` from the test process (no X-Socket-ID: nobody skipped)."""
    return server.post("/broadcast", {"event": "chat.message", "to": to, "data": {"text": text}})


def test_connects_with_the_subprotocol_and_reads_the_welcome(server: Any, open_tab: Any) -> None:
    tab = open_tab(server, "alice")
    seen = tab.js(
        """() => ({
            id: T.sock.id, userId: T.sock.userId, heartbeat: T.sock.heartbeat,
            state: T.sock.state, states: T.names(), welcomes: T.welcomes,
            url: T.sock.url, subprotocol: T.sock.subprotocol, socketId: MLSockets.socketId(),
            firstEvent: T.events[0].event,
        })"""
    )
    assert isinstance(seen["id"], str) and seen["id"]
    assert seen["userId"] == "alice"
    assert seen["heartbeat"] == 2
    assert seen["state"] == "open"
    assert seen["states"] == ["connecting", "open"]
    assert seen["welcomes"] == [{"connection_id": seen["id"], "heartbeat": 2, "user_id": "alice"}]
    # No URL given: the endpoint the script was served from (/ws/mlsockets.js -> /ws).
    assert seen["url"] == f"ws://127.0.0.1:{server.port}/ws"
    assert seen["subprotocol"] == "mlsockets.json.v1"
    assert seen["socketId"] == seen["id"]
    assert seen["firstEvent"] == "mls.welcome"
    assert server.get("/stats") == {"connects": 1, "connections": 1}


def test_requests_resolve_with_the_reply_and_reject_with_error_replies(
    server: Any, open_tab: Any
) -> None:
    tab = open_tab(server, "alice")
    result = tab.js(
        """async () => {
            const s = T.sock;
            const describe = (e) => ({name: e.name, code: e.code, message: e.message,
                                      fields: e.fields, reply: e instanceof MLSockets.ErrorReply,
                                      base: e instanceof MLSockets.MLSocketsError});
            const settle = (p) => p.then((data) => ({data}), (e) => ({error: describe(e)}));
            let badName = null;
            try { s.emit("", 1); } catch (e) { badName = e.name; }
            return {
                echo: await s.request("echo", {n: 1, text: "é"}),
                ack: await s.emit("echo", [1, 2], {ack: true}),
                nothing: await s.request("echo"),
                unknown: await settle(s.request("no.such.event", {})),
                invalid: await settle(s.request("chat.send", {room: "room:x", text: ""})),
                timeout: await settle(s.request("sleep", 0.5, {timeout: 50})),
                fired: s.emit("echo", "fire and forget"),
                badName: badName,
                after: await s.request("echo", "still open"),
            };
        }"""
    )
    assert result["echo"] == {"n": 1, "text": "é"}
    assert result["ack"] == [1, 2]
    assert result["nothing"] is None
    unknown = result["unknown"]["error"]
    assert unknown["name"] == "ErrorReply" and unknown["reply"] and unknown["base"]
    assert unknown["code"] == "unknown_event"
    invalid = result["invalid"]["error"]
    assert invalid["code"] == "invalid" and "text" in invalid["fields"]
    assert result["timeout"]["error"]["name"] == "TimeoutError"
    assert result["fired"] is True
    assert result["badName"] == "TypeError"
    assert result["after"] == "still open"


def test_channel_messages_and_the_socket_id_skip(server: Any, open_tab: Any) -> None:
    alice, bob = open_tab(server, "alice"), open_tab(server, "bob")
    for tab in (alice, bob):
        assert tab.js("() => T.subscribe('room:lobby')") is None  # not a presence channel
    post = """([text, helper]) => {
        const init = {method: "POST", headers: {"Content-Type": "application/json"},
                      body: JSON.stringify({event: "chat.message", to: "room:lobby",
                                            data: {text}})};
        const fetch = helper ? MLSockets.fetch : (...args) => T.sock.fetch(...args);
        return fetch("/broadcast", init).then((response) => response.json());
    }"""
    # sock.fetch sends X-Socket-ID: the server leaves the sender out.
    first = alice.js(post, ["first", False])
    assert first == {"receivers": 1, "socket_id": alice.js("() => T.sock.id")}
    # MLSockets.fetch uses the page's most recent client.
    second = bob.js(post, ["second", True])
    assert second == {"receivers": 1, "socket_id": bob.js("() => T.sock.id")}
    # Without the header (from the test process), everyone receives it.
    assert broadcast(server, "third")["receivers"] == 2
    for tab in (alice, bob):
        tab.wait("() => T.texts('room:lobby').includes('third')")
    # One connection's messages arrive in order: nothing else can still be on its way.
    assert alice.js("() => T.texts('room:lobby')") == ["second", "third"]
    assert bob.js("() => T.texts('room:lobby')") == ["first", "third"]
    # Channel messages reach the client's own listeners too, with their channel.
    envelope = alice.js("() => T.events.find((e) => e.event === 'chat.message')")
    assert envelope == {"event": "chat.message", "channel": LOBBY, "data": {"text": "second"}}

    # The header is for the page's own origin only: other origins never see the id.
    seen: list[dict[str, str]] = []

    def elsewhere(route: Any) -> None:
        seen.append(route.request.headers)
        route.fulfill(status=200, body="{}", headers={"Access-Control-Allow-Origin": "*"})

    alice.page.route("http://elsewhere.test/**", elsewhere)
    assert alice.js("() => T.sock.fetch('http://elsewhere.test/api').then((r) => r.status)") == 200
    assert len(seen) == 1 and "x-socket-id" not in seen[0]
    assert alice.js("() => T.sock.headers()") == {"X-Socket-ID": first["socket_id"]}

    # A refused subscription rejects with the server's error and is forgotten.
    refused = alice.js("() => T.sock.subscribe('private-secret').catch((e) => [e.name, e.code])")
    assert refused == ["ErrorReply", "forbidden"]
    assert alice.js("() => T.sock.channels") == [LOBBY]

    # A request whose handler publishes to the channel.
    assert alice.js("() => T.sock.request('chat.send', {room: 'room:lobby', text: 'hi'})") == {
        "ok": True
    }
    bob.wait("() => T.texts('room:lobby').includes('hi')")

    # After unsubscribe, the channel's messages stop.
    assert bob.js("() => T.subs['room:lobby'].unsubscribe()") == {"channel": LOBBY}
    assert bob.js("() => T.sock.channels") == []
    broadcast(server, "4")
    alice.wait("() => T.texts('room:lobby').includes('4')")
    bob.js("() => T.sock.request('echo')")  # anything sent to bob before this has arrived
    assert bob.js("() => T.texts('room:lobby')") == ["first", "third", "hi"]


def test_a_policy_close_is_final_until_connect(server: Any, open_tab: Any) -> None:
    tab = open_tab(server, "alice", backoff={"initial": 50, "max": 100})
    outcome = tab.js(
        """() => T.sock.request("kick").then(
            () => null,
            (e) => ({name: e.name, code: e.code, closed: e instanceof MLSockets.ClosedError}))"""
    )
    assert outcome == {"name": "ClosedError", "code": 1008, "closed": True}
    tab.wait("() => T.sock.state === 'closed'")
    tab.page.wait_for_timeout(1000)  # ten times the backoff cap: a retry would have happened
    assert tab.js("() => T.names()") == ["connecting", "open", "closed"]
    assert tab.js("() => T.sock.lastClose") == {"code": 1008, "reason": "kicked", "wasClean": True}
    assert server.get("/stats")["connects"] == 1
    # Closed for good: emits are dropped, requests and subscriptions rejected.
    refused = tab.js(
        """async () => ({
            emitted: T.sock.emit("echo", 1),
            request: await T.sock.request("echo", 1).catch((e) => e.name),
            subscribe: await T.sock.subscribe("room:x").catch((e) => e.name),
        })"""
    )
    assert refused == {"emitted": False, "request": "ClosedError", "subscribe": "ClosedError"}

    # connect() starts again; close() ends it, without reconnecting either.
    assert tab.js("() => T.sock.connect().ready().then((s) => s.state)") == "open"
    assert tab.js("() => T.sock.reconnects") == 1
    assert server.get("/stats") == {"connects": 2, "connections": 1}
    tab.js("() => T.sock.close()")
    assert tab.js("() => T.sock.state") == "closed"
    tab.page.wait_for_timeout(500)
    assert tab.js("() => T.names().slice(-3)") == ["connecting", "open", "closed"]
    assert server.get("/stats")["connects"] == 2


def test_a_silent_server_is_detected_by_the_heartbeat(start_server: Any, open_tab: Any) -> None:
    server = start_server(heartbeat=0.5)
    tab = open_tab(server, "alice")
    assert tab.js("() => T.subscribe('room:lobby')") is None
    first_id = tab.js("() => T.sock.id")
    server.pause()  # the TCP connection stays up; nothing answers mls.ping any more
    try:
        state = tab.wait("() => T.sock.state === 'reconnecting' && T.states.at(-1)")
        assert state["code"] == 1006 and state["reason"] == "heartbeat timeout"
        # While reconnecting, requests are queued and sent after the next welcome.
        tab.js("() => { T.queued = T.sock.request('echo', 'queued', {timeout: 30000}); }")
    finally:
        server.resume()
    assert tab.js("() => T.queued") == "queued"
    assert tab.js("() => T.sock.state") == "open"
    assert tab.js("() => T.sock.reconnects") == 1
    assert tab.js("() => T.sock.id") != first_id
    # The channel was subscribed again on the new connection.
    broadcast(server, "x")
    tab.wait("() => T.texts('room:lobby').includes('x')")


def test_while_reconnecting_emits_are_queued_up_to_the_limit(server: Any, open_tab: Any) -> None:
    tab = open_tab(server, "alice", queue=2, tokenFunction=True)
    assert tab.js("() => T.subscribe('room:q')") is None
    server.stop()
    tab.wait("() => T.sock.state === 'reconnecting'")
    queued = tab.js(
        """async () => {
            const first = T.sock.request("echo", "queued request");
            T.queued = first;
            return {
                emitted: T.sock.emit("chat.send", {room: "room:q", text: "queued emit"}),
                dropped: T.sock.emit("chat.send", {room: "room:q", text: "dropped"}),
                full: await T.sock.request("echo", 1).catch((e) => e.name),
            };
        }"""
    )
    assert queued == {"emitted": True, "dropped": False, "full": "QueueFullError"}
    server.start()  # same port
    assert tab.js("() => T.queued") == "queued request"
    # The channel was subscribed again before the queue was sent: the emit's broadcast
    # reaches this page.
    tab.wait("() => T.texts('room:q').includes('queued emit')")
    assert tab.js("() => T.texts('room:q')") == ["queued emit"]
    # The token function ran before each attempt, including the failed ones.
    assert tab.js("() => T.tokenCalls") >= 2
