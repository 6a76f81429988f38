"""A blocking WebSocket client over :class:`~mlsockets.protocol.connection.Protocol`.

It uses nothing but the standard library's blocking ``socket``, ``ssl`` and ``select``, so
the same code runs in a plain (threaded) program and cooperatively in a gevent
monkey-patched process: a blocked :meth:`ClientConnection.recv` yields to other greenlets.

Call protocol::

    with connect("ws://127.0.0.1:8000/echo", timeout=5) as ws:
        ws.send("hello")          # str: a text message; bytes: a binary one
        reply = ws.recv(timeout=5)

- :func:`connect` performs the opening handshake (RFC 6455 section 4.1) and raises
  :class:`~mlsockets.exceptions.InvalidHandshake`, with the server's HTTP ``status``, when
  the server refuses (``401``, ``403``, ``429`` ...) or answers incorrectly.
- Pings from the server are answered, and its Close frame echoed, while some caller is
  inside :meth:`~ClientConnection.recv`, :meth:`~ClientConnection.ping` or
  :meth:`~ClientConnection.close`: a program that stops reading for longer than the server's
  ping timeout will be disconnected.
- :meth:`~ClientConnection.recv` returns the messages received before the connection closed
  and then raises :class:`~mlsockets.exceptions.ConnectionClosedOK` (1000 / 1001) or
  :class:`~mlsockets.exceptions.ConnectionClosedError` (any other code, 1006 when the TCP
  connection dropped without a closing handshake).

Thread safety: one lock guards the Protocol and every write, so ``send`` may be called from
any thread or greenlet while another blocks in ``recv``. At most one caller reads the socket
at a time; others that wait (a second ``recv``, ``ping`` or ``close``) are woken by it.
"""

from __future__ import annotations

import base64
import logging
import os
import select
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from urllib.parse import unquote, urlsplit

from mlsockets.exceptions import (
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    InvalidHandshake,
    InvalidState,
)
from mlsockets.metrics.redact import redact_query
from mlsockets.protocol import handshake
from mlsockets.protocol.connection import (
    DEFAULT_MAX_MESSAGE_SIZE,
    Close,
    Pong,
    Protocol,
    Side,
    State,
)
from mlsockets.protocol.deflate import DeflateConfig
from mlsockets.protocol.frames import CloseCode
from mlsockets.typing import Message

__all__ = ["ClientConnection", "connect", "parse_url", "Target"]

logger = logging.getLogger("mlsockets.client")

RECV_SIZE = 65536
#: Largest HTTP response head accepted during the handshake.
MAX_HEAD_SIZE = 65536
#: Largest refusal body read to explain a refused handshake.
MAX_BODY_SIZE = 4096

Headers = Mapping[str, str] | Iterable[tuple[str, str]]

_OK_CODES = (CloseCode.NORMAL_CLOSURE, CloseCode.GOING_AWAY)


@dataclass(frozen=True, slots=True)
class Target:
    """Where a ``ws://`` / ``wss://`` URL points (see :func:`parse_url`).

    Attributes:
        secure: True for ``wss://``.
        host: the host name or address, without IPv6 brackets.
        port: the TCP port (80 / 443 by default).
        resource: path and query string sent in the request line.
        host_header: the ``Host`` header value.
        authorization: an ``Authorization: Basic`` value when the URL had user info.
    """

    secure: bool
    host: str
    port: int
    resource: str
    host_header: str
    authorization: str | None = None


