"""A graceful restart (SIGTERM: every WebSocket gets Close 1001 Going Away) that the page
survives by itself; test_browser_presence.py covers a crash (SIGKILL, no Close at all)."""

from __future__ import annotations

import signal
from typing import Any

LOBBY = "room:lobby"


def test_page_reconnects_after_a_1001_from_a_graceful_restart(server: Any, open_tab: Any) -> None:
    tab = open_tab(server, "alice")
    tab.js("(channel) => T.subscribe(channel)", LOBBY)
    proc = server.proc
    proc.send_signal(signal.SIGTERM)  # closes every WebSocket with 1001, then exits
    assert proc.wait(timeout=30) == 0
    # The page saw the 1001 and started retrying (its attempts fail with 1006 while the port
    # is closed).
    tab.wait("() => T.states.some((s) => s.state === 'reconnecting')")
    server.stop()  # reaps the exited process and closes its pipe
    server.start()  # the same port
    tab.wait("() => T.sock.state === 'open' && T.sock.reconnects >= 1")
    first = tab.js("() => T.states.find((s) => s.state === 'reconnecting')")
    assert (first["code"], first["reason"]) == (1001, "server shutting down")  # not fatal
    tab.wait("(lobby) => T.subs[lobby].subscribed", LOBBY)
    sent = server.post(
        "/broadcast", {"event": "chat.message", "to": LOBBY, "data": {"text": "after restart"}}
    )
    assert sent["receivers"] == 1
    tab.wait("(lobby) => T.texts(lobby).includes('after restart')", LOBBY)
