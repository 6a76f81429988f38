"""mlsockets.js in headless Chromium with two users (two browser contexts): presence
channels, and a server restart that both pages survive by themselves."""

from __future__ import annotations

from typing import Any

ROOM = "presence-room.1"
LOBBY = "room:lobby"


def test_presence_members_join_and_leave(server: Any, open_tab: Any) -> None:
    alice = open_tab(server, "alice")
    members = alice.js("(room) => T.subscribe(room)", ROOM)
    assert members == [{"user_id": "alice", "info": {"name": "Alice"}}]
    assert alice.js("() => T.presence") == [{"channel": ROOM, "members": members}]

    bob = open_tab(server, "bob")
    assert bob.js("(room) => T.subscribe(room).then(T.ids)", ROOM) == ["alice", "bob"]
    joined = alice.wait("() => T.joined.length && T.joined")
    assert joined == [{"channel": ROOM, "member": {"user_id": "bob", "info": {"name": "Bob"}}}]
    assert alice.js("(room) => T.ids(T.subs[room].members)", ROOM) == ["alice", "bob"]
    # The presence events reach the client's own listeners as well.
    assert alice.js("() => T.events.some((e) => e.event === 'mls.joined')") is True

    bob.close()  # the page goes away: its connection closes, alice sees bob leave
    left = alice.wait("() => T.left.length && T.left")
    assert left == [{"channel": ROOM, "member": {"user_id": "bob", "info": {"name": "Bob"}}}]
    assert alice.js("(room) => T.ids(T.subs[room].members)", ROOM) == ["alice"]


def test_both_pages_reconnect_and_resubscribe_after_a_restart(server: Any, open_tab: Any) -> None:
    tabs = [open_tab(server, "alice"), open_tab(server, "bob")]
    for tab in tabs:
        tab.js("(channels) => Promise.all(channels.map(T.subscribe))", [LOBBY, ROOM])
    tabs[0].wait("(room) => T.ids(T.subs[room].members).length === 2", ROOM)

    server.restart()  # SIGKILL, then a new process on the same port: no state survives
    for tab in tabs:
        tab.wait("() => T.sock.reconnects === 1 && T.sock.state === 'open'")
        assert "reconnecting" in tab.js("() => T.names()")
        # Subscribed again on the new server: presence is rebuilt from both pages.
        tab.wait("(room) => T.ids(T.subs[room].members).length === 2", ROOM)
        assert tab.js("(room) => T.subs[room].subscribed", ROOM) is True

    sent = server.post(
        "/broadcast", {"event": "chat.message", "to": LOBBY, "data": {"text": "after restart"}}
    )
    assert sent["receivers"] == 2
    for tab in tabs:
        tab.wait("(lobby) => T.texts(lobby).includes('after restart')", LOBBY)
    assert server.get("/stats") == {"connects": 2, "connections": 2}
