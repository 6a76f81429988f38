"""The WSGI app the reliability scenarios run against (benchmarks/soak/, tests/reliability/).

Serve it like any app, from the repository root::

    mlsockets serve benchmarks.soak.soak_app:app --bind 127.0.0.1:8000
    gunicorn -k mlsockets.gunicorn.GeventWebSocketWorker -w 1 benchmarks.soak.soak_app:app

Paths:
  /echo        raw WebSocket, every message echoed (callback mode)
  /fanout      the shared bench harness's contract: every connection subscribes; one whose
               first message is ``pub`` becomes the publisher, its later messages broadcast
  /ws          the hub behind ``SocketApp`` (envelope protocol), anyone admitted
  /ws-limited  the same hub behind a handshake rate limiter (``SOAK_HANDSHAKE_RATE`` per
               second, ``SOAK_HANDSHAKE_BURST`` at once, per address): 429 beyond it
  /stats       JSON for samplers: greenlets alive (a ``gc`` walk) and how many of them are
               idle callback workers kept for reuse, WebSockets open, close codes seen so
               far, the peak of any connection's outbound queue, hub channels
  anything else: 200 ``ok`` (plain HTTP)

Close codes are recorded by wrapping the ``Upgrade`` every handshake is offered, so the same
counts cover the raw paths and the hub. The peak outbound queue is sampled every 50 ms by a
greenlet that reads the transport's private ``_out_size`` (a debugging aid for this app only).
"""

from __future__ import annotations

import gc
import json
import os
import weakref
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import gevent
from greenlet import greenlet

from mlsockets.admission import Admission, HandshakeRateLimiter
from mlsockets.hub import Hub
from mlsockets.transport.gevent import broadcast
from mlsockets.transport.gevent.connection import _WORKERS
from mlsockets.wsgi import HubConnection, SocketApp

__all__ = ["app", "stats"]

_open: weakref.WeakSet[Any] = weakref.WeakSet()
_close_codes: Counter[str] = Counter()
_peak = {"out_size": 0, "accepted": 0}
_subscribers: set[Any] = set()
_publishers: set[Any] = set()
_greeted: set[Any] = set()

hub = Hub(send_many=HubConnection.send_bulk)


def _echo(ws: Any, message: str | bytes) -> None:
    ws.send(message)


def _fanout(ws: Any, message: str | bytes) -> None:
    if ws in _publishers:
        broadcast(_subscribers, message)
    elif ws not in _greeted:
        _greeted.add(ws)  # only a connection's first message can make it the publisher
        if message == "pub":
            _subscribers.discard(ws)
            _publishers.add(ws)


def _fanout_closed(ws: Any) -> None:
    _subscribers.discard(ws)
    _publishers.discard(ws)
    _greeted.discard(ws)


class _CountingUpgrade:
    """Wraps the transport's ``Upgrade``: records every accepted connection and its close
    code (``on_close`` sees ``ws.close_code``: the peer's, or the one this side failed with)."""

    def __init__(self, upgrade: Any) -> None:
        self._upgrade = upgrade

    def __getattr__(self, name: str) -> Any:
        return getattr(self._upgrade, name)

    def accept(self, *args: Any, **kwargs: Any) -> Any:
        on_close: Callable[[Any], object] | None = kwargs.get("on_close")
        on_message = kwargs.get("on_message")

        def closed(ws: Any) -> None:
            _close_codes[f"{ws.close_code} {ws.close_reason}".strip()] += 1
            if on_close is not None:
                on_close(ws)

        if on_message is not None:
            kwargs["on_close"] = closed
        ws = self._upgrade.accept(*args, **kwargs)
        _open.add(ws)
        _peak["accepted"] += 1
        return ws


def _raw(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    path = environ.get("PATH_INFO")
    upgrade = environ.get("mlsockets.upgrade")
    if path == "/stats":
        body = json.dumps(stats()).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]
    if upgrade is None or path not in ("/echo", "/fanout"):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok\n"]
    if path == "/fanout":
        _subscribers.add(upgrade.accept(on_message=_fanout, on_close=_fanout_closed))
    else:
        upgrade.accept(on_message=_echo)
    return []


_limited = Admission(
    rate_limiter=HandshakeRateLimiter(
        rate=float(os.environ.get("SOAK_HANDSHAKE_RATE", "50")),
        burst=int(os.environ.get("SOAK_HANDSHAKE_BURST", "50")),
    ),
    allow_anonymous=True,
)
_wsgi = SocketApp(
    hub, path="/ws", app=SocketApp(hub, path="/ws-limited", admission=_limited, app=_raw)
)


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """The WSGI entry point (see the module docstring)."""
    upgrade = environ.get("mlsockets.upgrade")
    if upgrade is not None:
        environ["mlsockets.upgrade"] = _CountingUpgrade(upgrade)
    return _wsgi(environ, start_response)


def stats() -> dict[str, Any]:
    """What ``/stats`` answers."""
    return {
        "pid": os.getpid(),
        "greenlets": sum(1 for o in gc.get_objects() if isinstance(o, greenlet)),
        # Callback-mode workers parked for reuse (at most _WORKERS.max_idle): a bounded pool
        # that follows the peak of busy connections, not a leak.
        "idle_workers": len(_WORKERS._idle),
        "websockets_open": sum(1 for ws in list(_open) if not ws.closed),
        "accepted": _peak["accepted"],
        "close_codes": dict(_close_codes),
        "peak_out_size": _peak["out_size"],
        "fanout_subscribers": len(_subscribers),
        "hub_connections": len(hub.registry),
        "hub_channels": len(hub.membership.channels()),
    }


def _sample_queues() -> None:
    while True:
        gevent.sleep(0.05)
        peak = _peak["out_size"]
        for ws in list(_open):
            size = getattr(ws, "_out_size", 0)
            if size > peak:
                peak = size
        _peak["out_size"] = peak


gevent.spawn(_sample_queues)
