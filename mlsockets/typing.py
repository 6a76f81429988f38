"""Named types shared by every layer."""

from __future__ import annotations

from typing import NewType

__all__ = ["ConnectionId", "ChannelName", "UserId", "NodeId", "Data", "Message"]

ConnectionId = NewType("ConnectionId", str)
ChannelName = NewType("ChannelName", str)
UserId = NewType("UserId", str)
NodeId = NewType("NodeId", str)

#: A complete WebSocket message as applications see it: ``str`` for text, ``bytes`` for binary.
Message = str | bytes
#: Bytes accepted by the protocol layer.
Data = bytes | bytearray | memoryview
