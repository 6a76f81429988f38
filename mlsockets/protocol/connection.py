"""The sans-I/O WebSocket connection (RFC 6455 sections 5-7, RFC 7692 section 6).

Call protocol for an adapter (one owner per Protocol; it is not thread-safe):

1. feed every chunk read from the transport with :meth:`Protocol.receive_data`, and
   :meth:`Protocol.receive_eof` when the peer closed its side;
2. take :meth:`Protocol.events_received`: complete messages (``str`` for text, ``bytes`` for
   binary) and :class:`Ping`, :class:`Pong`, :class:`Close` notifications;
3. write :meth:`Protocol.data_to_send` to the transport after every call that may produce
   output (receiving included: pongs and close echoes are automatic);
4. once :meth:`Protocol.close_expected` is true, flush and close the transport (a client
   first gives the server a moment to close it, section 7.1.1).

Peer errors never raise out of ``receive_data``: the connection is failed (section 7.1.7)
with the right close code, :attr:`Protocol.failure` records why, and further input is
discarded. Caller errors (sending on a closed connection) raise ``InvalidState``.
"""

from __future__ import annotations

import codecs
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum

from mlsockets.exceptions import InvalidState, PayloadTooBig, ProtocolError
from mlsockets.protocol.deflate import PerMessageDeflate
from mlsockets.protocol.frames import (
    CloseCode,
    Opcode,
    apply_mask,
    parse_close,
    serialize_close,
    serialize_header,
)

__all__ = [
    "Side",
    "State",
    "Ping",
    "Pong",
    "Close",
    "Event",
    "Protocol",
    "DEFAULT_MAX_MESSAGE_SIZE",
]

logger = logging.getLogger("mlsockets.protocol")

DEFAULT_MAX_MESSAGE_SIZE = 1 << 20


class Side(IntEnum):
    """Which end of the connection this Protocol plays (section 5.1: masking differs)."""

    SERVER = 0
    CLIENT = 1


class State(IntEnum):
    """Connection states after the opening handshake (section 4.1 covers CONNECTING)."""

    OPEN = 1
    CLOSING = 2
    CLOSED = 3


@dataclass(frozen=True, slots=True)
class Ping:
    """A Ping frame arrived (section 5.5.2); a Pong was queued when ``auto_pong`` is on."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Pong:
    """A Pong frame arrived (section 5.5.3)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Close:
    """A Close frame arrived (section 5.5.1); 1005 when it carried no status code."""

    code: int
    reason: str


Event = str | bytes | Ping | Pong | Close

_utf8_decoder = codecs.getincrementaldecoder("utf-8")
# Module constants: faster to look up than enum attributes on the hot path.
_OPEN = State.OPEN
_CLOSED = State.CLOSED
_SERVER = Side.SERVER


