"""RFC 6455 section 5: the frame vocabulary, header serialization, masking, close payloads.

A *frame* is RFC 6455's unit on the wire; a *message* is one or more frames reassembled
(section 5.4). Parsing lives in :mod:`mlsockets.protocol.connection`, which reads headers
straight out of its receive buffer; this module holds what both directions share.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from enum import IntEnum

from mlsockets.exceptions import ProtocolError

__all__ = [
    "Opcode",
    "CloseCode",
    "DATA_OPCODES",
    "CONTROL_OPCODES",
    "apply_mask",
    "serialize_header",
    "serialize_frame",
    "parse_close",
    "serialize_close",
    "is_valid_close_code",
    "SPEEDUPS",
]


class Opcode(IntEnum):
    """Frame opcodes (RFC 6455 section 5.2); every other value is reserved."""

    CONT = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


DATA_OPCODES = frozenset({Opcode.CONT, Opcode.TEXT, Opcode.BINARY})
CONTROL_OPCODES = frozenset({Opcode.CLOSE, Opcode.PING, Opcode.PONG})


class CloseCode(IntEnum):
    """Close codes (RFC 6455 section 7.4.1 and the IANA registry)."""

    NORMAL_CLOSURE = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    NO_STATUS_RCVD = 1005  # never on the wire
    ABNORMAL_CLOSURE = 1006  # never on the wire
    INVALID_DATA = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    MANDATORY_EXTENSION = 1010
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    BAD_GATEWAY = 1014
    TLS_HANDSHAKE = 1015  # never on the wire


# Section 7.4.1 / 7.4.2: codes an endpoint may put in a Close frame. 1004, 1005, 1006 and 1015
# are reserved or only reported locally; 3000-3999 are registered by libraries and 4000-4999
# are private use; everything else below 5000 is reserved.
_WIRE_CLOSE_CODES = frozenset(
    {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014}
)


def is_valid_close_code(code: int) -> bool:
    """Whether ``code`` may appear in a Close frame (RFC 6455 section 7.4)."""
    return code in _WIRE_CLOSE_CODES or 3000 <= code <= 4999


def _apply_mask_py(data: bytes | bytearray | memoryview, mask: bytes | bytearray) -> bytes:
    """XOR ``data`` with the 4-byte ``mask`` repeated (RFC 6455 section 5.3).

    One big-integer XOR over the whole buffer: no per-byte Python loop.
    """
    n = len(data)
    if n == 0:
        return b""
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")


_mask_impl: Callable[[bytes | bytearray | memoryview, bytes | bytearray], bytes]
try:
    from mlsockets.protocol._speedups import apply_mask as _mask_impl

    SPEEDUPS = True
except ImportError:  # pragma: no cover - exercised when the C extension was not built
    _mask_impl = _apply_mask_py
    SPEEDUPS = False

#: ``apply_mask(data, mask) -> bytes``: the C version when it was built, else pure Python.
apply_mask = _mask_impl

_pack_short = struct.Struct("!BB").pack
_pack_medium = struct.Struct("!BBH").pack
_pack_long = struct.Struct("!BBQ").pack


def serialize_header(
    opcode: int, length: int, *, fin: bool = True, rsv1: bool = False, masked: bool = False
) -> bytes:
    """Return a frame header (section 5.2) without the masking key.

    The caller appends the 4-byte masking key when ``masked`` is true, then the payload.
    """
    b0 = opcode | (0x80 if fin else 0) | (0x40 if rsv1 else 0)
    mask_bit = 0x80 if masked else 0
    if length < 126:
        return _pack_short(b0, mask_bit | length)
    if length < 65536:
        return _pack_medium(b0, mask_bit | 126, length)
    return _pack_long(b0, mask_bit | 127, length)


def serialize_frame(
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    rsv1: bool = False,
    mask: bytes | None = None,
) -> bytes:
    """Return one complete frame. ``mask`` is the 4-byte key a client must use (section 5.3)."""
    header = serialize_header(opcode, len(payload), fin=fin, rsv1=rsv1, masked=mask is not None)
    if mask is None:
        return header + payload
    return header + mask + apply_mask(payload, mask)


def parse_close(payload: bytes) -> tuple[int, str]:
    """Decode a Close frame body (section 5.5.1) into ``(code, reason)``.

    An empty body means no status code (1005). Raises:
        ProtocolError: 1002 for a one-byte body or a code not allowed on the wire,
            1007 for a reason that is not valid UTF-8 (section 8.1).
    """
    if not payload:
        return CloseCode.NO_STATUS_RCVD, ""
    if len(payload) == 1:
        raise ProtocolError("close frame with a one-byte payload")
    code = int.from_bytes(payload[:2], "big")
    if not is_valid_close_code(code):
        raise ProtocolError(f"invalid close code {code}")
    try:
        reason = payload[2:].decode()
    except UnicodeDecodeError:
        raise ProtocolError("close reason is not valid UTF-8", 1007) from None
    return code, reason


def serialize_close(code: int, reason: str = "") -> bytes:
    """Encode a Close frame body; 1005 encodes as an empty body.

    The reason is truncated to fit the 125-byte control frame limit (section 5.5) without
    splitting a UTF-8 sequence.
    """
    if code == CloseCode.NO_STATUS_RCVD:
        return b""
    raw = reason.encode()
    if len(raw) > 123:
        raw = raw[:123].decode(errors="ignore").encode()
    return code.to_bytes(2, "big") + raw
