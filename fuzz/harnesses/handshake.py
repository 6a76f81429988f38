"""The handshake validator: ``validate_request`` then ``accept`` on arbitrary header lists.

Input layout: byte 0 chooses the server's options (bits 0-1: the deflate configuration in
:data:`DEFLATE_CONFIGS`, bits 2-4: which offered subprotocol the application picks, 7 for
none); the rest, decoded as Latin-1 like a WSGI environ, is a request line ``METHOD VERSION``
and ``name: value`` header lines separated by ``\\n`` (names lower-cased, repeats joined with
", " as ``validate_request`` expects).

Invariants: the outcome is a ``Rejection`` (400, 405 or 426) or a ``ClientRequest`` whose key
is 16 base64 bytes; ``accept`` returns ``Accepted`` or a 400 ``Rejection``, nothing else; the
101 response serializes, no header value holds a CR or LF, and a negotiated
``Sec-WebSocket-Extensions`` value is a response the client-side parser accepts.
"""

from __future__ import annotations

import base64

from mlsockets.protocol.deflate import DeflateConfig, _parse_offer, parse_extensions
from mlsockets.protocol.handshake import (
    Accepted,
    ClientRequest,
    Rejection,
    accept,
    serialize_response,
    validate_request,
)

DEFLATE_CONFIGS = (
    None,
    DeflateConfig(),
    DeflateConfig(server_max_window_bits=10, client_max_window_bits=9),
    DeflateConfig(server_no_context_takeover=True, client_no_context_takeover=True),
)

VALID_REQUEST = (
    "GET HTTP/1.1\n"
    "host: example.com\n"
    "upgrade: websocket\n"
    "connection: Upgrade\n"
    "sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\n"
    "sec-websocket-version: 13\n"
)


def seed(request: str, *, deflate: int = 1, subprotocol: int = 7) -> bytes:
    """An input in the layout above (for the seed corpus and tests)."""
    return bytes((deflate | subprotocol << 2,)) + request.encode("latin-1")


def _parse(text: str) -> tuple[str, str, dict[str, str]]:
    lines = text.split("\n")
    method, _, version = lines[0].partition(" ")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        key, value = name.strip().lower(), value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return method, version, headers


def _check_accepted(result: Accepted, request: ClientRequest, subprotocol: str | None) -> None:
    assert result.subprotocol == subprotocol
    serialize_response(101, result.headers)
    for name, value in result.headers:
        assert "\r" not in value and "\n" not in value, f"CR/LF in {name}: {value!r}"
    extensions = dict(result.headers).get("Sec-WebSocket-Extensions")
    assert (extensions is None) == (result.deflate is None)
    if extensions is not None:
        assert request.extensions is not None
        (name, params), *others = parse_extensions(extensions)
        assert name == "permessage-deflate" and not others, extensions
        _parse_offer(params, response=True)  # raises ValueError for a bad answer


def test_one_input(data: bytes) -> None:
    """Validate and accept one request; raise on a broken invariant."""
    if not data:
        return
    options = data[0]
    method, version, headers = _parse(data[1:].decode("latin-1"))
    request = validate_request(method, version, headers)
    if isinstance(request, Rejection):
        assert request.status in (400, 405, 426), request
        return
    assert isinstance(request, ClientRequest), request
    assert len(base64.b64decode(request.key, validate=True)) == 16
    pick = options >> 2 & 7
    offered = request.subprotocols
    subprotocol = offered[pick % len(offered)] if offered and pick != 7 else None
    result = accept(request, subprotocol=subprotocol, deflate=DEFLATE_CONFIGS[options & 3])
    if isinstance(result, Rejection):
        assert result.status == 400, result
        return
    assert isinstance(result, Accepted), result
    _check_accepted(result, request, subprotocol)