class Protocol:
    """One WebSocket connection's state machine, with no I/O.

    Args:
        side: SERVER requires masked frames from the peer and sends unmasked ones; CLIENT the
            reverse (section 5.1).
        max_message_size: largest message accepted, in bytes after decompression; a bigger
            one fails the connection with 1009. None disables the limit.
        deflate: the permessage-deflate codec negotiated at the handshake, if any.
        auto_pong: answer every Ping with a Pong (section 5.5.2).
        mask_source: returns a 4-byte masking key (client side; section 5.3 wants it
            unpredictable, so the default is ``os.urandom``).
    """

    # Slots: a server holds one Protocol per idle connection; a __dict__ would double its size.
    __slots__ = (
        "side",
        "max_message_size",
        "deflate",
        "auto_pong",
        "_mask_source",
        "_state",
        "_buf",
        "_events",
        "_out",
        "_frag_opcode",
        "_frag_buf",
        "_frag_size",
        "_frag_wire_size",
        "_frag_compressed",
        "_frag_decoder",
        "_send_frag_opcode",
        "_send_frag_compressed",
        "_discard_input",
        "failure",
        "close_rcvd",
        "close_sent",
        "_eof",
    )

    def __init__(
        self,
        side: Side = Side.SERVER,
        *,
        max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
        deflate: PerMessageDeflate | None = None,
        auto_pong: bool = True,
        mask_source: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.side = side
        self.max_message_size = max_message_size
        self.deflate = deflate
        self.auto_pong = auto_pong
        self._mask_source = mask_source
        self._state = State.OPEN
        self._buf = bytearray()
        self._events: list[Event] = []
        self._out: list[bytes] = []
        # Reassembly of a fragmented message (section 5.4).
        self._frag_opcode = 0  # 0: no fragmented message in progress
        self._frag_buf = bytearray()
        self._frag_size = 0
        self._frag_wire_size = 0
        self._frag_compressed = False
        self._frag_decoder: codecs.IncrementalDecoder | None = None
        # Sending a fragmented message.
        self._send_frag_opcode = 0
        self._send_frag_compressed = False
        self._discard_input = False
        #: The reason the connection was failed (a peer's protocol error), or None.
        self.failure: ProtocolError | None = None
        #: Close code and reason received from the peer; 1006 when the TCP connection ended
        #: without a Close frame (section 7.1.5).
        self.close_rcvd: Close | None = None
        #: Close code and reason this side sent, or None.
        self.close_sent: Close | None = None
        self._eof = False

    # -- state -------------------------------------------------------------------------

    @property
    def state(self) -> State:
        """OPEN, CLOSING (a Close frame was sent, none received yet) or CLOSED."""
        return self._state

    @state.setter
    def state(self, value: State) -> None:
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("%s: %s -> %s", self.side.name.lower(), self._state.name, value.name)
        self._state = value

    @property
    def close_code(self) -> int | None:
        """The code the peer closed with, 1006 after an abrupt EOF, None while open."""
        return None if self.close_rcvd is None else self.close_rcvd.code

    def close_expected(self) -> bool:
        """Whether no more frames will be exchanged and the transport should be closed.

        True after the closing handshake completed, after this side failed the connection,
        and after EOF. The adapter flushes :meth:`data_to_send` and then closes the TCP
        connection (RFC 6455 section 7.1.1: the server closes it first).
        """
        return self._state is State.CLOSED or self._discard_input

    # -- input -------------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray) -> None:
        """Feed bytes read from the transport. Never raises for a peer's error."""
        if self._discard_input or self._state is _CLOSED or not data:
            return
        buf: bytes | bytearray
        if self._buf:
            self._buf += data
            buf = self._buf
        else:
            buf = data
        try:
            pos = self._parse(buf)
        except ProtocolError as exc:
            self.failure = exc
            logger.debug("failing the connection: %s (%d)", exc.reason, exc.code)
            self.fail(exc.code, exc.reason)
            self._buf = bytearray()
            return
        if self._input_closed():
            self._buf = bytearray()
        elif buf is self._buf:
            del self._buf[:pos]
        elif pos < len(buf):
            self._buf = bytearray(buf[pos:])

    def _input_closed(self) -> bool:
        return self._discard_input or self._state is State.CLOSED

    def receive_eof(self) -> None:
        """The peer closed the TCP connection (or it dropped)."""
        if self._eof:
            return
        self._eof = True
        if self.close_rcvd is None:
            self.close_rcvd = Close(CloseCode.ABNORMAL_CLOSURE, "")
        self._buf = bytearray()
        self.state = State.CLOSED

    def events_received(self) -> list[Event]:
        """Return and forget the events parsed since the last call."""
        events = self._events
        if events:
            self._events = []
        return events

    def _parse(self, buf: bytes | bytearray) -> int:
        """Parse complete frames out of ``buf``; return how many bytes were consumed.

        The common frame (a whole, uncompressed text or binary message) is handled inline;
        everything else goes through :meth:`_check_header` and :meth:`_data_frame`.
        """
        pos = 0
        end = len(buf)
        server = self.side is Side.SERVER
        limit = self.max_message_size
        events = self._events
        while end - pos >= 2:
            b0 = buf[pos]
            b1 = buf[pos + 1]
            opcode = b0 & 0x0F
            length = b1 & 0x7F
            head = pos + 2
            if length == 126:
                if end - head < 2:
                    break
                length = (buf[head] << 8) | buf[head + 1]
                head += 2
            elif length == 127:
                if end - head < 8:
                    break
                length = int.from_bytes(buf[head : head + 8], "big")
                head += 8
                if length >> 63:  # section 5.2: the most significant bit must be 0
                    raise ProtocolError("invalid frame length")
            masked = b1 & 0x80
            if masked:
                if not server:
                    raise ProtocolError("masked frame from a server")  # section 5.1
                if end - head < 4:
                    break
                start = head + 4
            elif server:
                raise ProtocolError("unmasked frame from a client")  # section 5.1
            else:
                start = head
            # FIN set, RSV clear, text or binary, no fragmented message in progress:
            simple = (b0 & 0xF0) == 0x80 and (opcode == 1 or opcode == 2) and not self._frag_opcode
            if simple:
                if limit is not None and length > limit:
                    raise PayloadTooBig(f"message larger than {limit} bytes")
            else:
                self._check_header(opcode, b0 & 0x70, b0 & 0x80, length)
            if end - start < length:
                break
            pos = start + length
            if masked:
                payload = apply_mask(buf[start:pos], buf[head:start])
            else:
                payload = bytes(buf[start:pos])
            if simple:
                if opcode == 1:
                    try:
                        events.append(payload.decode())
                    except UnicodeDecodeError:
                        raise ProtocolError("invalid UTF-8 in a text message", 1007) from None
                else:
                    events.append(payload)
                continue
            if opcode >= 8:
                self._control_frame(opcode, payload)
            else:
                self._data_frame(opcode, bool(b0 & 0x80), bool(b0 & 0x40), payload)
            if self._input_closed():
                break
        return pos

    def _check_header(self, opcode: int, rsv: int, fin: int, length: int) -> None:
        """Validate a frame header before its payload is buffered (fail fast)."""
        if opcode >= 8:
            if opcode > Opcode.PONG:
                raise ProtocolError(f"reserved opcode {opcode:#x}")
            if rsv:
                raise ProtocolError("reserved bits set on a control frame")
            if not fin:
                raise ProtocolError("fragmented control frame")  # section 5.5
            if length > 125:
                raise ProtocolError("control frame longer than 125 bytes")  # section 5.5
            return
        if opcode > Opcode.BINARY:
            raise ProtocolError(f"reserved opcode {opcode:#x}")
        if opcode == Opcode.CONT:
            if not self._frag_opcode:
                raise ProtocolError("continuation frame without a message to continue")
        elif self._frag_opcode:
            raise ProtocolError("new data frame inside a fragmented message")  # section 5.4
        if rsv & 0x30:
            raise ProtocolError("reserved bits RSV2/RSV3 set")  # section 5.2
        if rsv:  # RSV1: RFC 7692 section 6, only on the first frame of a compressed message
            if self.deflate is None:
                raise ProtocolError("RSV1 set without permessage-deflate")
            if opcode == Opcode.CONT:
                raise ProtocolError("RSV1 set on a continuation frame")
        limit = self.max_message_size
        if limit is not None:
            compressed = bool(rsv) or (opcode == Opcode.CONT and self._frag_compressed)
            wire = (self._frag_wire_size if opcode == Opcode.CONT else 0) + length
            # Compressed data may exceed its plain size a little (stored blocks: 5 bytes per
            # 64 KiB); the real cap on a compressed message is applied while inflating.
            if wire > (limit + (limit >> 10) + 1024 if compressed else limit):
                raise PayloadTooBig(f"message larger than {limit} bytes")

    def _control_frame(self, opcode: int, payload: bytes) -> None:
        if opcode == Opcode.PING:
            self._events.append(Ping(payload))
            if self.auto_pong and self._state is State.OPEN:
                self._send_frame(Opcode.PONG, payload)
        elif opcode == Opcode.PONG:
            self._events.append(Pong(payload))
        else:  # CLOSE; reserved control opcodes were refused by _check_header
            code, reason = parse_close(payload)
            close = Close(code, reason)
            self.close_rcvd = close
            self._events.append(close)
            if self._state is State.OPEN:
                # Section 5.5.1: reply with a Close frame, echoing the status code.
                self._send_frame(Opcode.CLOSE, serialize_close(code, reason))
                self.close_sent = Close(code, reason)
            self.state = State.CLOSED

    def _data_frame(self, opcode: int, fin: bool, rsv1: bool, payload: bytes) -> None:
        if opcode != Opcode.CONT:  # the first frame of a fragmented or compressed message
            self._frag_opcode = opcode
            self._frag_compressed = rsv1
            self._frag_size = self._frag_wire_size = 0
            self._frag_buf = bytearray()
            self._frag_decoder = _utf8_decoder() if opcode == Opcode.TEXT else None
        self._frag_wire_size += len(payload)
        if self._frag_compressed:
            assert self.deflate is not None
            limit = self.max_message_size
            payload = self.deflate.decompress(
                payload, fin, (1 << 62) if limit is None else limit - self._frag_size
            )
        self._frag_size += len(payload)
        decoder = self._frag_decoder
        buf = self._frag_buf
        try:
            if fin and not buf:
                # The whole message in one frame (usually a compressed one): decoded once.
                message: str | bytes = payload if decoder is None else payload.decode()
            else:
                # Fragments accumulate in one buffer: a list of them grew a slot per frame, so
                # empty continuation frames held memory without any limit (found while fuzzing).
                if decoder is not None:
                    # Incremental validation fails fast inside a fragmented message (section 8.1).
                    decoder.decode(payload, fin)
                buf += payload
                if not fin:
                    return
                message = bytes(buf) if decoder is None else buf.decode()
        except UnicodeDecodeError:
            raise ProtocolError("invalid UTF-8 in a text message", 1007) from None
        self._frag_buf = bytearray()
        self._frag_opcode = 0
        self._frag_decoder = None
        self._events.append(message)

    # -- output ------------------------------------------------------------------------

    def data_to_send(self) -> bytes:
        """Return and forget the bytes to write to the transport (b"" when none)."""
        out = self._out
        if not out:
            return b""
        self._out = []
        return out[0] if len(out) == 1 else b"".join(out)

    def _send_frame(
        self, opcode: int, payload: bytes, fin: bool = True, rsv1: bool = False
    ) -> None:
        if self.side is Side.SERVER:
            self._out.append(serialize_header(opcode, len(payload), fin=fin, rsv1=rsv1) + payload)
        else:
            mask = self._mask_source(4)
            header = serialize_header(opcode, len(payload), fin=fin, rsv1=rsv1, masked=True)
            self._out.append(header + mask + apply_mask(payload, mask))

    def send_text(self, data: str | bytes, fin: bool = True) -> None:
        """Queue a text message, or its first fragment when ``fin`` is false.

        ``bytes`` must already be UTF-8 (it is sent as is, the fast path for broadcasts).
        """
        payload = data.encode() if isinstance(data, str) else data
        if (
            fin
            and self.side is _SERVER
            and self._state is _OPEN
            and self.deflate is None
            and not self._send_frag_opcode
        ):
            # The common case, inline: one unmasked, uncompressed frame.
            n = len(payload)
            if n < 126:
                self._out.append(bytes((0x81, n)) + payload)
            else:
                self._out.append(serialize_header(Opcode.TEXT, n) + payload)
            return
        self._send_data(Opcode.TEXT, payload, fin)

    def send_binary(self, data: bytes | bytearray | memoryview, fin: bool = True) -> None:
        """Queue a binary message, or its first fragment when ``fin`` is false."""
        self._send_data(Opcode.BINARY, bytes(data), fin)

    def send_continuation(self, data: str | bytes, fin: bool) -> None:
        """Queue the next fragment of the message started with ``fin=False``."""
        self._send_data(Opcode.CONT, data.encode() if isinstance(data, str) else bytes(data), fin)

    def _send_data(self, opcode: int, payload: bytes, fin: bool) -> None:
        if self._state is not State.OPEN:
            raise InvalidState(f"cannot send a message: the connection is {self._state.name}")
        if opcode == Opcode.CONT:
            if not self._send_frag_opcode:
                raise InvalidState("no fragmented message to continue")
            compressed = self._send_frag_compressed
        else:
            if self._send_frag_opcode:
                raise InvalidState("a fragmented message is in progress")
            deflate = self.deflate
            # RFC 7692 section 6: compression is decided per message; small ones are not worth it.
            compressed = deflate is not None and (not fin or len(payload) >= deflate.threshold)
        rsv1 = compressed and opcode != Opcode.CONT
        if compressed:
            assert self.deflate is not None
            payload = self.deflate.compress(payload, fin)
        self._send_frag_opcode = 0 if fin else (self._send_frag_opcode or opcode)
        self._send_frag_compressed = compressed and not fin
        self._send_frame(opcode, payload, fin, rsv1)

    def send_ping(self, data: bytes = b"") -> None:
        """Queue a Ping (section 5.5.2); ``data`` is at most 125 bytes."""
        self._send_control(Opcode.PING, data)

    def send_pong(self, data: bytes = b"") -> None:
        """Queue an unsolicited Pong (section 5.5.3), e.g. as a unidirectional heartbeat."""
        self._send_control(Opcode.PONG, data)

    def _send_control(self, opcode: int, data: bytes) -> None:
        if self._state is not State.OPEN:
            raise InvalidState(f"cannot send a control frame: the connection is {self._state.name}")
        if len(data) > 125:
            raise ValueError("control frame payloads are at most 125 bytes")
        self._send_frame(opcode, bytes(data))

    def send_close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Start the closing handshake (section 7.1.2). A no-op once closing or closed.

        After calling this, keep feeding input until :meth:`close_expected` is true (the
        peer's Close arrived) or the adapter's close timeout runs out.
        """
        if self._state is not State.OPEN:
            return
        self._send_frame(Opcode.CLOSE, serialize_close(code, reason))
        self.close_sent = Close(code, reason)
        self.state = State.CLOSING

    def fail(self, code: int, reason: str = "") -> None:
        """_Fail the WebSocket Connection_ (section 7.1.7): send Close if still possible,
        discard further input, and expect the transport to be closed now.

        Adapters call this too, e.g. 1011 when a pong never came or 1008 for a slow consumer.
        """
        self.send_close(code, reason)
        self._discard_input = True
        self._frag_buf = bytearray()
