"""Envelope decoding for ``mlsockets.json.v1``: ``JsonFormatter.decode`` then ``parse_client``.

Input: the payload of a text message. Bytes that are not UTF-8 never reach the formatter
(the connection fails with 1007 first), so they are skipped; the same bytes are also given
as a binary message, which must be refused with ``ValueError``.

Invariants: only ``ValueError`` from the formatter and ``EnvelopeError`` from
``parse_client``; what decodes is nested no deeper than ``max_depth``, encodes back to JSON
that is valid UTF-8, and the reply or error envelope built from it encodes too.
"""

from __future__ import annotations

from mlsockets.formatters.json import JsonFormatter

from ._envelope import check_decoded

FORMATTER = JsonFormatter()


def test_one_input(data: bytes) -> None:
    """Decode one message; raise on a broken invariant."""
    try:
        FORMATTER.decode(data)
    except ValueError:
        pass
    else:
        raise AssertionError("a binary message was accepted")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return
    check_decoded(FORMATTER, text)
