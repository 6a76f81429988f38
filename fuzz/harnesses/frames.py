"""The frame parser with permessage-deflate: a server-side ``Protocol`` fed arbitrary bytes.

Input layout (``seed()`` builds it):

- byte 0, the configuration: bits 0-2 the ``client_max_window_bits`` the client offers
  (8 + n; 7 offers the parameter without a value), bit 3 ``client_no_context_takeover``,
  bit 4 ``server_no_context_takeover``, bits 5-6 the message size limit (:data:`LIMITS`),
  bit 7 set: no extension negotiated;
- byte 1: ``k = byte & 7`` split points follow, each a byte scaled to the wire's length;
  bit 3 set: the server starts the closing handshake (1001) after the first chunk, so the
  rest arrives while it is CLOSING;
- the rest: the bytes a client sends, fed to ``receive_data`` in the chunks the splits make.

Invariants: ``receive_data`` raises nothing (peer errors fail the connection); a message
delivered is never above the limit; a failed connection records a 1002 / 1007 / 1009
failure and is CLOSING or CLOSED, expecting the transport to close; buffered input and the
memory holding a fragmented message stay bounded by the limit, however many frames; every
byte the server sends parses cleanly in a client ``Protocol`` with the client's side of the
negotiated codec; the connection is CLOSED after EOF.
"""

from __future__ import annotations

import sys

from mlsockets.protocol.connection import Close, Event, Ping, Pong, Protocol, Side, State
from mlsockets.protocol.deflate import (
    DeflateConfig,
    PerMessageDeflate,
    accept_response,
    client_offer,
    negotiate_server,
)

#: Message size limits, chosen by bits 5-6 of the configuration byte.
LIMITS = (64, 1000, 65536, 1 << 20)
#: The server's side of the negotiation (a small threshold: replies get compressed too).
SERVER_CONFIG = DeflateConfig(threshold=16)
#: Largest frame header: 2 bytes, 8 of extended length, 4 of masking key (section 5.2).
MAX_HEADER = 14


def seed(
    wire: bytes,
    *,
    window_bits: int | None = 15,
    client_no_context_takeover: bool = False,
    server_no_context_takeover: bool = False,
    limit_index: int = 1,
    deflate: bool = True,
    splits: bytes = b"",
    server_closes: bool = False,
) -> bytes:
    """An input in the layout above (for the seed corpus and tests)."""
    cfg = 7 if window_bits is None else window_bits - 8
    cfg |= client_no_context_takeover << 3 | server_no_context_takeover << 4
    cfg |= limit_index << 5 | (not deflate) << 7
    return bytes((cfg, len(splits) | server_closes << 3)) + splits + wire


def _client_config(cfg: int) -> DeflateConfig:
    bits = cfg & 7
    return DeflateConfig(
        client_max_window_bits=None if bits == 7 else 8 + bits,
        client_no_context_takeover=bool(cfg & 8),
        server_no_context_takeover=bool(cfg & 16),
    )


def _negotiate(cfg: int) -> tuple[PerMessageDeflate | None, PerMessageDeflate | None]:
    """The server's and the client's codecs, negotiated as a real handshake would."""
    if cfg & 0x80:
        return None, None
    client_config = _client_config(cfg)
    negotiated = negotiate_server(client_offer(client_config), SERVER_CONFIG)
    assert negotiated is not None, "the server declined a valid offer"
    response, server_codec = negotiated
    client_codec = accept_response(response, client_config)
    assert client_codec is not None
    return server_codec, client_codec


def _wire_cap(limit: int) -> int:
    # What Protocol admits on the wire for a compressed message (connection._check_header).
    return limit + (limit >> 10) + 1024


def _size(event: Event) -> int:
    if isinstance(event, str):
        return len(event.encode("utf-8"))
    if isinstance(event, bytes):
        return len(event)
    return 0


def _check(server: Protocol, limit: int, events: list[Event]) -> None:
    for event in events:
        assert _size(event) <= limit, f"a {_size(event)}-byte message passed a {limit} limit"
        assert isinstance(event, str | bytes | Ping | Pong | Close), event
    failure = server.failure
    if failure is not None:
        assert failure.code in (1002, 1007, 1009), failure.code
        assert server.close_expected(), "a failed connection still expects frames"
        assert server.state in (State.CLOSING, State.CLOSED), server.state
    buffered = len(server._buf)
    assert buffered <= MAX_HEADER + _wire_cap(limit), f"{buffered} bytes buffered"
    # A message in progress is held in one buffer: at most the limit, over-allocation aside,
    # whatever the number of frames it came in (empty or 1-byte fragments included).
    held = sys.getsizeof(server._frag_buf)
    assert len(server._frag_buf) <= limit and held <= 2 * limit + 4096, f"{held} bytes held"


def _chunks(data: bytes) -> list[bytes]:
    count = data[1] & 7
    wire = data[2 + count :]
    cuts = sorted({b * len(wire) // 256 for b in data[2 : 2 + count]})
    bounds = [0, *cuts, len(wire)]
    return [wire[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


def test_one_input(data: bytes) -> None:
    """Feed one input; raise on a broken invariant."""
    if len(data) < 2:
        return
    cfg = data[0]
    limit = LIMITS[(cfg >> 5) & 3]
    server_codec, client_codec = _negotiate(cfg)
    server = Protocol(Side.SERVER, max_message_size=limit, deflate=server_codec)
    client = Protocol(Side.CLIENT, max_message_size=None, deflate=client_codec, mask_source=bytes)
    server_closes = bool(data[1] & 8)
    for chunk in _chunks(data):
        server.receive_data(chunk)
        _check(server, limit, server.events_received())
        if server_closes:
            server_closes = False
            server.send_close(1001, "going away")
            assert server.state is not State.OPEN
        client.receive_data(server.data_to_send())
        assert client.failure is None, f"the server sent bad frames: {client.failure}"
    if server.state is State.OPEN and not server.close_expected():
        # The compressor must still work whatever the decompressor went through.
        text, blob = "é" * 40, bytes(range(256))
        server.send_text(text)
        server.send_binary(blob)
        client.receive_data(server.data_to_send())
        assert client.failure is None, f"the server sent bad frames: {client.failure}"
        received = [e for e in client.events_received() if isinstance(e, str | bytes)]
        assert received == [text, blob], received
    server.receive_eof()
    assert server.state is State.CLOSED
    assert server.close_expected()
