"""RFC 6455 section 4: the opening handshake as pure functions.

Server side: :func:`validate_request` checks an HTTP request and returns a
:class:`ClientRequest` or a :class:`Rejection` (an HTTP status, a reason and the headers to
answer with); :func:`accept` builds the 101 response for an accepted request.
Client side: :func:`build_request` and :func:`check_response`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from mlsockets.exceptions import InvalidHandshake, InvalidState
from mlsockets.protocol.deflate import (
    DeflateConfig,
    PerMessageDeflate,
    accept_response,
    client_offer,
    negotiate_server,
)

__all__ = [
    "GUID",
    "Rejection",
    "ClientRequest",
    "Accepted",
    "headers_from_environ",
    "validate_request",
    "accept_key",
    "accept",
    "build_request",
    "check_response",
    "serialize_response",
]

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # section 1.3

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")

Headers = Sequence[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class Rejection:
    """A refused handshake: answer with this HTTP status, reason and headers; never 101."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class ClientRequest:
    """A valid upgrade request (section 4.2.1), as the server saw it.

    Attributes:
        key: the ``Sec-WebSocket-Key`` value.
        subprotocols: offered subprotocols in the client's order of preference.
        extensions: the raw ``Sec-WebSocket-Extensions`` value, or None.
        origin: the ``Origin`` header (section 10.2), for the application to check.
    """

    key: str
    subprotocols: tuple[str, ...] = ()
    extensions: str | None = None
    origin: str | None = None


@dataclass(frozen=True, slots=True)
class Accepted:
    """The outcome of :func:`accept`: response headers and what was negotiated."""

    headers: tuple[tuple[str, str], ...]
    subprotocol: str | None = None
    deflate: PerMessageDeflate | None = field(default=None, compare=False)


def headers_from_environ(environ: Mapping[str, object]) -> dict[str, str]:
    """Lower-case HTTP header names to values, from a WSGI environ (PEP 3333)."""
    headers: dict[str, str] = {}
    for key, value in environ.items():
        if key.startswith("HTTP_") and isinstance(value, str):
            headers[key[5:].replace("_", "-").lower()] = value
    return headers


def _tokens(value: str | None) -> set[str]:
    if not value:
        return set()
    return {t.strip().lower() for t in value.split(",") if t.strip()}


def _list(value: str | None) -> tuple[str, ...]:
    if not value:
        return ()
    return tuple(t.strip() for t in value.split(",") if t.strip())


def validate_request(
    method: str, http_version: str, headers: Mapping[str, str]
) -> ClientRequest | Rejection:
    """Validate an opening handshake request (section 4.2.1).

    Args:
        method: the request method.
        http_version: e.g. ``"HTTP/1.1"``.
        headers: lower-case header names to values; repeated headers joined with ", ".

    Returns:
        a ClientRequest, or a Rejection: 405 for a method other than GET, 426 for a missing
        Upgrade or an unsupported version (with ``Sec-WebSocket-Version: 13``, section 4.4),
        400 for every other malformed request.
    """
    if method != "GET":
        return Rejection(405, "WebSocket handshakes must use GET", (("Allow", "GET"),))
    if http_version not in ("HTTP/1.1", "HTTP/2", "HTTP/2.0", "HTTP/3"):
        return Rejection(400, "WebSocket handshakes need HTTP/1.1 or later")
    if "websocket" not in _tokens(headers.get("upgrade")):
        return Rejection(
            426,
            "missing 'Upgrade: websocket' header",
            (("Upgrade", "websocket"), ("Connection", "Upgrade")),
        )
    if "upgrade" not in _tokens(headers.get("connection")):
        return Rejection(400, "missing 'Connection: Upgrade' header")
    version = headers.get("sec-websocket-version")
    if version is None or version.strip() != "13":
        return Rejection(
            426,
            "unsupported WebSocket version; this server speaks 13",
            (("Sec-WebSocket-Version", "13"),),
        )
    key = headers.get("sec-websocket-key", "").strip()
    try:
        raw = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 16:
        return Rejection(400, "Sec-WebSocket-Key must be 16 bytes, base64-encoded")
    subprotocols = _list(headers.get("sec-websocket-protocol"))
    # Section 4.1: each subprotocol is a token (RFC 2616 section 2.2). The chosen one is echoed
    # in the 101 response: a CR or a control character must never get that far.
    if not all(map(_TOKEN.fullmatch, subprotocols)):
        return Rejection(400, "Sec-WebSocket-Protocol must be a list of tokens")
    return ClientRequest(
        key=key,
        subprotocols=subprotocols,
        extensions=headers.get("sec-websocket-extensions"),
        origin=headers.get("origin"),
    )


