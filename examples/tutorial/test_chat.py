"""Tests of chat.py (docs/tutorial.md, step 8): run them with pytest test_chat.py."""

import pytest
from chat import USERS, app, sockets

from mlsockets import InvalidHandshake
from mlsockets.client import ErrorReply


@pytest.fixture
def alice():
    ws = sockets.test_client(app, user=USERS["alice"])
    yield ws
    ws.disconnect()


@pytest.fixture
def bob():
    ws = sockets.test_client(app, user=USERS["bob"])
    yield ws
    ws.disconnect()


def test_a_message_reaches_the_room_but_not_its_sender(alice, bob):
    alice.subscribe("room:lobby")
    bob.subscribe("room:lobby")
    ack = alice.emit("chat.send", {"room": "lobby", "text": "hi"})
    assert ack == {"room": "lobby", "text": "hi", "from": "alice"}
    event = bob.receive()
    assert (event.event, event.channel, event.data) == ("chat.message", "room:lobby", ack)
    assert alice.get_received() == []


def test_bad_messages_get_field_errors(alice):
    with pytest.raises(ErrorReply) as error:
        alice.emit("chat.send", {"room": "lobby", "text": ""})
    assert error.value.code == "invalid"
    assert list(error.value.fields) == ["text"]


def test_only_existing_rooms(alice):
    with pytest.raises(ErrorReply) as error:
        alice.subscribe("room:kitchen")
    assert error.value.code == "forbidden"


def test_presence(alice, bob):
    alice.subscribe("presence-room.lobby")
    alice.get_received()
    reply = bob.subscribe("presence-room.lobby")
    assert [m["info"]["name"] for m in reply["members"]] == ["Alice", "Bob"]
    joined = alice.receive()
    assert (joined.event, joined.data["member"]["user_id"]) == ("mls.joined", "bob")
    bob.disconnect()
    assert alice.receive().event == "mls.left"


def test_the_handshake_needs_a_login():
    browser = app.test_client()
    with pytest.raises(InvalidHandshake) as refused:
        sockets.test_client(app, headers={})
    assert refused.value.status == 401
    browser.post("/login", data={"username": "bob", "password": "builder"})
    cookie = browser.get_cookie("session")
    ws = sockets.test_client(app, headers={"Cookie": f"session={cookie.value}"})
    assert ws.user_id == "bob"
