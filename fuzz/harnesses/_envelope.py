"""What both envelope harnesses check once a formatter decoded a message."""

from __future__ import annotations

from mlsockets.formatters.base import Formatter
from mlsockets.formatters.envelope import (
    MAX_EVENT_LENGTH,
    MAX_ID,
    EnvelopeError,
    error_envelope,
    parse_client,
    reply_envelope,
)


def depth(obj: object) -> int:
    """Nesting of lists and dicts, counted independently of ``check_nesting``."""
    level, seen = [obj], 0
    while True:
        nested: list[object] = []
        for item in level:
            if isinstance(item, list):
                nested.extend(item)
            elif isinstance(item, dict):
                nested.extend(item.values())
        if len(nested) == 0 and not any(isinstance(i, list | dict) for i in level):
            return seen
        seen += 1
        level = nested


def check_decoded(formatter: Formatter, message: str | bytes) -> None:
    """Decode ``message``; on success, check the value and the envelope built from it.

    Raises:
        AssertionError: an invariant broke; any exception other than ``ValueError`` from
            the formatter or ``EnvelopeError`` from ``parse_client`` escapes as is.
    """
    try:
        obj = formatter.decode(message)
    except ValueError as exc:
        assert str(exc), "an error without a message"
        return
    max_depth = formatter.max_depth  # type: ignore[attr-defined]
    assert depth(obj) <= max_depth, f"nesting {depth(obj)} passed a limit of {max_depth}"
    # Whatever a client sent may be echoed or broadcast: it must encode again.
    again = formatter.encode(obj)
    if isinstance(again, str):
        again.encode("utf-8")
    try:
        envelope = parse_client(obj)
    except EnvelopeError as exc:
        assert exc.message and exc.code == "bad_envelope"
        assert exc.id is None or 0 <= exc.id <= MAX_ID
        formatter.encode(error_envelope(exc.id, exc.code, exc.message, event=exc.event))
        return
    assert isinstance(envelope.event, str) and 0 < len(envelope.event) <= MAX_EVENT_LENGTH
    assert envelope.id is None or (type(envelope.id) is int and 0 <= envelope.id <= MAX_ID)
    if envelope.id is not None:
        formatter.encode(reply_envelope(envelope.id, envelope.data))