def parse_url(url: str) -> Target:
    """Split a WebSocket URL (RFC 6455 section 3). Raises ValueError for anything else."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("ws", "wss"):
        raise ValueError(f"not a ws:// or wss:// URL: {url!r}")
    if parts.fragment:
        raise ValueError(f"a WebSocket URL has no fragment: {url!r}")  # section 3
    host = parts.hostname
    if not host:
        raise ValueError(f"no host in {url!r}")
    secure = scheme == "wss"
    default = 443 if secure else 80
    port = parts.port or default  # .port raises ValueError for a bad port
    resource = parts.path or "/"
    if parts.query:
        resource += "?" + parts.query
    name = f"[{host}]" if ":" in host else host
    host_header = name if port == default else f"{name}:{port}"
    authorization = None
    if parts.username is not None:
        userinfo = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        authorization = "Basic " + base64.b64encode(userinfo.encode()).decode()
    return Target(secure, host, port, resource, host_header, authorization)


def _header_list(headers: Headers) -> list[tuple[str, str]]:
    items = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
    for name, value in items:
        if any(c in f"{name}{value}" for c in "\r\n\0") or not name or ":" in name:
            raise ValueError(f"invalid header {name!r}: {value!r}")
    return items


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def _set_timeout(sock: socket.socket, deadline: float | None) -> None:
    """Give the next blocking socket call what is left of ``deadline``."""
    timeout = _remaining(deadline)
    if timeout == 0:  # settimeout(0) would make the socket non-blocking instead
        raise TimeoutError("timed out")
    sock.settimeout(timeout)


def _wait_readable(sock: socket.socket, timeout: float | None) -> bool:
    """Whether ``sock`` became readable within ``timeout`` seconds (None: no limit)."""
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return True  # decrypted bytes are already buffered inside the TLS layer
    try:
        if hasattr(select, "poll"):  # no FD_SETSIZE limit, unlike select()
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            return bool(poller.poll(None if timeout is None else timeout * 1000))
        readable, _, _ = select.select([sock], [], [], timeout)
        return bool(readable)
    except (OSError, ValueError):
        return True  # closed under us: recv() reports it


def connect(
    url: str,
    *,
    subprotocols: Iterable[str] = (),
    headers: Headers = (),
    compression: bool | DeflateConfig | None = True,
    timeout: float | None = 10.0,
    max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
    ssl_context: ssl.SSLContext | None = None,
    unix_path: str | None = None,
    close_timeout: float = 5.0,
) -> ClientConnection:
    """Open a WebSocket connection and complete the opening handshake.

    Args:
        url: ``ws://host[:port]/path?query`` or ``wss://...``; user info in the URL is sent
            as ``Authorization: Basic``.
        subprotocols: offered in order of preference; the server's choice is
            :attr:`ClientConnection.subprotocol`.
        headers: extra request headers (a mapping or ``(name, value)`` pairs), e.g.
            ``{"Authorization": "Bearer ..."}`` or ``Origin``.
        compression: True offers permessage-deflate (RFC 7692) with default settings, a
            :class:`~mlsockets.protocol.deflate.DeflateConfig` offers those settings (read
            from the client's point of view), None or False offers nothing.
        timeout: seconds for the TCP connect, the TLS handshake and the opening handshake
            together; None waits forever.
        max_message_size: largest incoming message in bytes (after decompression); a larger
            one fails the connection with 1009. None: no limit.
        ssl_context: for ``wss://``; default ``ssl.create_default_context()``.
        unix_path: connect to this Unix socket instead of the URL's host and port (the URL
            still provides the ``Host`` header and the path).
        close_timeout: seconds :meth:`ClientConnection.close` waits for the closing
            handshake, and for the server to close TCP after it.

    Raises:
        InvalidHandshake: the server refused (``status`` is its HTTP status, and the start
            of its response body is in the message) or answered incorrectly.
        TimeoutError: the handshake did not finish within ``timeout``.
        OSError: the connection could not be made (refused, unreachable, TLS failure).
        ValueError: a malformed URL or header.
    """
    target = parse_url(url)
    if ssl_context is not None and not target.secure:
        raise ValueError("ssl_context needs a wss:// URL")
    config: DeflateConfig | None = None
    if isinstance(compression, DeflateConfig):
        config = compression
    elif compression:
        config = DeflateConfig()
    offered = tuple(subprotocols)
    extra = _header_list(headers)
    if target.authorization is not None and not any(
        name.lower() == "authorization" for name, _ in extra
    ):
        extra.append(("Authorization", target.authorization))
    deadline = None if timeout is None else time.monotonic() + timeout

    sock = _open_socket(target, unix_path, timeout)
    try:
        if target.secure:
            context = ssl_context or ssl.create_default_context()
            _set_timeout(sock, deadline)
            sock = context.wrap_socket(sock, server_hostname=target.host)
        key, request = handshake.build_request(
            target.host_header,
            target.resource,
            subprotocols=offered,
            deflate=config,
            extra_headers=extra,
        )
        _set_timeout(sock, deadline)
        sock.sendall(request)
        status, response_headers, rest = _read_response(sock, deadline)
        subprotocol, codec = handshake.check_response(
            status, response_headers, key, subprotocols=offered, deflate=config
        )
        sock.settimeout(None)  # from now on deadlines are enforced with select/poll
    except BaseException:
        sock.close()
        raise
    protocol = Protocol(Side.CLIENT, max_message_size=max_message_size, deflate=codec)
    logger.debug("connected to %s (subprotocol %s, %s)", redact_query(url), subprotocol, codec)
    return ClientConnection(
        sock,
        protocol,
        subprotocol=subprotocol,
        response_headers=response_headers,
        close_timeout=close_timeout,
        buffered=rest,
    )


def _open_socket(target: Target, unix_path: str | None, timeout: float | None) -> socket.socket:
    if unix_path is not None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(unix_path)
        except BaseException:
            sock.close()
            raise
        return sock
    sock = socket.create_connection((target.host, target.port), timeout=timeout)
    # Small frames (acks, pongs) should not wait for Nagle's algorithm.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _read_response(
    sock: socket.socket, deadline: float | None
) -> tuple[int, dict[str, str], bytes]:
    """Read the server's response head; for a refusal, raise with the start of its body.

    Returns ``(status, lower-case headers, bytes read past the head)``.
    """
    buf = b""
    while (end := buf.find(b"\r\n\r\n")) < 0:
        if len(buf) > MAX_HEAD_SIZE:
            raise InvalidHandshake("the server's response head is too large")
        _set_timeout(sock, deadline)
        chunk = sock.recv(RECV_SIZE)
        if not chunk:
            raise InvalidHandshake("the server closed the connection during the handshake")
        buf += chunk
    head, rest = buf[:end].decode("latin-1"), buf[end + 4 :]
    status_line, *lines = head.split("\r\n")
    version, _, tail = status_line.partition(" ")
    code = tail[:3]
    if not version.startswith("HTTP/1.") or not code.isdigit():
        raise InvalidHandshake(f"invalid HTTP status line: {status_line[:100]!r}")
    headers: dict[str, str] = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise InvalidHandshake(f"invalid HTTP header line: {line[:100]!r}")
        name = name.strip().lower()
        value = value.strip()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    status = int(code)
    if status != 101:
        body = _read_body(sock, headers, rest, deadline)
        detail = f": {body}" if body else ""
        raise InvalidHandshake(f"server refused the handshake: HTTP {tail.strip()}{detail}", status)
    return status, headers, rest


def _read_body(
    sock: socket.socket, headers: Mapping[str, str], body: bytes, deadline: float | None
) -> str:
    """The start of a refusal's body (best effort: Content-Length bodies only)."""
    try:
        length = min(int(headers.get("content-length", "0")), MAX_BODY_SIZE)
        while len(body) < length:
            _set_timeout(sock, deadline)
            chunk = sock.recv(RECV_SIZE)
            if not chunk:
                break
            body += chunk
    except (OSError, ValueError):
        pass
    return body[:MAX_BODY_SIZE].decode("utf-8", "replace").strip()[:200]


