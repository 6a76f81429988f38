"""The records of the Unix-socket broadcaster's streams: length-prefixed relay messages.

Format: each record is a 4-byte big-endian unsigned length (:data:`HEADER`), then that many
bytes of payload (one encoded :class:`~mlsockets.broadcast.relay.RelayMessage`). Records
follow each other on one Unix stream connection with nothing in between. A *record* is not
an RFC 6455 frame (STYLE.md rule 7): it never travels over a WebSocket.

Call protocol:

- a sender wraps each payload with :func:`record` once and writes the result whole (on one
  connection, records must not interleave); :class:`MessageTooLarge` means nothing was sent;
- a receiver makes one :class:`RecordReader` per connection and calls
  :meth:`RecordReader.feed` with every chunk it reads, in order; each call returns the
  payloads it completed. At the end of the stream, :attr:`RecordReader.pending` > 0 means
  the sender went away inside a record: drop it (never deliver a partial payload). After a
  :class:`RecordError` the stream cannot be resynchronized: close the connection.

Pure: bytes in, payloads out; no I/O.
"""

from __future__ import annotations

import struct

__all__ = [
    "HEADER",
    "MAX_MESSAGE",
    "MessageTooLarge",
    "RecordError",
    "RecordReader",
    "record",
]

#: The record header: the length of the relay message that follows.
HEADER = struct.Struct("!I")
#: The default largest relay message, in bytes.
MAX_MESSAGE = 64 << 20


class RecordError(ValueError):
    """A stream does not carry valid records (a length above the limit)."""


class MessageTooLarge(ValueError):
    """A relay message is larger than ``max_message``: refused before anyone received it."""


def record(payload: bytes, max_message: int = MAX_MESSAGE) -> bytes:
    """``payload`` with its length in front.

    Raises:
        MessageTooLarge: ``payload`` is longer than ``max_message``.
    """
    if len(payload) > max_message:
        raise MessageTooLarge(
            f"the relay message is {len(payload)} bytes; the limit (max_message) is "
            f"{max_message}: nothing was sent"
        )
    return HEADER.pack(len(payload)) + payload


class RecordReader:
    """Splits a byte stream into records' payloads. Pure: bytes in, payloads out.

    Call :meth:`feed` with what was received; at the end of the stream, :attr:`pending`
    says how many bytes of an incomplete record were left (a publisher that died or gave up
    in the middle of a record).
    """

    def __init__(self, max_message: int = MAX_MESSAGE) -> None:
        self.max_message = max_message
        self._buffer = bytearray()
        self._need: int | None = None  # the current record's length, once its header is in

    def feed(self, data: bytes) -> list[bytes]:
        """The payloads completed by ``data``.

        Raises:
            RecordError: a header announces more than ``max_message`` bytes (the stream
                cannot be resynchronized: close it).
        """
        buffer = self._buffer
        buffer += data
        out: list[bytes] = []
        start = 0
        while True:
            if self._need is None:
                if len(buffer) - start < HEADER.size:
                    break
                (need,) = HEADER.unpack_from(buffer, start)
                if need > self.max_message:
                    raise RecordError(
                        f"a record announces {need} bytes; the limit (max_message) is "
                        f"{self.max_message}"
                    )
                self._need = need
                start += HEADER.size
            if len(buffer) - start < self._need:
                break
            out.append(bytes(buffer[start : start + self._need]))
            start += self._need
            self._need = None
        del buffer[:start]
        return out

    @property
    def pending(self) -> int:
        """Bytes received of a record that is not complete yet (header included)."""
        return len(self._buffer) + (HEADER.size if self._need is not None else 0)
