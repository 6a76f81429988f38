"""Rooms: a fixed list, each with a topic and its recent messages, kept in memory.

Each app has its own :class:`Rooms` in ``app.extensions["chat"]`` (see :func:`rooms`). The
messages live in this process only: a restart forgets them, and so would a second process.
"""

from __future__ import annotations

import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from flask import current_app

#: The rooms and their first topics. Room ``name`` is the public channel ``room:<name>`` and
#: the presence channel ``presence-room.<name>``.
ROOMS = {
    "lobby": "Say hello",
    "random": "Anything goes",
    "help": "Questions about mlsockets",
}
HISTORY = 50  # messages kept per room


def room_channel(room: str) -> str:
    return f"room:{room}"


@dataclass
class Room:
    name: str
    topic: str
    messages: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=HISTORY))


class Rooms:
    def __init__(self) -> None:
        self._rooms = {name: Room(name, topic) for name, topic in ROOMS.items()}

    def __getitem__(self, name: str) -> Room:
        return self._rooms[name]

    def add_message(self, room: str, user_id: str, name: str, text: str) -> dict[str, Any]:
        """Store a message and return it as clients see it."""
        message = {
            "id": secrets.token_hex(6),  # unique across restarts, unlike a counter
            "room": room,
            "user_id": user_id,
            "name": name,
            "text": text,
            "at": time.time(),
        }
        self._rooms[room].messages.append(message)
        return message

    def info(self, room: str) -> dict[str, Any]:
        """The room's topic and recent messages: what a page shows when it enters."""
        entry = self._rooms[room]
        return {"room": room, "topic": entry.topic, "messages": list(entry.messages)}


def rooms() -> Rooms:
    """The current app's rooms."""
    state: Rooms = current_app.extensions["chat"]
    return state
