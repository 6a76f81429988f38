"""The tutorial's finished app (examples/tutorial/chat.py, built by docs/tutorial.md) served
on real sockets and driven by the Python client, as step 7 does by hand; and the tutorial's
own tests (examples/tutorial/test_chat.py, step 8) run by pytest as a reader would run them.

test_code_samples.py checks that those two files are exactly the steps of the page.
"""

from __future__ import annotations

import http.client
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlsockets import InvalidHandshake
from mlsockets.client import Client, ErrorReply, ReceivedEvent
from mlsockets.transport.gevent import Server, ServerOptions

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 10.0


@pytest.fixture(scope="module")
def address() -> Iterator[str]:
    """``host:port`` of the tutorial app on a real mlsockets server in this (patched) process."""
    from examples.tutorial.chat import app

    server = Server(app, ["127.0.0.1:0"], options=ServerOptions(ping_interval=None))
    server.start()
    host, port = server.addresses[0]
    yield f"{host}:{port}"
    server.shutdown(grace=2.0)


def login(address: str, username: str, password: str) -> str:
    """Log in through the app's form; the ``Cookie`` header value of the session it set."""
    host, port = address.rsplit(":", 1)
    web = http.client.HTTPConnection(host, int(port), timeout=TIMEOUT)
    try:
        form = urllib.parse.urlencode({"username": username, "password": password})
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        web.request("POST", "/login", form, headers)
        response = web.getresponse()
        response.read()
        assert response.status == 302, response.status
        cookie = response.getheader("Set-Cookie")
        assert cookie is not None
        return cookie.split(";")[0]
    finally:
        web.close()


def get(address: str, path: str, cookie: str) -> tuple[int, str]:
    host, port = address.rsplit(":", 1)
    web = http.client.HTTPConnection(host, int(port), timeout=TIMEOUT)
    try:
        web.request("GET", path, headers={"Cookie": cookie})
        response = web.getresponse()
        return response.status, response.read().decode()
    finally:
        web.close()


@pytest.fixture
def clients() -> Iterator[list[Client]]:
    opened: list[Client] = []
    yield opened
    for client in opened:
        client.close()


def connect(address: str, clients: list[Client], **options: Any) -> Client:
    client = Client.connect(f"ws://{address}/ws", timeout=TIMEOUT, **options)
    clients.append(client)
    return client


def next_event(client: Client, event: str) -> ReceivedEvent:
    """The next ``event`` the client receives, skipping others (mls.presence...)."""
    while True:
        received = client.receive(timeout=TIMEOUT)
        if received.event == event:
            return received


def test_two_browsers_chat_through_the_server(address: str, clients: list[Client]) -> None:
    alice = connect(address, clients, headers={"Cookie": login(address, "alice", "wonderland")})
    assert alice.user_id == "alice"
    members = alice.subscribe("presence-room.lobby")["members"]
    assert [m["user_id"] for m in members] == ["alice"]
    alice.subscribe("room:lobby")

    bob = connect(address, clients, headers={"Cookie": login(address, "bob", "builder")})
    bob.subscribe("room:lobby")
    bob.subscribe("presence-room.lobby")
    joined = next_event(alice, "mls.joined")
    assert joined.data["member"] == {"user_id": "bob", "info": {"name": "Bob"}}

    ack = bob.emit("chat.send", {"room": "lobby", "text": "hello"}, ack=True)
    assert ack == {"room": "lobby", "text": "hello", "from": "bob"}
    message = next_event(alice, "chat.message")
    assert (message.channel, message.data) == ("room:lobby", ack)

    with pytest.raises(ErrorReply) as invalid:
        bob.emit("chat.send", {"room": "kitchen", "text": ""}, ack=True)
    assert invalid.value.code == "invalid"
    assert set(invalid.value.fields or {}) == {"room", "text"}
    with pytest.raises(ErrorReply) as forbidden:
        bob.subscribe("room:kitchen")
    assert forbidden.value.code == "forbidden"

    # The sender got its message as the ack only: nothing is waiting for bob but presence.
    with pytest.raises(TimeoutError):
        while True:
            assert bob.receive(timeout=0.5).event.startswith("mls.")

    bob.close()
    left = next_event(alice, "mls.left")
    assert left.data["member"]["user_id"] == "bob"


def test_the_page_and_the_refusals(address: str, clients: list[Client]) -> None:
    cookie = login(address, "alice", "wonderland")
    status, page = get(address, "/chat", cookie)
    assert status == 200
    assert '<script src="/ws/mlsockets.js">' in page
    status, script = get(address, "/ws/mlsockets.js", cookie)
    assert (status, "MLSockets" in script) == (200, True)
    with pytest.raises(InvalidHandshake) as anonymous:
        connect(address, clients)
    assert anonymous.value.status == 401
    with pytest.raises(InvalidHandshake) as wrong_password:
        connect(address, clients, headers={"Cookie": "session=forged"})
    assert wrong_password.value.status == 401


def test_the_tutorial_tests_pass() -> None:
    """``pytest test_chat.py`` as step 8 says (in a fresh interpreter, not patched)."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_chat.py"],
        cwd=ROOT / "examples" / "tutorial",
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 passed" in result.stdout, result.stdout
