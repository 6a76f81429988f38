"""A plain WSGI app (no framework): an echo page and a raw WebSocket echo endpoint.

Run with ``mlsockets serve examples.echo:app`` and open http://127.0.0.1:8000/.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from mlsockets.auth import UPGRADE_ENVIRON_KEY, RawWebSocket

PAGE = b"""<!doctype html>
<meta charset="utf-8">
<title>mlsockets echo</title>
<style>body{font:16px system-ui;margin:2em auto;max-width:40em}#log{white-space:pre-wrap}</style>
<h1>mlsockets echo</h1>
<form id="f">
  <input id="m" autocomplete="off" placeholder="type a message"> <button>send</button>
</form>
<p id="state">connecting...</p>
<div id="log"></div>
<script>
const log = (t) => { document.getElementById("log").textContent += t + "\\n"; };
const scheme = location.protocol === "https:" ? "wss://" : "ws://";
const ws = new WebSocket(scheme + location.host + "/ws");
ws.onopen = () => { document.getElementById("state").textContent = "connected"; };
ws.onclose = (e) => { document.getElementById("state").textContent = "closed (" + e.code + ")"; };
ws.onmessage = (e) => log("< " + e.data);
document.getElementById("f").onsubmit = (e) => {
  e.preventDefault();
  const m = document.getElementById("m");
  ws.send(m.value); log("> " + m.value); m.value = "";
};
</script>
"""


def echo(ws: RawWebSocket) -> None:
    for message in ws:
        ws.send(message)


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    upgrade = environ.get(UPGRADE_ENVIRON_KEY)
    if environ.get("PATH_INFO") == "/ws" and upgrade is not None:
        upgrade.accept(handler=echo)
        return []
    if environ.get("PATH_INFO") == "/":
        start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
        return [PAGE]
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"not found\n"]
