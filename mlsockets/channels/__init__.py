"""Channel names, authorizers, membership and presence (pure). See docs/design-app.md."""

from mlsockets.channels.authorizers import AuthResult, ChannelAuthorizers
from mlsockets.channels.membership import Membership
from mlsockets.channels.names import ChannelKind, InvalidChannel, parse_channel
from mlsockets.channels.presence import Member, Presence

__all__ = [
    "AuthResult",
    "ChannelAuthorizers",
    "ChannelKind",
    "InvalidChannel",
    "Member",
    "Membership",
    "Presence",
    "parse_channel",
]
