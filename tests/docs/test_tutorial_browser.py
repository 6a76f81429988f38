"""The tutorial's page (docs/tutorial.md, step 6) in headless Chromium, served as step 7 says:
``mlsockets serve chat:app`` from examples/tutorial. Two people log in through the form and
chat; presence, the ack and the field errors show on the page.

The browser is Debian's ``chromium`` driven by playwright (as in tests/browser). Without them
the test skips, except in CI (``CI=true``), where that fails.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
WAIT = 15_000  # ms: bounds a failure only


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    """Step 7's command, on a free port; the URL it serves."""
    log = tmp_path / "server.log"
    with open(log, "w") as errors:
        process = subprocess.Popen(
            [sys.executable, "-m", "mlsockets", "serve", "chat:app", "--bind", "127.0.0.1:0"],
            cwd=ROOT / "examples" / "tutorial",
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
            env={k: v for k, v in os.environ.items() if not k.startswith("MLSOCKETS_")},
        )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # "mlsockets X serving chat:app on HOST:PORT"
        match = re.search(r" on (127\.0\.0\.1:\d+)$", line.strip())
        assert match, f"mlsockets serve did not start: {line!r}\n{log.read_text()}"
        yield f"http://{match[1]}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        assert process.stdout is not None
        process.stdout.close()


def open_chat(browser: Any, url: str, username: str, password: str) -> Any:
    """A browser of its own (cookies), logged in through the form, on /chat."""
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(WAIT)
    page.goto(f"{url}/chat")  # not logged in: @login_required sends us to the form
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button")
    page.wait_for_url(f"{url}/")
    page.goto(f"{url}/chat")
    return page


def test_the_tutorial_page_chats_with_presence(server: str, browser: Any) -> None:
    alice = open_chat(browser, server, "alice", "wonderland")
    alice.wait_for_function("document.getElementById('here').textContent === 'Alice'")
    bob = open_chat(browser, server, "bob", "builder")
    for page in (alice, bob):
        page.wait_for_function(
            "document.getElementById('here').textContent.split(', ').sort().join() === 'Alice,Bob'"
        )

    bob.fill("#text", "hello from Chromium")
    bob.click("#send button")
    # Alice gets the broadcast, Bob his ack: one line each.
    for page in (alice, bob):
        page.wait_for_function(
            "[...document.querySelectorAll('#messages li')].map((li) => li.textContent)"
            ".join('|') === 'bob: hello from Chromium'"
        )

    bob.fill("#text", "")
    bob.click("#send button")
    bob.wait_for_function("document.getElementById('error').textContent.includes('text')")

    bob.context.close()
    alice.wait_for_function("document.getElementById('here').textContent === 'Alice'")
    alice.context.close()
