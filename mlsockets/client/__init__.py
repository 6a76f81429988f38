"""The sync Python client (blocking-style, gevent-friendly).

- :func:`connect` / :class:`ClientConnection`: a raw WebSocket client (RFC 6455 / 7692).
- :class:`Client`: the envelope client (events, acks, channels, reconnection) for
  mlsockets endpoints speaking ``mlsockets.json.v1`` or ``mlsockets.msgpack.v1``.
- :class:`PublishClient`: publishes events over a server's HTTP publish API.

Only the standard library's blocking sockets are used: the same code works in threaded
programs and, cooperatively, in gevent monkey-patched ones.
"""

from __future__ import annotations

from mlsockets.client.backoff import Backoff
from mlsockets.client.connection import ClientConnection, Target, connect, parse_url
from mlsockets.client.events import Client, ErrorReply, ReceivedEvent
from mlsockets.client.publish import PublishClient, PublishError

__all__ = [
    "Backoff",
    "Client",
    "ClientConnection",
    "ErrorReply",
    "PublishClient",
    "PublishError",
    "ReceivedEvent",
    "Target",
    "connect",
    "parse_url",
]