class ClientConnection:
    """One client WebSocket connection, created by :func:`connect`.

    Attributes:
        subprotocol: the subprotocol the server selected, or None.
        response_headers: the server's 101 response headers (lower-case names).
        close_timeout: seconds :meth:`close` waits for the closing handshake.
    """

    def __init__(
        self,
        sock: socket.socket,
        protocol: Protocol,
        *,
        subprotocol: str | None = None,
        response_headers: Mapping[str, str] | None = None,
        close_timeout: float = 5.0,
        buffered: bytes = b"",
    ) -> None:
        self._sock = sock
        self._protocol = protocol
        self.subprotocol = subprotocol
        self.response_headers = dict(response_headers or {})
        self.close_timeout = close_timeout
        # One lock for the Protocol and the socket's write side; readers wait on the
        # condition while another caller reads.
        self._cond = threading.Condition(threading.Lock())
        self._reading = False
        self._messages: deque[Message] = deque()
        self._pings: dict[bytes, float | None] = {}
        self._transport_closed = False
        self._local_close: Close | None = None
        self._eof_deadline: float | None = None
        if buffered:
            with self._cond:
                self._process(buffered)

    # -- state ---------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once no more messages can be sent (closing handshake started or done)."""
        return self._transport_closed or self._protocol.state is not State.OPEN

    @property
    def close_code(self) -> int | None:
        """The server's close code (1006 if TCP dropped first, or the code this client
        failed the connection with, e.g. 1009); None while the connection is open."""
        close = self._close_info()
        return None if close is None else close.code

    @property
    def close_reason(self) -> str:
        """The server's close reason, or ``""``."""
        close = self._close_info()
        return "" if close is None else close.reason

    def _close_info(self) -> Close | None:
        if self._local_close is not None:
            return self._local_close
        return self._protocol.close_rcvd

    def _closed_exception(self) -> ConnectionClosed:
        close = self._close_info()
        if close is None:  # this side started closing; the handshake is not finished
            close = self._protocol.close_sent or Close(CloseCode.ABNORMAL_CLOSURE, "")
        if close.code in _OK_CODES:
            return ConnectionClosedOK(close.code, close.reason)
        return ConnectionClosedError(close.code, close.reason)

    # -- receiving -----------------------------------------------------------------------

    def recv(self, timeout: float | None = None) -> Message:
        """Return the next message: ``str`` for text, ``bytes`` for binary.

        Args:
            timeout: seconds to wait; None waits forever, 0 only takes what already arrived.

        Raises:
            TimeoutError: no message arrived in time (the connection stays usable).
            ConnectionClosedOK / ConnectionClosedError: the connection is closed and every
                message received before that was returned already.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        self._wait_for(lambda: bool(self._messages), deadline)
        with self._cond:
            if self._messages:
                return self._messages.popleft()
        raise self._closed_exception()

    def __iter__(self) -> Iterator[Message]:
        """Yield messages until the connection closes; a normal close (1000 / 1001) ends the
        iteration, any other raises ConnectionClosedError."""
        while True:
            try:
                yield self.recv()
            except ConnectionClosedOK:
                return

    def _wait_for(self, ready: Callable[[], bool], deadline: float | None) -> None:
        """Read from the socket until ``ready()`` (called with the lock held) is true or the
        transport is closed. When another caller is reading, wait for it instead.

        Raises TimeoutError when ``deadline`` (a ``time.monotonic()`` value) passes first.
        """
        cond = self._cond
        with cond:
            while not ready() and not self._transport_closed:
                if self._reading:
                    timeout = _remaining(deadline)
                    if timeout == 0:
                        raise TimeoutError("timed out")
                    cond.wait(timeout)
                    continue
                self._reading = True
                cond.release()
                try:
                    data = self._read_socket(deadline)
                finally:
                    cond.acquire()
                    self._reading = False
                    cond.notify_all()
                self._process(data)
                cond.notify_all()

    def _read_socket(self, deadline: float | None) -> bytes:
        """One ``recv()`` (without the lock held); b"" for EOF or a broken connection."""
        eof_deadline = self._eof_deadline
        wait_until = deadline
        if eof_deadline is not None and (wait_until is None or eof_deadline < wait_until):
            wait_until = eof_deadline
        sock = self._sock
        if wait_until is not None and not _wait_readable(sock, _remaining(wait_until)):
            if eof_deadline is not None and time.monotonic() >= eof_deadline:
                return b""  # the server did not close TCP after the closing handshake
            raise TimeoutError("timed out")
        try:
            return sock.recv(RECV_SIZE)
        except OSError:  # reset, TLS error, or closed by close() in another thread
            return b""

    def _process(self, data: bytes) -> None:
        """Feed ``data`` (b"": EOF), keep messages and pongs, write the Protocol's output
        (pongs, the close echo) and close the transport when the Protocol expects it.
        Called with the lock held."""
        if self._transport_closed:
            return
        protocol = self._protocol
        if data:
            protocol.receive_data(data)
        else:
            protocol.receive_eof()
        for event in protocol.events_received():
            if isinstance(event, (str, bytes)):
                self._messages.append(event)
            elif isinstance(event, Pong):
                if event.data in self._pings:
                    self._pings[event.data] = time.monotonic()
            elif isinstance(event, Close):
                logger.debug("server closed: %d %s", event.code, event.reason)
        self._flush()
        failure = protocol.failure
        if failure is not None and self._local_close is None:
            logger.info("failing the connection: %s (%d)", failure.reason, failure.code)
            self._local_close = Close(failure.code, failure.reason)
        if not protocol.close_expected():
            return
        if not data or failure is not None:
            self._abort()
        elif self._eof_deadline is None:
            # Section 7.1.1: the server closes TCP first; give it close_timeout to do so.
            self._eof_deadline = time.monotonic() + self.close_timeout

    # -- sending -------------------------------------------------------------------------

    def send(self, message: Message | bytearray | memoryview) -> None:
        """Send one message: ``str`` as a text message, bytes-like as a binary one.

        Blocks until the frame is handed to the kernel (or the TLS layer).

        Raises:
            ConnectionClosedOK / ConnectionClosedError: the connection is closed or closing.
        """
        with self._cond:
            protocol = self._protocol
            if self._transport_closed or protocol.state is not State.OPEN:
                raise self._closed_exception()
            if isinstance(message, str):
                protocol.send_text(message)
            else:
                protocol.send_binary(message)
            if not self._flush():
                raise self._closed_exception()

    def ping(self, data: bytes | None = None, *, timeout: float | None = 10.0) -> float:
        """Send a Ping and wait for its Pong; return the round-trip time in seconds.

        Messages that arrive meanwhile are kept for :meth:`recv`.

        Args:
            data: the payload (at most 125 bytes, unique among pings in flight); default 4
                random bytes.
            timeout: seconds to wait for the Pong; None waits forever.

        Raises:
            TimeoutError: no Pong in time.
            ConnectionClosedOK / ConnectionClosedError: the connection closed first.
        """
        payload = os.urandom(4) if data is None else bytes(data)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            if self._transport_closed or self._protocol.state is not State.OPEN:
                raise self._closed_exception()
            if payload in self._pings:
                raise InvalidState("a ping with this payload is already waiting for its pong")
            self._protocol.send_ping(payload)
            self._pings[payload] = None
            sent = time.monotonic()
            self._flush()
        try:
            self._wait_for(lambda: self._pings.get(payload) is not None, deadline)
            with self._cond:
                answered = self._pings.get(payload)
            if answered is None:
                raise self._closed_exception()
            return answered - sent
        finally:
            with self._cond:
                self._pings.pop(payload, None)

    def _flush(self) -> bool:
        """Write the Protocol's pending output (lock held). False if the write failed."""
        out = self._protocol.data_to_send()
        if not out or self._transport_closed:
            return not self._transport_closed
        try:
            self._sock.sendall(out)
        except OSError as exc:
            logger.debug("write failed: %s", exc)
            self._abort()
            return False
        return True

    # -- closing -------------------------------------------------------------------------

    def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Perform the closing handshake (RFC 6455 section 7.1.2) and close TCP.

        Sends a Close frame, waits up to ``close_timeout`` for the server's Close and for it
        to close TCP (section 7.1.1), then closes the socket; messages that arrive meanwhile
        stay available to :meth:`recv`. Safe to call twice, and from another thread while
        one is blocked in :meth:`recv` (which then raises ConnectionClosedOK).
        """
        deadline = time.monotonic() + self.close_timeout
        with self._cond:
            if self._transport_closed:
                return
            if self._protocol.state is State.OPEN:
                self._protocol.send_close(code, reason)
                self._flush()
        try:
            self._wait_for(lambda: False, deadline)
        except TimeoutError:
            logger.info("closing handshake timed out after %.1f s", self.close_timeout)
            with self._cond:
                self._abort()
                self._cond.notify_all()

    def _abort(self) -> None:
        """Close the TCP connection now (lock held); wakes a reader in another thread."""
        if self._transport_closed:
            return
        self._transport_closed = True
        if self._protocol.state is not State.CLOSED:
            self._protocol.receive_eof()  # records 1006 unless a Close frame was received
        sock = self._sock
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            sock.close()
        except OSError:  # pragma: no cover - close() on a broken socket
            pass

    def __enter__(self) -> ClientConnection:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._transport_closed else self._protocol.state.name.lower()
        return f"<ClientConnection {state} subprotocol={self.subprotocol!r}>"
