"""The formatter protocol, the registry of formatters and subprotocol negotiation.

A formatter turns envelopes (plain dicts) into complete WebSocket messages and back. The
client picks one with the ``Sec-WebSocket-Protocol`` header: :func:`choose` takes the
subprotocols it offered, in its order, and returns the first one we support. The hub then
encodes every envelope once per formatter in use and hands the same message to each
receiver. Importing this module does not import msgpack (see :mod:`.msgpack`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from mlsockets.exceptions import ConfigurationError
from mlsockets.formatters import msgpack as _msgpack
from mlsockets.formatters.json import JSON_SUBPROTOCOL, JsonFormatter
from mlsockets.formatters.msgpack import MSGPACK_SUBPROTOCOL, MsgpackFormatter

__all__ = [
    "FORMATTERS",
    "JSON",
    "JSON_SUBPROTOCOL",
    "MSGPACK",
    "MSGPACK_SUBPROTOCOL",
    "Formatter",
    "choose",
    "get_formatter",
]


class Formatter(Protocol):
    """Encodes envelopes to messages and decodes messages, for one subprotocol.

    Attributes:
        name: short name ("json", "msgpack"); the hub groups receivers by it.
        subprotocol: the ``Sec-WebSocket-Protocol`` value ("mlsockets.json.v1").
        binary: True when messages are binary (bytes), False for text (str).
    """

    name: str
    subprotocol: str
    binary: bool

    def encode(self, obj: object) -> str | bytes:
        """Serialize one envelope: ``str`` for a text formatter, ``bytes`` for a binary one.

        Raises ``TypeError`` or ``ValueError`` when ``obj`` cannot be represented.
        """
        ...

    def decode(self, message: str | bytes) -> object:
        """Parse one complete message.

        Raises ``ValueError`` (with a client-safe message) on anything undecodable, or a
        message of the wrong type (text for a binary formatter, binary for a text one).
        """
        ...


JSON = JsonFormatter()
MSGPACK = MsgpackFormatter()

#: Every formatter we know, by subprotocol, in our order of preference.
FORMATTERS: dict[str, Formatter] = {JSON.subprotocol: JSON, MSGPACK.subprotocol: MSGPACK}


def _usable(formatter: Formatter) -> bool:
    # msgpack is optional: without it, its subprotocol is simply not negotiated.
    return not isinstance(formatter, MsgpackFormatter) or _msgpack.available()


def choose(offered: Sequence[str]) -> Formatter | None:
    """Pick the formatter for a handshake: the first subprotocol offered that we support.

    The client's order wins (RFC 6455 section 4.2.2 leaves the choice to the server; we
    honour the client's preference). Returns None when none is supported: the route is then
    a raw WebSocket, or the handshake is refused, as the caller decides.
    """
    for subprotocol in offered:
        formatter = FORMATTERS.get(subprotocol)
        if formatter is not None and _usable(formatter):
            return formatter
    return None


def get_formatter(subprotocol: str) -> Formatter:
    """The formatter for ``subprotocol``, for configuration (e.g. a server-side setting).

    Raises:
        ConfigurationError: the subprotocol is unknown, or its library is not installed
            (the message says what to ``pip install``).
    """
    formatter = FORMATTERS.get(subprotocol)
    if formatter is None:
        known = ", ".join(FORMATTERS)
        raise ConfigurationError(f"unknown subprotocol {subprotocol!r}; known: {known}")
    if isinstance(formatter, MsgpackFormatter):
        _msgpack.require()
    return formatter