def accept_key(key: str) -> str:
    """``Sec-WebSocket-Accept`` for a client key (section 4.2.2, step 5.4)."""
    return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()


def accept(
    request: ClientRequest,
    *,
    subprotocol: str | None = None,
    deflate: DeflateConfig | None = None,
) -> Accepted | Rejection:
    """Build the 101 response headers for ``request`` (section 4.2.2).

    Args:
        subprotocol: the application's choice; it must be one the client offered.
        deflate: permessage-deflate settings, or None to accept no extension.

    Returns:
        Accepted, or a Rejection (400) if the extensions header cannot be parsed.

    Raises:
        InvalidState: ``subprotocol`` was not offered by the client (a caller bug).
    """
    if subprotocol is not None and subprotocol not in request.subprotocols:
        raise InvalidState(f"subprotocol {subprotocol!r} was not offered by the client")
    headers = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", accept_key(request.key)),
    ]
    if subprotocol is not None:
        headers.append(("Sec-WebSocket-Protocol", subprotocol))
    codec = None
    if deflate is not None:
        try:
            negotiated = negotiate_server(request.extensions, deflate)
        except InvalidHandshake as exc:
            return Rejection(400, exc.reason)
        if negotiated is not None:
            value, codec = negotiated
            headers.append(("Sec-WebSocket-Extensions", value))
    return Accepted(tuple(headers), subprotocol, codec)


_REASONS = {
    101: "Switching Protocols",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    426: "Upgrade Required",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def serialize_response(status: int, headers: Iterable[tuple[str, str]], body: bytes = b"") -> bytes:
    """An HTTP/1.1 response head (and body, with Content-Length when not a 101)."""
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}"]
    lines.extend(f"{name}: {value}" for name, value in headers)
    if status != 101:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def build_request(
    host: str,
    path: str,
    *,
    subprotocols: Sequence[str] = (),
    deflate: DeflateConfig | None = None,
    extra_headers: Headers = (),
    key: str | None = None,
) -> tuple[str, bytes]:
    """A client's opening handshake (section 4.1). Returns ``(key, request bytes)``."""
    if key is None:
        key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    if subprotocols:
        lines.append("Sec-WebSocket-Protocol: " + ", ".join(subprotocols))
    if deflate is not None:
        lines.append("Sec-WebSocket-Extensions: " + client_offer(deflate))
    lines.extend(f"{name}: {value}" for name, value in extra_headers)
    return key, ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def check_response(
    status: int,
    headers: Mapping[str, str],
    key: str,
    *,
    subprotocols: Sequence[str] = (),
    deflate: DeflateConfig | None = None,
) -> tuple[str | None, PerMessageDeflate | None]:
    """Validate the server's answer (section 4.1, client steps 1-6).

    Returns ``(subprotocol, codec)``. Raises ``InvalidHandshake`` (with the server's status)
    when the server refused or answered incorrectly.
    """
    if status != 101:
        raise InvalidHandshake(f"server answered HTTP {status}", status)
    if "websocket" not in _tokens(headers.get("upgrade")):
        raise InvalidHandshake("missing 'Upgrade: websocket' in the response")
    if "upgrade" not in _tokens(headers.get("connection")):
        raise InvalidHandshake("missing 'Connection: Upgrade' in the response")
    if headers.get("sec-websocket-accept") != accept_key(key):
        raise InvalidHandshake("wrong Sec-WebSocket-Accept")
    subprotocol = headers.get("sec-websocket-protocol")
    if subprotocol is not None and subprotocol not in subprotocols:
        raise InvalidHandshake(f"server chose a subprotocol that was not offered: {subprotocol}")
    extensions = headers.get("sec-websocket-extensions")
    if deflate is None:
        if extensions:
            raise InvalidHandshake("server accepted an extension that was not offered")
        return subprotocol, None
    return subprotocol, accept_response(extensions, deflate)
