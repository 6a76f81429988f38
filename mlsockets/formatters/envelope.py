"""Envelopes: the application events inside messages (docs/design-app.md, "The wire").

::

    client -> server  {"event": "chat.send", "data": {...}, "id": 7}      id: ack wanted
    server -> client  {"reply": 7, "data": {...}}
                      {"reply": 7, "error": {"code": "...", "message": "...", "fields": {...}}}
                      {"event": "chat.message", "channel": "room:lobby", "data": {...}}
                      {"event": "mls.error", "data": {"code", "message", "fields"?, "event"?}}

:func:`parse_client` validates what a formatter decoded from a client; the builders return
the plain dicts a formatter encodes. Nothing here knows the encoding.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "MAX_EVENT_LENGTH",
    "MAX_ID",
    "ClientEnvelope",
    "EnvelopeError",
    "error_envelope",
    "event_envelope",
    "parse_client",
    "reply_envelope",
]

#: Longest event name, in characters.
MAX_EVENT_LENGTH = 128
#: Largest ack id: the largest integer a JavaScript number holds exactly.
MAX_ID = 2**53 - 1

_KEYS = frozenset({"event", "data", "id"})
_TYPE_NAMES = {
    type(None): "null",
    bool: "a boolean",
    int: "a number",
    float: "a number",
    str: "a string",
    bytes: "binary data",
    list: "an array",
}


class EnvelopeError(ValueError):
    """A client envelope is malformed (error code ``bad_envelope``).

    The message is client-safe. ``id`` and ``event`` are the envelope's own when they were
    valid, so the error can be a reply to ``id`` (or name the event in ``mls.error``).
    """

    code = "bad_envelope"

    def __init__(self, message: str, *, id: int | None = None, event: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.id = id
        self.event = event


@dataclass(frozen=True, slots=True)
class ClientEnvelope:
    """One event from a client.

    Attributes:
        event: the event name (1..128 characters).
        data: the payload, any decoded value (None when absent).
        id: the ack id (0..2**53-1) when the client wants a reply, else None.
    """

    event: str
    data: object = None
    id: int | None = None


def _type_name(obj: object) -> str:
    return _TYPE_NAMES.get(type(obj), type(obj).__name__)


def _check_id(obj: Mapping[object, object]) -> tuple[int | None, str | None]:
    """The valid id (or None) and the problem with it (or None)."""
    if "id" not in obj:
        return None, None
    value = obj["id"]
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_ID:
        return None, "'id' must be an integer from 0 to 2**53-1 (omit it when no ack is wanted)"
    return value, None


def _check_event(obj: Mapping[object, object]) -> tuple[str | None, str | None]:
    """The valid event (or None) and the problem with it (or None)."""
    if "event" not in obj:
        return None, "missing 'event'"
    value = obj["event"]
    if not isinstance(value, str):
        return None, f"'event' must be a string, not {_type_name(value)}"
    if not value:
        return None, "'event' must not be empty"
    if len(value) > MAX_EVENT_LENGTH:
        return None, f"'event' is longer than {MAX_EVENT_LENGTH} characters"
    return value, None


def parse_client(obj: object) -> ClientEnvelope:
    """Validate a decoded client message as an envelope.

    Any event name is accepted here, ``mls.*`` included: the hub handles system events and
    the router answers ``unknown_event`` for names nobody registered.

    Raises:
        EnvelopeError: ``obj`` is not an object (map), has keys other than ``event``,
            ``data`` and ``id``, has a missing / non-string / empty / too long ``event``, or
            an ``id`` that is not an integer in 0..2**53-1 (booleans are not integers).
    """
    if not isinstance(obj, Mapping):
        raise EnvelopeError(f"an envelope must be an object, not {_type_name(obj)}")
    msg_id, id_problem = _check_id(obj)
    event, event_problem = _check_event(obj)
    problem = id_problem or event_problem
    if problem is None:
        extra = [key for key in obj if key not in _KEYS]
        if extra:
            names = ", ".join(repr(key)[:40] for key in extra[:5])
            more = f" and {len(extra) - 5} more" if len(extra) > 5 else ""
            problem = f"unexpected keys: {names}{more} (allowed: event, data, id)"
    if problem is not None:
        raise EnvelopeError(problem, id=msg_id, event=event)
    assert event is not None
    return ClientEnvelope(event, obj.get("data"), msg_id)


def event_envelope(
    event: str, data: object = None, channel: str | None = None
) -> dict[str, object]:
    """An event for clients: ``{"event", "channel"?, "data"}`` (no channel key when None)."""
    if channel is None:
        return {"event": event, "data": data}
    return {"event": event, "channel": channel, "data": data}


def reply_envelope(id: int, data: object) -> dict[str, object]:
    """The ack for the client envelope ``id``: ``{"reply": id, "data": data}``."""
    return {"reply": id, "data": data}


def error_envelope(
    id: int | None,
    code: str,
    message: str,
    fields: Mapping[str, object] | None = None,
    event: str | None = None,
) -> dict[str, object]:
    """An error for a client.

    With an ``id``: ``{"reply": id, "error": {"code", "message", "fields"?}}``. Without:
    ``{"event": "mls.error", "data": {"code", "message", "fields"?, "event"?}}``, where
    ``event`` names the client event that failed. ``fields`` is omitted when empty.
    """
    error: dict[str, object] = {"code": code, "message": message}
    if fields:
        error["fields"] = dict(fields)
    if id is not None:
        return {"reply": id, "error": error}
    if event is not None:
        error["event"] = event
    return {"event": "mls.error", "data": error}
