"""The chat example (examples/chat) as a newcomer meets it: served by ``mlsockets serve`` in
a subprocess, used by two users logged in through its login page, each in real headless
Chromium (its own browser context, so its own session cookie).

The browser test writes the README's screenshot to docs/screenshot-chat.png when that file is
missing or ``UPDATE_SCREENSHOT=1``; otherwise it takes it in a temporary directory, so that
``make test`` leaves the work tree alone. The fixtures (``browser``: skip without Chromium or
playwright, fail under ``CI=true``) are in conftest.py.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "docs" / "screenshot-chat.png"
PASSWORD = "wonderland"
WAIT = 10_000  # ms; only bounds a failure
RECONNECT_WAIT = 20_000  # ms: the page's backoff is 0.5 s doubling up to 5 s, with jitter
VIEWPORT = {"width": 1100, "height": 620}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class ChatServer:
    """``python -m mlsockets serve "examples.chat:create_app()"``; :meth:`restart` keeps the
    port (the pages reconnect to the same address)."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.port = _free_port()
        self.proc: subprocess.Popen[str] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.starts += 1
        log = self.tmp_path / f"chat-{self.starts}.log"
        bind = f"127.0.0.1:{self.port}"
        with open(log, "w") as stderr:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mlsockets", "serve", "examples.chat:create_app()",
                 "--bind", bind],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                env={**os.environ, "MLSOCKETS_BIND": bind, "PYTHONUNBUFFERED": "1"},
            )  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # "mlsockets X serving ... on 127.0.0.1:PORT"
        if " serving " not in line:
            self.stop()
            raise RuntimeError(f"the chat app did not start:\n{line}{log.read_text()}")

    def stop(self) -> None:
        """SIGKILL: no closing handshake, like a crash."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture
def chat_server(tmp_path: Path) -> Iterator[ChatServer]:
    server = ChatServer(tmp_path)
    server.start()
    yield server
    server.stop()


class ChatPage:
    """One user's chat page, logged in through the login form."""

    def __init__(self, browser: Any, server: ChatServer, user: str) -> None:
        self.context = browser.new_context(viewport=VIEWPORT)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.goto(server.url + "/")  # redirected to the login page
        self.page.select_option("select[name=username]", user)
        self.page.fill("input[name=password]", PASSWORD)
        self.page.click("form button[type=submit]")
        self.page.wait_for_url(server.url + "/")
        self.wait("() => window.chat && window.chat.sock.state === 'open'")

    def wait(self, expression: str, arg: object = None, timeout: float = WAIT) -> Any:
        return self.page.wait_for_function(expression, arg=arg, timeout=timeout).json_value()

    def js(self, expression: str, arg: object = None) -> Any:
        return self.page.evaluate(expression, arg)

    def text(self, selector: str) -> str:
        return str(self.page.locator(selector).inner_text())

    def wait_text(self, selector: str, text: str, timeout: float = WAIT) -> None:
        """Wait until the element's text contains ``text``."""
        self.wait(
            "([sel, text]) => (document.querySelector(sel)?.innerText || '').includes(text)",
            [selector, text],
            timeout,
        )

    def wait_presence(self, users: list[str], timeout: float = WAIT) -> None:
        self.wait(
            "(ids) => [...document.querySelectorAll('#presence li')]"
            ".map(li => li.dataset.user).sort().join() === ids.join()",
            sorted(users),
            timeout,
        )

    def send(self, text: str) -> None:
        self.page.fill("#text", text)
        self.page.click("#composer button")

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def login(browser: Any) -> Iterator[Callable[[ChatServer, str], ChatPage]]:
    pages: list[ChatPage] = []

    def open_(server: ChatServer, user: str) -> ChatPage:
        page = ChatPage(browser, server, user)
        pages.append(page)
        return page

    yield open_
    errors = [error for page in pages for error in page.errors]
    for page in pages:
        try:
            page.close()
        except Exception:  # closed by the test already
            pass
    assert not errors, f"uncaught exceptions in the page: {errors}"


