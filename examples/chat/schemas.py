"""Marshmallow schemas for what clients send: over the WebSocket (events) and over HTTP.

An event whose data does not load is answered with an ``invalid`` error reply carrying
marshmallow's messages per field; the page shows them under the message box.
"""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields, pre_load, validate

from .rooms import ROOMS
from .users import USERS

MAX_MESSAGE = 500


class _Stripped(Schema):
    """Strips the whitespace around string fields first, so "   " is an empty text."""

    @pre_load
    def strip(self, data: Any, **kwargs: Any) -> Any:
        if isinstance(data, dict):
            return {k: v.strip() if isinstance(v, str) else v for k, v in data.items()}
        return data  # not an object: marshmallow reports it


def _room() -> fields.String:
    return fields.String(required=True, validate=validate.OneOf(sorted(ROOMS)))


class RoomSchema(Schema):
    """``room.info`` and ``chat.typing``: ``{"room": "lobby"}``."""

    room = _room()


class MessageSchema(_Stripped):
    """``chat.send``: ``{"room": "lobby", "text": "hello"}``."""

    room = _room()
    text = fields.String(required=True, validate=validate.Length(min=1, max=MAX_MESSAGE))


class NotifySchema(_Stripped):
    """``POST /notify`` (a form): ``to`` a user id, ``text``."""

    to = fields.String(required=True, validate=validate.OneOf(sorted(USERS)))
    text = fields.String(required=True, validate=validate.Length(min=1, max=200))


class TopicSchema(_Stripped):
    """``POST /rooms/<room>/topic`` (JSON): ``{"topic": "..."}``; empty clears it."""

    topic = fields.String(required=True, validate=validate.Length(max=80))
