"""The request-head parser of the gevent transport (``transport/gevent/headers.py``).

Input: the bytes after the request line, read through a file object that counts the lines
the parser asks for. ``RequestHead`` is a pure function of those bytes (pywsgi hands it the
socket's file; here it gets a ``BytesIO``).

Invariants: it never raises; it reads at most ``MAX_HEADERS + 1`` lines (so the head a client
can make us hold is bounded); ``status`` is empty or one of the documented reasons; a parsed
head has well-formed names and stripped values, its look-ups agree with its items, and
``validate_request`` takes its ``lowered()`` mapping without raising.
"""

from __future__ import annotations

import io

from mlsockets.protocol.handshake import ClientRequest, Rejection, validate_request
from mlsockets.transport.gevent.headers import MAX_HEADERS, MAX_LINE, RequestHead

STATUSES = ("", "Line too long", "Too many headers", "Invalid header line")


class _CountingFile:
    """A ``BytesIO`` that counts ``readline`` calls."""

    def __init__(self, data: bytes) -> None:
        self._file = io.BytesIO(data)
        self.lines = 0

    def readline(self, limit: int = -1) -> bytes:
        self.lines += 1
        return self._file.readline(limit)


def test_one_input(data: bytes) -> None:
    """Parse one head; raise on a broken invariant."""
    rfile = _CountingFile(data)
    head = RequestHead(rfile)
    assert rfile.lines <= MAX_HEADERS + 1, f"read {rfile.lines} lines"
    assert head.status in STATUSES, head.status
    assert len(head) <= MAX_HEADERS
    for name, value in head.items():
        assert name and name == name.strip() and ":" not in name, name
        assert value == value.strip() and len(value) <= MAX_HEADERS * MAX_LINE, value
        assert name in head and head.get(name) is not None
    if head.status:
        return
    lowered = head.lowered()
    assert set(lowered) == {name.lower() for name in head.keys()}
    result = validate_request("GET", "HTTP/1.1", lowered)
    assert isinstance(result, ClientRequest | Rejection), result
    list(head.headers)
    if len(head):
        first = head.keys()[0]
        del head[first]
        assert first not in head
