"""Clients for the transport tests: websockets' sync client with test defaults, and a
hand-written client over a plain socket for input no real client would send.

The raw client builds and parses frames with :mod:`struct` and a per-byte XOR, independently
of ``mlsockets.protocol``, so a test never merely round-trips through the code it checks.
Imported as ``wsclients`` (pytest puts this directory on ``sys.path``; the name is unique
across tests/).
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Mapping
from types import TracebackType
from typing import Any, NamedTuple

from websockets.sync.client import ClientConnection, connect

from mlsockets.transport.gevent import Server

TEXT, BINARY, CONT, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA

#: RFC 6455 section 1.3: the sample key and the accept value a server must derive from it.
KEY = "dGhlIHNhbXBsZSBub25jZQ=="
ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

MASK = b"\x37\xfa\x21\x3d"


def url(server: Server, path: str = "/", scheme: str = "ws") -> str:
    """The URI of ``path`` on the first (TCP) listener of ``server``."""
    host, port = server.addresses[0][:2]
    return f"{scheme}://{host}:{port}{path}"


def ws_connect(uri: str, **kwargs: Any) -> ClientConnection:
    """websockets' sync client, with no proxy from the environment and short timeouts."""
    kwargs.setdefault("open_timeout", 5)
    kwargs.setdefault("close_timeout", 2)
    kwargs.setdefault("ping_interval", None)
    kwargs.setdefault("proxy", None)
    return connect(uri, **kwargs)


def xor(data: bytes, mask: bytes) -> bytes:
    """Mask or unmask ``data`` one byte at a time (section 5.3)."""
    return bytes(b ^ mask[i % 4] for i, b in enumerate(data))


def frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv1: bool = False,
    mask: bytes | None = MASK,
) -> bytes:
    """One frame (section 5.2), masked like a client's unless ``mask`` is None."""
    n = len(payload)
    b0 = (fin << 7) | (rsv1 << 6) | opcode
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


def close_payload(code: int, reason: str = "") -> bytes:
    """A Close frame's body (section 5.5.1)."""
    return struct.pack("!H", code) + reason.encode()


def request(
    path: str = "/",
    *,
    method: str = "GET",
    headers: Mapping[str, str | None] | None = None,
) -> bytes:
    """A client's opening handshake; ``headers`` add to or override (None: drop) the defaults."""
    fields: dict[str, str | None] = {
        "Host": "localhost",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": KEY,
        "Sec-WebSocket-Version": "13",
    }
    fields.update(headers or {})
    lines = [f"{method} {path} HTTP/1.1"]
    lines += [f"{name}: {value}" for name, value in fields.items() if value is not None]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class Response(NamedTuple):
    """An HTTP response as read off the wire; ``head`` is the raw status line and headers."""

    status: int
    headers: dict[str, str]
    body: bytes
    head: bytes


class Frame(NamedTuple):
    fin: bool
    rsv1: bool
    opcode: int
    payload: bytes
    masked: bool

    @property
    def close_code(self) -> int:
        assert self.opcode == CLOSE
        return int(struct.unpack("!H", self.payload[:2])[0]) if self.payload else 1005

    @property
    def close_reason(self) -> str:
        return self.payload[2:].decode()


class RawClient:
    """A blocking client socket with a read buffer; every read is bounded by ``timeout``."""

    def __init__(self, address: Any, *, timeout: float = 5.0, rcvbuf: int | None = None) -> None:
        family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        if rcvbuf is not None:  # before connect, so the TCP window starts small
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(address)
        self._buf = b""

    def __enter__(self) -> RawClient:
        return self

    def __exit__(
        self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_frame(self, opcode: int, payload: bytes = b"", **kwargs: Any) -> None:
        self.sock.sendall(frame(opcode, payload, **kwargs))

    def _fill(self) -> bool:
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        self._buf += data
        return bool(data)

    def read_exactly(self, n: int) -> bytes:
        while len(self._buf) < n:
            if not self._fill():
                raise EOFError(f"connection closed with {len(self._buf)} of {n} bytes read")
        data, self._buf = self._buf[:n], self._buf[n:]
        return data

    def read_response(self) -> Response:
        """Read a response head and its Content-Length body (none for a 101)."""
        while b"\r\n\r\n" not in self._buf:
            if not self._fill():
                raise EOFError(f"connection closed inside a response head: {self._buf!r}")
        head, self._buf = self._buf.split(b"\r\n\r\n", 1)
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers: dict[str, str] = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        status = int(status_line.split()[1])
        length = int(headers.get("content-length", "0")) if status != 101 else 0
        body = self.read_exactly(length)
        return Response(status, headers, body, head + b"\r\n\r\n")

    def handshake(self, path: str = "/", **kwargs: Any) -> Response:
        """Send an opening handshake and check the 101 (section 4.2.2)."""
        self.send(request(path, **kwargs))
        response = self.read_response()
        assert response.status == 101, response
        assert response.headers["sec-websocket-accept"] == ACCEPT
        return response

    def recv_frame(self) -> Frame:
        b0, b1 = self.read_exactly(2)
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", self.read_exactly(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", self.read_exactly(8))
        mask = self.read_exactly(4) if b1 & 0x80 else None
        payload = self.read_exactly(n)
        if mask is not None:
            payload = xor(payload, mask)
        return Frame(bool(b0 & 0x80), bool(b0 & 0x40), b0 & 0x0F, payload, mask is not None)

    def recv_until(self, opcode: int) -> Frame:
        """Skip frames (pings...) until one with ``opcode`` arrives."""
        while True:
            f = self.recv_frame()
            if f.opcode == opcode:
                return f

    def at_eof(self) -> bool:
        """Read until the server closes the connection; True if it did (False on timeout)."""
        try:
            while self._fill():
                pass
        except TimeoutError:
            return False
        return True

    def read_to_eof(self) -> bytes:
        """Everything left until the server closes the connection."""
        while self._fill():
            pass
        data, self._buf = self._buf, b""
        return data

    def abort(self) -> None:
        """Close with a TCP RST (SO_LINGER 0): the abrupt end of a killed client."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def close(self) -> None:
        self.sock.close()