def test_two_users_chat(
    chat_server: ChatServer, login: Callable[[ChatServer, str], ChatPage], tmp_path: Path
) -> None:
    alice = login(chat_server, "alice")
    bob = login(chat_server, "bob")

    # Both are in the lobby, and each sees the other in the room's presence list.
    for page in (alice, bob):
        assert page.text("#room-name") == "# lobby"
        page.wait_presence(["alice", "bob"])
    assert "Alice (you)" in alice.text("#presence")

    # Typing indicator: to the others only.
    bob.page.fill("#text", "Hi")
    alice.wait_text("#typing", "Bob is typing")
    assert bob.text("#typing") == ""

    # Messages both ways; the sender shows its own from the ack (skip_sender), once.
    bob.send("Hi @alice, lunch today?")
    alice.wait_text("#messages", "Hi @alice, lunch today?")
    alice.wait("() => document.querySelector('#typing').innerText === ''")  # the message ends it
    alice.wait_text("#notices", "Bob mentioned you in #lobby")  # on private-user.alice
    assert bob.js("() => document.querySelectorAll('#messages li').length") == 1

    # An invalid message is refused by the schema; the error reply is shown.
    alice.send("   ")
    alice.wait_text("#send-error", "text: Length must be between 1 and 500.")
    alice.send("Hello Bob! Sure, at noon.")
    bob.wait_text("#messages", "Hello Bob! Sure, at noon.")
    assert alice.text("#send-error") == ""
    assert alice.text("#messages").count("Hello Bob!") == 1

    # A private notification from a view (POST /notify) reaches Bob only.
    alice.page.select_option("#notify select[name=to]", "bob")
    alice.page.fill("#notify input[name=text]", "Bring the menus")
    alice.page.click("#notify button")
    bob.wait_text("#notices", "Alice notified you")
    assert "Bring the menus" in bob.text("#notices")
    alice.wait_text("#notify-result", "Sent to Bob.")
    assert "Bring the menus" not in alice.text("#notices")

    # Only Bob may subscribe to Bob's private channel.
    code = bob.js("() => chat.sock.subscribe('private-user.alice').then(() => 'ok', e => e.code)")
    assert code == "forbidden"

    # The topic changes over HTTP (sock.fetch + X-Socket-ID): Bob's page from the response,
    # Alice's from the broadcast.
    bob.page.click("#topic-edit")
    bob.page.fill("#topic-form input[name=topic]", "Lunch plans")
    bob.page.click("#topic-form button")
    bob.wait_text("#topic", "Lunch plans")
    alice.wait_text("#topic", "Lunch plans")

    # Mid-conversation: Bob types again. This is the README's screenshot.
    bob.send("The new place on Fifth Street?")
    alice.wait_text("#messages", "Fifth Street")
    bob.page.fill("#text", "I'll book")
    alice.wait_text("#typing", "Bob is typing")
    _screenshot(alice, tmp_path)

    # The server restarts: both pages reconnect by themselves, subscribe again, chat again.
    chat_server.restart()
    for page in (alice, bob):
        reconnected = "() => chat.sock.reconnects >= 1 && chat.sock.state === 'open'"
        page.wait(reconnected, timeout=RECONNECT_WAIT)
        page.wait_text("#status", "connected")
        page.wait_presence(["alice", "bob"])
    bob.send("Back online?")
    alice.wait_text("#messages", "Back online?")
    alice.send("Yes!")
    bob.wait_text("#messages", "Yes!")

    # Bob's page closes: Alice sees him leave.
    bob.close()
    alice.wait_presence(["alice"])


def _screenshot(page: ChatPage, tmp_path: Path) -> None:
    taken = tmp_path / "screenshot-chat.png"
    page.page.screenshot(path=str(taken))
    assert taken.stat().st_size < 200_000, "the screenshot is too large to commit"
    if not SCREENSHOT.exists() or os.environ.get("UPDATE_SCREENSHOT") == "1":
        shutil.copyfile(taken, SCREENSHOT)


# -- the same app without a browser: the handlers through the extension's test client --------


def test_handlers_without_a_browser() -> None:
    from examples.chat import create_app
    from examples.chat.sockets import sockets
    from examples.chat.users import USERS
    from mlsockets.client.events import ErrorReply

    app = create_app({"TESTING": True})
    alice = sockets.test_client(app, user=USERS["alice"])  # a Flask-Login user object
    bob = sockets.test_client(app, user=USERS["bob"])
    for client in (alice, bob):
        client.subscribe("room:lobby")
    assert bob.subscribe("presence-room.lobby")["members"] == [
        {"user_id": "bob", "info": {"name": "Bob"}}
    ]
    bob.subscribe("private-user.bob")
    with pytest.raises(ErrorReply) as refused:
        alice.subscribe("private-user.bob")
    assert refused.value.code == "forbidden"
    with pytest.raises(ErrorReply) as unknown:
        alice.subscribe("room:nowhere")
    assert unknown.value.code == "forbidden"
    bob.get_received()

    message = alice.emit("chat.send", {"room": "lobby", "text": "  hi @Bob  "})
    assert message["text"] == "hi @Bob" and message["user_id"] == "alice"
    received = {(e.event, e.channel): e.data for e in bob.get_received()}
    assert received == {
        ("chat.message", "room:lobby"): message,
        ("chat.mention", "private-user.bob"): message,
    }
    assert alice.get_received() == []  # skip_sender: the ack is the sender's copy
    assert alice.emit("room.info", {"room": "lobby"})["messages"] == [message]

    with pytest.raises(ErrorReply) as invalid:
        alice.emit("chat.send", {"room": "kitchen", "text": "x" * 501})
    assert invalid.value.code == "invalid"
    assert set(invalid.value.fields) == {"room", "text"}

    # POST /notify from a logged-in Flask test client reaches Bob's connections only.
    http = app.test_client()
    assert http.post("/login", data={"username": "alice", "password": PASSWORD}).status_code == 302
    assert http.post("/notify", data={"to": "bob", "text": "hello"}).json == {"delivered": 1}
    assert [(e.event, e.data["text"]) for e in bob.get_received()] == [("notify", "hello")]
    assert alice.get_received() == []
    assert http.post("/notify", data={"to": "bob", "text": ""}).status_code == 400
