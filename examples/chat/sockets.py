"""The WebSocket side: event handlers and channel authorizers, registered on ``sockets``.

Channels the page uses:

- ``room:<name>``: a room's messages, topic changes and typing indicators (public: any
  logged-in user may subscribe, to the rooms that exist);
- ``presence-room.<name>``: who is in the room; members see each other's ``{"name": ...}``;
- ``private-user.<id>``: mentions (``@bob``) for one user, who alone may subscribe.

Notifications from ``POST /notify`` go to ``User(id)``: every connection of that user,
subscribed or not (see views.py).
"""

from __future__ import annotations

import re
from typing import Any

from flask_mlsockets import MLSockets, Principal, broadcaster

from .rooms import ROOMS, room_channel, rooms
from .schemas import MessageSchema, RoomSchema
from .users import USERS, ChatUser

sockets = MLSockets()

MENTION = re.compile(r"@(\w+)")


@sockets.user_info
def public_info(user: ChatUser) -> dict[str, str]:
    """What other users see of a connected user (presence members, ``principal.info``)."""
    return {"name": user.name}


def _name(principal: Principal) -> str:
    return str(principal.info.get("name", principal.user_id))


# -- events -------------------------------------------------------------------------------


@sockets.on("room.info", schema=RoomSchema)
def room_info(conn: Any, data: dict[str, str]) -> dict[str, Any]:
    """The room's topic and recent messages, for a page entering it."""
    return rooms().info(data["room"])


@sockets.on("chat.send", schema=MessageSchema)
def send(conn: Any, data: dict[str, str]) -> dict[str, Any]:
    """Store a message and send it to the room's other connections; the ack is the message
    (the sender shows it from there: ``skip_sender`` leaves its connection out)."""
    principal = conn.principal
    message = rooms().add_message(data["room"], principal.user_id, _name(principal), data["text"])
    broadcaster.emit("chat.message", message, to=room_channel(data["room"]), skip_sender=True)
    mentioned = {name.lower() for name in MENTION.findall(data["text"])}
    for user_id in sorted((mentioned & USERS.keys()) - {principal.user_id}):
        broadcaster.emit("chat.mention", message, to=f"private-user.{user_id}")
    return message


@sockets.on("chat.typing", schema=RoomSchema)
def typing(conn: Any, data: dict[str, str]) -> None:
    """ "<name> is typing": to the room's other connections."""
    principal = conn.principal
    indicator = {"room": data["room"], "user_id": principal.user_id, "name": _name(principal)}
    broadcaster.emit("chat.typing", indicator, to=room_channel(data["room"]), skip_sender=True)


# -- channels -----------------------------------------------------------------------------


@sockets.channel("room:{name}")
def existing_room(principal: Principal, name: str) -> bool:
    return name in ROOMS


@sockets.channel("presence-room.{name}")
def room_member(principal: Principal, name: str) -> dict[str, str] | bool:
    if name not in ROOMS:
        return False
    return {"name": _name(principal)}  # allowed; what the other members see


@sockets.channel("private-user.{id}")
def own_channel(principal: Principal, id: str) -> bool:
    return principal.user_id == id
