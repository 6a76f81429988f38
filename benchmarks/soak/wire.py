"""RFC 6455 on the client side, written independently of ``mlsockets.protocol`` (stdlib only).

The reliability scenarios check the server with these, so that a bug in the server's frame
code cannot hide behind the same bug in the client: frames are built with :mod:`struct` and
masked with a byte-wise XOR, the parser is strict (section 5.2) and every frame it accepts
from a server is unmasked, has a known opcode and, for text, valid UTF-8 once complete.
"""

from __future__ import annotations

import base64
import os
import socket
import struct
from urllib.parse import urlsplit

TEXT, BINARY, CONT, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA
_KNOWN = {TEXT, BINARY, CONT, CLOSE, PING, PONG}


class BadFrame(Exception):
    """The server sent bytes that are not a valid frame sequence."""


def split_url(url: str) -> tuple[str, int, str]:
    """``ws://host:port/path`` -> (host, port, path)."""
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 80, parts.path or "/"


def handshake_request(host: str, port: int, path: str, extra: str = "") -> bytes:
    """An opening handshake (section 4.1) with a fresh random key."""
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"{extra}\r\n"
    ).encode()


def frame(opcode: int, payload: bytes = b"", *, fin: bool = True, rsv1: bool = False) -> bytes:
    """One masked client frame (section 5.2; clients always mask, section 5.3)."""
    n = len(payload)
    b0 = (fin << 7) | (rsv1 << 6) | opcode
    if n < 126:
        head = struct.pack("!BB", b0, 0x80 | n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", b0, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", b0, 0x80 | 127, n)
    mask = os.urandom(4)
    if not payload:
        return head + mask
    # XOR four bytes at a time through one big integer: exact, and fast enough for tests.
    reps = mask * (n // 4 + 1)
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(reps[:n], "big")).to_bytes(n, "big")
    return head + mask + masked


def close_frame(code: int = 1000, reason: str = "") -> bytes:
    return frame(CLOSE, struct.pack("!H", code) + reason.encode())


class FrameParser:
    """Incremental, strict parser for server frames: ``feed(data)`` -> complete frames.

    Each frame is ``(fin, opcode, payload)``. Raises :class:`BadFrame` for a masked server
    frame, reserved bits or opcodes, a control frame over 125 bytes or fragmented, or a text
    message that is not UTF-8 (checked once the message is complete).
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._text: bytearray | None = None

    @property
    def pending(self) -> int:
        """Bytes received that do not make a complete frame yet."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[tuple[bool, int, bytes]]:
        self._buf += data
        frames = []
        buf = self._buf
        pos = 0
        while len(buf) - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            fin, opcode = bool(b0 & 0x80), b0 & 0x0F
            if b0 & 0x70:
                raise BadFrame(f"reserved bits set: {b0:#x}")
            if b1 & 0x80:
                raise BadFrame("a server frame is masked (section 5.1)")
            if opcode not in _KNOWN:
                raise BadFrame(f"unknown opcode {opcode:#x}")
            n, head = b1 & 0x7F, 2
            if n == 126:
                if len(buf) - pos < 4:
                    break
                n, head = struct.unpack_from("!H", buf, pos + 2)[0], 4
            elif n == 127:
                if len(buf) - pos < 10:
                    break
                n, head = struct.unpack_from("!Q", buf, pos + 2)[0], 10
            if opcode >= 0x8 and (n > 125 or not fin):
                raise BadFrame("bad control frame")
            if len(buf) - pos < head + n:
                break
            payload = bytes(buf[pos + head : pos + head + n])
            pos += head + n
            self._check_text(fin, opcode, payload)
            frames.append((fin, opcode, payload))
        del buf[:pos]
        return frames

    def _check_text(self, fin: bool, opcode: int, payload: bytes) -> None:
        if opcode == TEXT:
            self._text = bytearray(payload)
        elif opcode == CONT and self._text is not None:
            self._text += payload
        elif opcode in (TEXT, BINARY, CONT):
            self._text = None
        if fin and opcode in (TEXT, CONT) and self._text is not None:
            try:
                self._text.decode()
            except UnicodeDecodeError:
                raise BadFrame("text message is not valid UTF-8") from None
            self._text = None


def close_code(payload: bytes) -> int:
    """The status code of a Close frame's payload (section 5.5.1); 1005 when absent."""
    return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005


class Client:
    """A blocking client for probes and abuse: handshake, send frames, read frames.

    ``Client(url)`` connects and sends the handshake; :attr:`status` is the HTTP status the
    server answered (101 when open). Every method raises ``OSError`` (``TimeoutError``)
    when the server does not answer within ``timeout``.
    """

    def __init__(self, url: str, *, timeout: float = 10.0, extra_headers: str = "") -> None:
        host, port, path = split_url(url)
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.parser = FrameParser()
        self.sock.sendall(handshake_request(host, port, path, extra_headers))
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError(f"EOF during the handshake: {head!r}")
            head += chunk
        head, _, rest = head.partition(b"\r\n\r\n")
        self.head = head.decode("latin-1")
        self.status = int(self.head.split(" ", 2)[1])
        self.frames = self.parser.feed(rest) if self.status == 101 else []

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv_frame(self) -> tuple[bool, int, bytes] | None:
        """The next frame, or None at EOF (pings are answered)."""
        while not self.frames:
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                data = b""
            if not data:
                return None
            self.frames = self.parser.feed(data)
        fin, opcode, payload = self.frames.pop(0)
        if opcode == PING:
            self.sock.sendall(frame(PONG, payload))
        return fin, opcode, payload

    def echo(self, text: str) -> str:
        """Send a text message and return the next text message (an echo server's answer)."""
        self.send(frame(TEXT, text.encode()))
        while True:
            got = self.recv_frame()
            if got is None:
                raise ConnectionError("EOF while waiting for an echo")
            if got[1] == TEXT:
                return got[2].decode()
            if got[1] == CLOSE:
                raise ConnectionError(f"closed with {close_code(got[2])} while waiting for an echo")

    def wait_close(self) -> int | None:
        """Read until the server's Close (answered) and return its code; None at a bare EOF."""
        while True:
            got = self.recv_frame()
            if got is None:
                return None
            if got[1] == CLOSE:
                try:
                    self.sock.sendall(close_frame(close_code(got[2])))
                except OSError:
                    pass
                return close_code(got[2])

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
