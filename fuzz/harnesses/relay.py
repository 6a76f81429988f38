"""Relay-message decoding (``broadcast/relay.py``): what a node reads from Redis pub/sub.

Input: the payload of one Redis message, decoded as bytes and, when it is UTF-8, as str.

Invariants: ``decode`` raises only ``RelayError`` (``UnsupportedVersion`` included): anything
else would escape the relay's listener and drop its Redis subscription. A message it accepts
encodes again to an equal message, and its envelope encodes with the JSON formatter to valid
UTF-8 (every receiving node does that for its JSON clients).
"""

from __future__ import annotations

from mlsockets.broadcast.relay import RelayError, RelayMessage, decode, encode
from mlsockets.formatters.json import JsonFormatter

FORMATTER = JsonFormatter()


def _check(data: bytes | str) -> None:
    try:
        message = decode(data)
    except RelayError as exc:
        assert str(exc)
        return
    assert isinstance(message, RelayMessage)
    assert decode(encode(message)) == message
    FORMATTER.encode(message.envelope).encode("utf-8")


def test_one_input(data: bytes) -> None:
    """Decode one relay message; raise on a broken invariant."""
    _check(data)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return
    _check(text)
