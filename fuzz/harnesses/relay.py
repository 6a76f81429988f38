"""Relay-message decoding (``broadcast/relay.py``): what a node reads from Redis pub/sub.

Input: the payload of one Redis message (UTF-8 JSON, or a msgpack map for envelopes only
msgpack can carry), decoded as bytes and, when it is UTF-8, as str.

Invariants: ``decode`` raises only ``RelayError`` (``UnsupportedVersion`` included): anything
else would escape the relay's listener and drop its Redis subscription. A message it accepts
encodes again, and that encoding decodes to the same wire form; its envelope is one that a
formatter can send: the JSON formatter (to valid UTF-8) or, failing that, msgpack.
"""

from __future__ import annotations

from mlsockets.broadcast.relay import RelayError, RelayMessage, decode, encode
from mlsockets.formatters.json import JsonFormatter
from mlsockets.formatters.msgpack import MsgpackFormatter

JSON = JsonFormatter()
MSGPACK = MsgpackFormatter()


def _check(data: bytes | str) -> None:
    try:
        message = decode(data)
    except RelayError as exc:
        assert str(exc)
        return
    assert isinstance(message, RelayMessage)
    # Compared on the wire: NaN, which msgpack relay messages may carry, equals nothing.
    wire = encode(message)
    assert encode(decode(wire)) == wire
    try:
        JSON.encode(message.envelope).encode("utf-8")
    except (TypeError, ValueError):
        MSGPACK.encode(message.envelope)


def test_one_input(data: bytes) -> None:
    """Decode one relay message; raise on a broken invariant."""
    _check(data)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return
    _check(text)
