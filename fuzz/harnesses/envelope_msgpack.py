"""Envelope decoding for ``mlsockets.msgpack.v1``: ``MsgpackFormatter.decode``, ``parse_client``.

Input: the payload of a binary message; it is also given as a text message (Latin-1), which
must be refused with ``ValueError``.

Invariants: only ``ValueError`` from the formatter and ``EnvelopeError`` from
``parse_client``; what decodes is nested no deeper than ``max_depth``, holds no extension
type, packs again, and the reply or error envelope built from it packs too.
"""

from __future__ import annotations

from mlsockets.formatters.msgpack import MsgpackFormatter

from ._envelope import check_decoded

FORMATTER = MsgpackFormatter()


def test_one_input(data: bytes) -> None:
    """Decode one message; raise on a broken invariant."""
    try:
        FORMATTER.decode(data.decode("latin-1"))
    except ValueError:
        pass
    else:
        raise AssertionError("a text message was accepted")
    check_decoded(FORMATTER, data)
