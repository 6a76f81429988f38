"""Byte-level helpers for the protocol tests, written independently of ``protocol.frames``.

Frames are built and parsed here by hand with :mod:`struct` and a per-byte XOR, so a test never
merely round-trips through the serializer it checks. Tests reach this module through the
``wire`` fixture defined in conftest.py.
"""

from __future__ import annotations

import itertools
import operator
import struct
from typing import NamedTuple

from mlsockets.protocol.connection import Event, Protocol, Side
from mlsockets.protocol.deflate import PerMessageDeflate

#: The masking key of RFC 6455 section 5.7's examples.
MASK = b"\x37\xfa\x21\x3d"

TEXT, BINARY, CONT, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA


def xor(data: bytes, mask: bytes) -> bytes:
    """Mask or unmask ``data`` one byte at a time (section 5.3), the obvious way."""
    return bytes(map(operator.xor, data, itertools.cycle(mask)))


def frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv1: bool = False,
    rsv2: bool = False,
    rsv3: bool = False,
    mask: bytes | None = None,
    length: int | None = None,
) -> bytes:
    """One frame encoded per section 5.2; ``length`` overrides the declared payload length."""
    n = len(payload) if length is None else length
    b0 = (fin << 7) | (rsv1 << 6) | (rsv2 << 5) | (rsv3 << 4) | opcode
    mask_bit = 0 if mask is None else 0x80
    if n < 126:
        head = struct.pack("!BB", b0, mask_bit | n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", b0, mask_bit | 126, n)
    else:
        head = struct.pack("!BBQ", b0, mask_bit | 127, n)
    if mask is None:
        return head + payload
    return head + mask + xor(payload, mask)


def client_frame(opcode: int, payload: bytes = b"", **kwargs: object) -> bytes:
    """A frame as a client sends it: masked (section 5.3), with :data:`MASK` by default."""
    kwargs.setdefault("mask", MASK)
    return frame(opcode, payload, **kwargs)  # type: ignore[arg-type]


def close_body(code: int, reason: str = "") -> bytes:
    """A Close frame's payload (section 5.5.1): 2-byte code, then the UTF-8 reason."""
    return struct.pack("!H", code) + reason.encode()


class WireFrame(NamedTuple):
    """A frame read back from bytes a Protocol produced; ``payload`` is unmasked."""

    fin: bool
    rsv1: bool
    opcode: int
    masked: bool
    payload: bytes


def read_frames(data: bytes) -> list[WireFrame]:
    """Parse every frame in ``data`` by hand; fails on trailing garbage or an RSV2/RSV3 bit."""
    frames = []
    pos = 0
    while pos < len(data):
        b0, b1 = struct.unpack_from("!BB", data, pos)
        pos += 2
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack_from("!H", data, pos)
            pos += 2
        elif n == 127:
            (n,) = struct.unpack_from("!Q", data, pos)
            pos += 8
        mask = None
        if b1 & 0x80:
            mask = data[pos : pos + 4]
            pos += 4
        payload = data[pos : pos + n]
        assert len(payload) == n, "truncated frame"
        pos += n
        assert not b0 & 0x30, "RSV2/RSV3 set"
        if mask is not None:
            payload = xor(payload, mask)
        frames.append(WireFrame(bool(b0 & 0x80), bool(b0 & 0x40), b0 & 0x0F, bool(mask), payload))
    return frames


def sent(protocol: Protocol) -> list[WireFrame]:
    """Drain ``protocol.data_to_send()`` and parse it."""
    return read_frames(protocol.data_to_send())


def close_frame_code(wire_frame: WireFrame) -> int:
    """The status code of a Close frame read with :func:`read_frames`."""
    assert wire_frame.opcode == CLOSE
    (code,) = struct.unpack_from("!H", wire_frame.payload)
    return int(code)


def feed(protocol: Protocol, data: bytes) -> list[Event]:
    """Feed ``data`` in one call and return the events it produced."""
    protocol.receive_data(data)
    return protocol.events_received()


def feed_bytewise(protocol: Protocol, data: bytes) -> list[Event]:
    """Feed ``data`` one byte per call and return every event produced."""
    events: list[Event] = []
    for i in range(len(data)):
        protocol.receive_data(data[i : i + 1])
        events.extend(protocol.events_received())
    return events


def server(**kwargs: object) -> Protocol:
    return Protocol(Side.SERVER, **kwargs)  # type: ignore[arg-type]


def client(**kwargs: object) -> Protocol:
    """A client Protocol whose masking keys are always :data:`MASK` (predictable output)."""
    kwargs.setdefault("mask_source", lambda n: MASK)
    return Protocol(Side.CLIENT, **kwargs)  # type: ignore[arg-type]


def pair(
    *,
    client_deflate: PerMessageDeflate | None = None,
    server_deflate: PerMessageDeflate | None = None,
    **kwargs: object,
) -> tuple[Protocol, Protocol]:
    """A connected (client, server) pair of Protocols; ``kwargs`` apply to both."""
    return client(deflate=client_deflate, **kwargs), server(deflate=server_deflate, **kwargs)


def transfer(src: Protocol, dst: Protocol) -> list[Event]:
    """Move everything ``src`` has to send into ``dst``; return ``dst``'s new events."""
    dst.receive_data(src.data_to_send())
    return dst.events_received()


def parse_http(data: bytes) -> tuple[str, dict[str, str], bytes]:
    """Split an HTTP/1.1 head: (start line, lower-case headers, body)."""
    head, _, body = data.partition(b"\r\n\r\n")
    start, *lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return start, headers, body
