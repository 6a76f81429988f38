"""Channel names and their kinds.

A channel name is 1 to :data:`MAX_CHANNEL_LENGTH` characters from :data:`VALID_CHARACTERS`
(ASCII letters, digits and ``_-=@,.;:``). Its prefix gives its kind:

- ``private-...``: :attr:`ChannelKind.PRIVATE`, subscribing needs an authorizer's consent;
- ``presence-...``: :attr:`ChannelKind.PRESENCE`, the same, and members see each other;
- anything else: :attr:`ChannelKind.PUBLIC`.

Prefixes are case-sensitive: ``Private-x`` is a public channel, distinct from ``private-x``.
A bare prefix (``private-``) is refused: it names no channel.

Names come from clients, so :func:`parse_channel` is a validation boundary: it accepts any
object and raises :class:`InvalidChannel`, whose message is safe to send back.
"""

from __future__ import annotations

import enum
import re

from mlsockets.exceptions import MLSocketsError
from mlsockets.typing import ChannelName

__all__ = [
    "ChannelKind",
    "InvalidChannel",
    "MAX_CHANNEL_LENGTH",
    "PRESENCE_PREFIX",
    "PRIVATE_PREFIX",
    "VALID_CHARACTERS",
    "parse_channel",
]

MAX_CHANNEL_LENGTH = 200
PRIVATE_PREFIX = "private-"
PRESENCE_PREFIX = "presence-"

_PUNCTUATION = "_-=@,.;:"
#: Every character a channel name may contain.
VALID_CHARACTERS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789" + _PUNCTUATION
)

# Spelled out rather than \W, which would let through any Unicode letter or digit.
_INVALID_CHAR_RE = re.compile(r"[^A-Za-z0-9_\-=@,.;:]")


class ChannelKind(enum.Enum):
    """What subscribing to a channel requires; decided by the name's prefix."""

    PUBLIC = "public"
    PRIVATE = "private"
    PRESENCE = "presence"


class InvalidChannel(MLSocketsError):
    """A channel name is not valid. ``message`` is safe to send to the client.

    Attributes:
        code: the wire error code, ``"invalid_channel"``.
        message: what is wrong with the name.
    """

    code = "invalid_channel"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def parse_channel(name: object) -> tuple[ChannelKind, ChannelName]:
    """Validate a channel name and tell its kind.

    Args:
        name: the name as received (from a client envelope or from server code).

    Returns:
        ``(kind, name)``, the name unchanged (no normalization: names are case-sensitive).

    Raises:
        InvalidChannel: ``name`` is not a str, is empty, longer than 200 characters, contains
            a character outside ``[A-Za-z0-9_-=@,.;:]`` (the message names the first one), or
            is a bare ``private-`` / ``presence-`` prefix.
    """
    if not isinstance(name, str):
        raise InvalidChannel(f"channel name must be a string, not {type(name).__name__}")
    if not name:
        raise InvalidChannel("channel name is empty")
    # Length before characters: no point scanning a megabyte that is refused anyway.
    if len(name) > MAX_CHANNEL_LENGTH:
        raise InvalidChannel(f"channel name is longer than {MAX_CHANNEL_LENGTH} characters")
    bad = _INVALID_CHAR_RE.search(name)
    if bad is not None:
        # repr() so a control character or a quote is shown escaped, never raw.
        raise InvalidChannel(f"channel name contains an invalid character: {bad.group()!r}")
    if name.startswith(PRESENCE_PREFIX):
        kind, prefix = ChannelKind.PRESENCE, PRESENCE_PREFIX
    elif name.startswith(PRIVATE_PREFIX):
        kind, prefix = ChannelKind.PRIVATE, PRIVATE_PREFIX
    else:
        return ChannelKind.PUBLIC, ChannelName(name)
    if name == prefix:
        raise InvalidChannel(f"channel name {name!r} is a bare prefix: it needs a name after it")
    return kind, ChannelName(name)
