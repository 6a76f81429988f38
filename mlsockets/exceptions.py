"""The one exception tree of mlsockets.

Peer faults (``ProtocolError``, ``InvalidHandshake``) are separated from caller bugs
(``InvalidState``). Each boundary maps these to the wire in exactly one place: an HTTP status
at the handshake, a close code in the connection, an error reply for an event.
"""

from __future__ import annotations

__all__ = [
    "MLSocketsError",
    "ProtocolError",
    "PayloadTooBig",
    "InvalidHandshake",
    "ConnectionClosed",
    "ConnectionClosedOK",
    "ConnectionClosedError",
    "Unauthorized",
    "Forbidden",
    "TooManyRequests",
    "ValidationError",
    "ConfigurationError",
    "InvalidState",
]


class MLSocketsError(Exception):
    """Base class of every exception raised by mlsockets."""


class ProtocolError(MLSocketsError):
    """The peer violated RFC 6455 / RFC 7692.

    Attributes:
        code: the close code the connection fails with (RFC 6455 section 7.4.1):
            1002 protocol error, 1007 invalid payload data, 1009 message too big.
        reason: a short, client-safe explanation sent in the close frame.
    """

    def __init__(self, reason: str, code: int = 1002) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class PayloadTooBig(ProtocolError):
    """A frame or message exceeded the configured maximum size (close code 1009)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, 1009)


class InvalidHandshake(MLSocketsError):
    """The opening handshake failed; ``status`` is the HTTP status to answer with."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class ConnectionClosed(MLSocketsError):
    """Raised when using a connection that is closed.

    Attributes:
        code: the close code received from the peer (1005 when it sent none, 1006 when the
            TCP connection dropped without a closing handshake).
        reason: the close reason received from the peer.
    """

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"connection closed: {code} {reason}".rstrip())
        self.code = code
        self.reason = reason


class ConnectionClosedOK(ConnectionClosed):
    """The connection closed normally (1000 or 1001)."""


class ConnectionClosedError(ConnectionClosed):
    """The connection closed with an error code or without a closing handshake."""


class Unauthorized(MLSocketsError):
    """The caller is not authenticated. ``message`` is safe to show to the client."""

    status = 401

    def __init__(self, message: str = "authentication required") -> None:
        super().__init__(message)
        self.message = message


class Forbidden(MLSocketsError):
    """The caller is authenticated but not allowed. ``message`` is client-safe."""

    status = 403

    def __init__(self, message: str = "forbidden") -> None:
        super().__init__(message)
        self.message = message


class TooManyRequests(MLSocketsError):
    """The caller exceeded a rate limit. ``message`` is client-safe.

    Attributes:
        retry_after: seconds after which a retry can succeed (the ``Retry-After`` header),
            or None when unknown.
    """

    status = 429

    def __init__(
        self, message: str = "too many requests", retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class ValidationError(MLSocketsError):
    """An application payload failed validation; ``fields`` maps field names to messages."""

    def __init__(self, message: str, fields: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields or {}


class ConfigurationError(MLSocketsError):
    """A setting has an invalid value; raised at start-up, never at run time."""


class InvalidState(MLSocketsError):
    """The caller used an object in a state that does not allow it (a bug in the caller)."""
