"""Fixtures for tests/browser: the JS client in real headless Chromium, driven by playwright.

The server under test runs as a subprocess (``browser_server.py``), so that a test can kill
it and start it again on the same port. The browser is Debian's ``chromium`` package, driven
through ``executable_path`` (playwright's own browser download is not used).

Without playwright or chromium the tests skip, except when ``CI=true``: then they fail, so
that a CI image that lost the browser cannot turn the suite green by skipping it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mlsockets.tokens import make_token

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SECRET = "browser-tests-secret-0123456789"


#: Generous deadlines (ms) for conditions awaited in the page: they only bound a failure.
WAIT = 10_000
#: Fast reconnection, so that a restart is noticed and repaired within a second or two.
FAST_BACKOFF = {"initial": 100, "max": 1000, "factor": 2}

#: Installed in each page: starts the client and records what it sees in ``window.T``.
HARNESS = """(options) => {
  const T = (window.T = {states: [], events: [], welcomes: [], messages: [],
                         presence: [], joined: [], left: [], subs: {}});
  if (options.tokenFunction) {  // a fresh token per attempt, as a real page would fetch
    const token = options.token;
    T.tokenCalls = 0;
    options.token = () => { T.tokenCalls += 1; return Promise.resolve(token); };
  }
  const sock = (T.sock = new MLSockets.Client(options));
  sock.on("state", (state, info) => T.states.push(Object.assign({state}, info)));
  sock.on("welcome", (data) => T.welcomes.push(data));
  sock.on("*", (event, data, envelope) => T.events.push(envelope));
  T.subscribe = (channel) => sock.subscribe(channel, {
    onMessage: (event, data, envelope) => T.messages.push({channel, event, data}),
    onPresence: (members) => T.presence.push({channel, members}),
    onJoin: (member) => T.joined.push({channel, member}),
    onLeave: (member) => T.left.push({channel, member}),
  }).then((sub) => { T.subs[channel] = sub; return sub.members; });
  T.texts = (channel) => T.messages.filter((m) => m.channel === channel).map((m) => m.data.text);
  T.ids = (members) => members.map((m) => m.user_id).sort();
  T.names = () => T.states.map((s) => s.state);
  return sock.ready().then(() => sock.id);
}"""


class BrowserServer:
    """``browser_server.py`` in a subprocess; :meth:`restart` keeps the port."""

    def __init__(self, tmp_path: Path, heartbeat: float) -> None:
        self.tmp_path = tmp_path
        self.heartbeat = heartbeat
        self.port = 0
        self.proc: subprocess.Popen[str] | None = None
        self._logs = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._logs += 1
        self.log = self.tmp_path / f"server-{self._logs}.log"
        with open(self.log, "w") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gevent.monkey", str(HERE / "browser_server.py"),
                 "--port", str(self.port), "--secret", SECRET,
                 "--heartbeat", str(self.heartbeat)],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("listening "):
            self.stop()
            raise RuntimeError(f"the test server did not start:\n{self.log.read_text()}")
        self.port = int(line.split()[1])

    def stop(self) -> None:
        """Kill the server (SIGKILL: no closing handshake, like a crash)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)  # in case a test paused it
            proc.kill()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()

    def restart(self) -> None:
        """Kill the server and start a new one on the same port."""
        self.stop()
        self.start()

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): its connections stay open but nothing answers."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=10) as response:
            return json.load(response)

    def post(self, path: str, body: object) -> Any:
        request = urllib.request.Request(
            self.url + path,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., BrowserServer]]:
    """``start_server(heartbeat=2.0)`` starts a test server; all are killed at teardown."""
    servers: list[BrowserServer] = []

    def start(heartbeat: float = 2.0) -> BrowserServer:
        server = BrowserServer(tmp_path, heartbeat)
        servers.append(server)
        server.start()
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def server(start_server: Callable[..., BrowserServer]) -> BrowserServer:
    return start_server()


class Tab:
    """One page in its own browser context (own cookies), with the harness running."""

    def __init__(self, context: Any, page: Any) -> None:
        self.context = context
        self.page = page
        self.errors: list[str] = []
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))

    def js(self, expression: str, arg: object = None) -> Any:
        """Evaluate ``expression`` (a function source, or an expression) in the page."""
        return self.page.evaluate(expression, arg)

    def wait(self, expression: str, arg: object = None, timeout: float = WAIT) -> Any:
        """Wait until ``expression`` is truthy in the page; return its value."""
        return self.page.wait_for_function(expression, arg=arg, timeout=timeout).json_value()

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def open_tab(browser: Any) -> Iterator[Callable[..., Tab]]:
    """``open_tab(server, user, **client_options)`` opens the test page as ``user`` and
    starts a client that reconnects fast; the tabs are closed after the test, which fails
    if a page raised an uncaught exception."""
    tabs: list[Tab] = []

    def open_(server: BrowserServer, user: str, **options: Any) -> Tab:
        context = browser.new_context()
        tab = Tab(context, context.new_page())
        tabs.append(tab)
        tab.page.goto(server.url + "/")
        token = make_token(SECRET, user, ttl=600, info={"name": user.title()})
        tab.js(HARNESS, {"token": token, "backoff": FAST_BACKOFF, **options})
        return tab

    yield open_
    errors = [error for tab in tabs for error in tab.errors]
    for tab in tabs:
        try:
            tab.close()
        except Exception:  # closed by the test already
            pass
    assert not errors, f"uncaught exceptions in the page: {errors}"
