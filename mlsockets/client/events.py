"""The envelope client: events, acks and channels over one raw client connection.

Speaks the wire of docs/design-app.md on the ``mlsockets.json.v1`` or
``mlsockets.msgpack.v1`` subprotocol, with the formatters of :mod:`mlsockets.formatters`.

Call protocol::

    with Client.connect("ws://127.0.0.1:8000/ws", token="...") as client:
        client.subscribe("room:lobby")                  # waits for the mls.subscribe ack
        client.emit("chat.send", {"text": "hi"})        # fire and forget
        saved = client.emit("chat.edit", {...}, ack=True)  # the handler's return value
        for event in client:                            # ReceivedEvent(event, data, channel)
            ...

- :meth:`Client.connect` opens the connection and reads ``mls.welcome``
  (:attr:`~Client.connection_id`, :attr:`~Client.user_id`).
- Replies are routed to the :meth:`~Client.emit` waiting for them; events that arrive
  meanwhile are kept, in order, for :meth:`~Client.receive`. An error reply raises
  :class:`ErrorReply`.
- The client reads only while one of its methods is running: pings are answered then. Call
  :meth:`~Client.receive` regularly (a receive loop in its own thread or greenlet is the
  usual shape; :meth:`~Client.emit` may be called from others meanwhile).
- With ``reconnect=True`` a dropped connection is re-established with capped exponential
  backoff and jitter (:class:`~mlsockets.client.backoff.Backoff`), every subscribed channel
  is subscribed again, and the calls in progress carry on. An ``emit(ack=True)`` whose
  connection dropped before its reply raises ConnectionClosedError: the server may or may
  not have handled it. Only a drop reconnects: a failure of the first connection, a close
  requested by this client, a close code in
  :data:`~mlsockets.client.backoff.FATAL_CLOSE_CODES` and a refused handshake (401, 403 ...)
  raise to the caller.
"""

from __future__ import annotations

import itertools
import logging
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from mlsockets.client.backoff import Backoff, retryable
from mlsockets.client.connection import ClientConnection, Headers, connect
from mlsockets.exceptions import (
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    InvalidHandshake,
    InvalidState,
    MLSocketsError,
    ProtocolError,
)
from mlsockets.formatters.base import FORMATTERS, Formatter, get_formatter
from mlsockets.formatters.envelope import MAX_EVENT_LENGTH, MAX_ID
from mlsockets.metrics.redact import redact_query
from mlsockets.protocol.connection import DEFAULT_MAX_MESSAGE_SIZE
from mlsockets.protocol.deflate import DeflateConfig
from mlsockets.protocol.frames import CloseCode
from mlsockets.typing import Message

__all__ = ["Client", "ErrorReply", "ReceivedEvent"]

logger = logging.getLogger("mlsockets.client")


class ErrorReply(MLSocketsError):
    """The server answered an ``emit(..., ack=True)`` with an error.

    Attributes:
        code: ``invalid``, ``unknown_event``, ``unauthorized``, ``forbidden``,
            ``rate_limited``, ``invalid_channel``, ``not_subscribed``, ``internal``, ...
        message: the server's client-safe message.
        fields: per-field validation messages (for ``invalid``), else empty.
    """

    def __init__(self, code: str, message: str, fields: Mapping[str, Any] | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.fields: dict[str, Any] = dict(fields or {})


@dataclass(frozen=True, slots=True)
class ReceivedEvent:
    """An event envelope from the server.

    Attributes:
        event: its name, e.g. ``chat.message`` or ``mls.presence``.
        data: its payload, as decoded.
        channel: the channel it was published to, or None for a direct event.
    """

    event: str
    data: Any = None
    channel: str | None = None


class _Waiting:
    """Marks an ack id whose reply has not arrived."""


_WAITING = _Waiting()

#: A reply envelope, or the exception that ended the wait for it.
_Slot = dict[str, Any] | BaseException | _Waiting


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def _formatter_named(name: str) -> Formatter:
    for formatter in FORMATTERS.values():
        if formatter.name == name:
            return get_formatter(formatter.subprotocol)  # ConfigurationError without msgpack
    known = ", ".join(repr(f.name) for f in FORMATTERS.values())
    raise ValueError(f"unknown format {name!r}; known: {known}")


class Client:
    """An envelope client. Create it with :meth:`connect` (or the constructor, then
    :meth:`open`), use it, then :meth:`close` it (or use it as a context manager).

    Args:
        url: the ``ws://`` or ``wss://`` URL of an mlsockets endpoint.
        format: ``"json"`` (subprotocol ``mlsockets.json.v1``) or ``"msgpack"``
            (``mlsockets.msgpack.v1``; needs ``pip install mlsockets[msgpack]``).
        headers: extra handshake headers (cookies, ``Origin`` ...).
        token: sent as ``Authorization: Bearer <token>``.
        timeout: seconds to connect and receive ``mls.welcome`` (each reconnection
            attempt too; a call that is reconnecting may overrun its own timeout by this).
        reconnect: re-establish dropped connections (see the module docstring).
        backoff: delays between reconnection attempts.
        on_reconnect: called with the client after each successful reconnection, once
            the channels are subscribed again, by the call that reconnected (it may emit
            and wait for acks; what it raises propagates to that call).
        compression, max_message_size, ssl_context, unix_path, close_timeout: as for
            :func:`mlsockets.client.connect`.

    Thread safety: every method may be called from any thread or greenlet. One caller
    reads the socket at a time and hands replies and events to the others.
    """

    def __init__(
        self,
        url: str,
        *,
        format: str = "json",
        headers: Headers = (),
        token: str | None = None,
        timeout: float | None = 10.0,
        reconnect: bool = False,
        backoff: Backoff | None = None,
        on_reconnect: Callable[[Client], object] | None = None,
        compression: bool | DeflateConfig | None = True,
        max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
        ssl_context: ssl.SSLContext | None = None,
        unix_path: str | None = None,
        close_timeout: float = 5.0,
    ) -> None:
        self.url = url
        # For logs and repr: a ?token=... in the URL is a credential (mlsockets.tokens).
        self._shown_url = redact_query(url)
        self.formatter = _formatter_named(format)
        self.timeout = timeout
        self.reconnect = reconnect
        self.backoff = backoff or Backoff()
        self.on_reconnect = on_reconnect
        extra = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
        if token is not None:
            extra.append(("Authorization", f"Bearer {token}"))
        self._connect_options: dict[str, Any] = {
            "subprotocols": (self.formatter.subprotocol,),
            "headers": extra,
            "compression": compression,
            "timeout": timeout,
            "max_message_size": max_message_size,
            "ssl_context": ssl_context,
            "unix_path": unix_path,
            "close_timeout": close_timeout,
        }
        #: From the last ``mls.welcome``: this connection's id, the authenticated user's id
        #: (None when anonymous) and the server's heartbeat interval in seconds (or None).
        self.connection_id: str | None = None
        self.user_id: str | None = None
        self.heartbeat: float | None = None
        #: How many times the connection was re-established.
        self.reconnects = 0
        self._cond = threading.Condition(threading.Lock())
        self._conn: ClientConnection | None = None
        self._reading = False
        self._events: deque[ReceivedEvent] = deque()
        self._pending: dict[int, _Slot] = {}
        self._ids = itertools.count(1)
        self._channels: dict[str, None] = {}  # an ordered set
        self._opened = False
        self._closing = False
        self._failure: BaseException | None = None  # why reconnecting stopped for good
        self._reconnected = False  # on_reconnect is due
        self._failures = 0  # consecutive failed reconnection attempts
        self._next_attempt = 0.0

    @classmethod
    def connect(cls, url: str, **options: Any) -> Client:
        """``Client(url, **options)``, opened. See :meth:`open` for what it raises."""
        client = cls(url, **options)
        client.open()
        return client

    # -- connecting ----------------------------------------------------------------------

    def open(self) -> None:
        """Connect and read ``mls.welcome``.

        Raises:
            InvalidHandshake: the server refused (``status`` 401, 403, 429 ...) or did not
                select the formatter's subprotocol (not an mlsockets envelope endpoint).
            ProtocolError: the first message was not ``mls.welcome``.
            ConnectionClosed: the server closed the connection first (a refused connect).
            TimeoutError, OSError: as for :func:`mlsockets.client.connect`.
            InvalidState: already open.
        """
        with self._cond:
            if self._opened or self._closing:
                raise InvalidState("this client was opened already")
        conn = self._handshake()
        with self._cond:
            self._conn = conn
            self._opened = True

    def _handshake(self) -> ClientConnection:
        """Open a connection and read its welcome (no lock held)."""
        conn = connect(self.url, **self._connect_options)
        try:
            subprotocol = self.formatter.subprotocol
            if conn.subprotocol != subprotocol:
                raise InvalidHandshake(
                    f"the server did not select the {subprotocol} subprotocol"
                    " (is this an mlsockets envelope endpoint?)"
                )
            self._welcome(conn.recv(timeout=self.timeout))
        except ProtocolError as exc:
            conn.close(CloseCode.PROTOCOL_ERROR, exc.reason[:100])
            raise
        except BaseException:
            conn.close()
            raise
        return conn

    def _welcome(self, message: Message) -> None:
        try:
            obj = self.formatter.decode(message)
        except ValueError as exc:
            raise ProtocolError(f"undecodable first message: {exc}") from None
        data = obj.get("data") if isinstance(obj, dict) else None
        if not isinstance(obj, dict) or obj.get("event") != "mls.welcome":
            raise ProtocolError("the server's first message was not mls.welcome")
        if not isinstance(data, dict) or not isinstance(data.get("connection_id"), str):
            raise ProtocolError("mls.welcome without a connection_id")
        user_id = data.get("user_id")
        heartbeat = data.get("heartbeat")
        self.connection_id = data["connection_id"]
        self.user_id = None if user_id is None else str(user_id)
        self.heartbeat = float(heartbeat) if isinstance(heartbeat, int | float) else None

    @property
    def connection(self) -> ClientConnection | None:
        """The current raw connection (None while reconnecting)."""
        return self._conn

    @property
    def subprotocol(self) -> str:
        return self.formatter.subprotocol

    @property
    def channels(self) -> tuple[str, ...]:
        """The channels subscribed through this client, in subscription order."""
        with self._cond:
            return tuple(self._channels)

    # -- sending -------------------------------------------------------------------------

    def emit(
        self, event: str, data: Any = None, *, ack: bool = False, timeout: float | None = 10.0
    ) -> Any:
        """Send an event; with ``ack``, wait for the server's reply and return its data.

        Args:
            event: the event name (1 to 128 characters).
            data: the payload; anything the formatter can encode.
            ack: ask for a reply (the envelope gets an ``id``) and wait for it.
            timeout: seconds to wait for the reply (and, while reconnecting, for a
                connection to send on).

        Returns:
            None without ``ack``, else the reply's ``data`` (the handler's return value).

        Raises:
            ErrorReply: the server answered with an error.
            TimeoutError: no reply in time (a late reply is dropped).
            ConnectionClosedOK / ConnectionClosedError: the connection closed (and could
                not be re-established), or it dropped before the reply came.
            TypeError / ValueError: ``data`` cannot be encoded, or a bad event name.
        """
        if not isinstance(event, str) or not 0 < len(event) <= MAX_EVENT_LENGTH:
            raise ValueError(f"an event name is a string of 1 to {MAX_EVENT_LENGTH} characters")
        deadline = None if timeout is None else time.monotonic() + timeout
        if not ack:
            self._send(self.formatter.encode({"event": event, "data": data}), deadline)
            return None
        with self._cond:
            msg_id = next(self._ids) % (MAX_ID + 1)
            self._pending[msg_id] = _WAITING
        try:
            envelope = {"event": event, "data": data, "id": msg_id}
            self._send(self.formatter.encode(envelope), deadline)
            self._pump(lambda: self._pending[msg_id] is not _WAITING, deadline)
            with self._cond:
                slot = self._pending[msg_id]
        finally:
            with self._cond:
                self._pending.pop(msg_id, None)
        return _reply_data(slot)

    def subscribe(self, channel: str, timeout: float | None = 10.0) -> Any:
        """Join ``channel`` (``mls.subscribe``); return the ack's data: ``{"channel"}``,
        plus ``"members"`` for a presence channel.

        Raises ErrorReply (``forbidden``, ``invalid_channel`` ...) like :meth:`emit`.
        """
        data = self.emit("mls.subscribe", {"channel": channel}, ack=True, timeout=timeout)
        with self._cond:
            self._channels[channel] = None
        return data

    def unsubscribe(self, channel: str, timeout: float | None = 10.0) -> Any:
        """Leave ``channel`` (``mls.unsubscribe``); return the ack's data. It is no longer
        subscribed again after a reconnection, even when this raises."""
        with self._cond:
            self._channels.pop(channel, None)
        return self.emit("mls.unsubscribe", {"channel": channel}, ack=True, timeout=timeout)

    def _send(self, message: Message, deadline: float | None) -> None:
        while True:
            conn = self._conn
            if conn is None:
                # Reconnecting (or never opened, or given up: _step raises then).
                self._pump(lambda: self._conn is not None, deadline)
                continue
            try:
                conn.send(message)
                return
            except ConnectionClosed:
                if not self._may_reconnect():
                    raise
                # Whoever reads sees the close (after the messages before it) and reconnects.
                self._pump(self._replaced(conn), deadline)

    def _replaced(self, conn: ClientConnection) -> Callable[[], bool]:
        return lambda: self._conn is not conn

    # -- receiving -----------------------------------------------------------------------

    def receive(self, timeout: float | None = None) -> ReceivedEvent:
        """Return the next event from the server (replies go to their :meth:`emit`).

        Raises:
            TimeoutError: nothing arrived in time.
            ConnectionClosedOK / ConnectionClosedError: the connection is closed (and could
                not be re-established) and every event received before was returned.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        self._pump(lambda: bool(self._events), deadline)
        with self._cond:
            return self._events.popleft()

    def __iter__(self) -> Iterator[ReceivedEvent]:
        """Yield events until the connection closes normally; an abnormal close raises."""
        while True:
            try:
                yield self.receive()
            except ConnectionClosedOK:
                return

    def _pump(self, ready: Callable[[], bool], deadline: float | None) -> None:
        """Read messages until ``ready()`` (called with the lock held) is true. When another
        caller is reading, wait for it to hand over what it read instead."""
        cond = self._cond
        with cond:
            while not ready():
                if self._reading:
                    timeout = _remaining(deadline)
                    if timeout == 0:
                        raise TimeoutError("timed out")
                    cond.wait(timeout)
                    continue
                self._reading = True
                cond.release()
                try:
                    message = self._step(deadline)
                finally:
                    cond.acquire()
                    self._reading = False
                    cond.notify_all()
                if message is not None:
                    self._dispatch(message)
                    cond.notify_all()
                elif self._reconnected:
                    self._reconnected = False
                    self._after_reconnect()

    def _after_reconnect(self) -> None:
        """Run ``on_reconnect`` (lock held on entry and exit) with no lock held and nobody
        reading, so that the callback may itself emit and wait for acks."""
        callback = self.on_reconnect
        if callback is None:
            return
        self._cond.release()
        try:
            callback(self)
        finally:
            self._cond.acquire()

    def _step(self, deadline: float | None) -> Message | None:
        """As the only reader (no lock held): read one message, or reconnect (None)."""
        conn = self._conn
        if conn is None:
            if self._failure is not None:
                raise self._failure
            if not self._opened or not self._may_reconnect():
                raise InvalidState("the client is not connected; call open() first")
            self._reconnect(deadline)
            return None
        try:
            return conn.recv(timeout=_remaining(deadline))
        except ConnectionClosed as exc:
            if not self._may_reconnect() or not retryable(exc):
                raise
            self._lost(conn, exc)
            return None

    def _dispatch(self, message: Message) -> None:
        """Route one message (lock held): a reply to its waiter, an event to the queue."""
        try:
            obj = self.formatter.decode(message)
        except ValueError as exc:
            logger.warning("dropping an undecodable message from the server: %s", exc)
            return
        if not isinstance(obj, dict):
            logger.warning("dropping a message that is not an envelope: %.80r", obj)
            return
        if "reply" in obj:
            msg_id = obj["reply"]
            if isinstance(msg_id, int) and self._pending.get(msg_id) is _WAITING:
                self._pending[msg_id] = obj
            else:
                logger.debug("dropping a reply nobody waits for: %.80r", msg_id)
            return
        event = obj.get("event")
        channel = obj.get("channel")
        if not isinstance(event, str) or not (channel is None or isinstance(channel, str)):
            logger.warning("dropping a malformed envelope: %.80r", obj)
            return
        self._events.append(ReceivedEvent(event, obj.get("data"), channel))

    # -- reconnecting --------------------------------------------------------------------

    def _may_reconnect(self) -> bool:
        return self.reconnect and not self._closing and self._failure is None

    def _lost(self, conn: ClientConnection, exc: ConnectionClosed) -> None:
        """The connection dropped: fail the acks it owed, schedule the first attempt."""
        logger.warning(
            "connection to %s lost (%d %s); reconnecting", self._shown_url, exc.code, exc.reason
        )
        with self._cond:
            if self._conn is conn:
                self._conn = None
            for msg_id, slot in self._pending.items():
                if slot is _WAITING:
                    self._pending[msg_id] = ConnectionClosedError(exc.code, exc.reason)
            self._failures = 0
            self._next_attempt = time.monotonic() + self.backoff.delay(0)
            self._cond.notify_all()

    def _reconnect(self, deadline: float | None) -> None:
        """Attempt connections, spaced by the backoff, until one works (no lock held).

        Raises TimeoutError when ``deadline`` passes while waiting for the next attempt
        (the next caller carries on), or the error that made it give up.
        """
        while True:
            self._raise_if_closing()
            wait = self._next_attempt - time.monotonic()
            if wait > 0:
                left = _remaining(deadline)
                if left is not None and left < wait:
                    time.sleep(left)
                    raise TimeoutError("timed out while waiting to reconnect")
                time.sleep(wait)
            try:
                conn = self._handshake()
                try:
                    self._resubscribe(conn)
                except BaseException:
                    conn.close()
                    raise
            except Exception as exc:
                self._failures += 1
                limit = self.backoff.max_attempts
                if not retryable(exc) or (limit is not None and self._failures >= limit):
                    logger.error("giving up reconnecting to %s: %s", self._shown_url, exc)
                    with self._cond:
                        self._failure = exc
                    raise
                delay = self.backoff.delay(self._failures)
                self._next_attempt = time.monotonic() + delay
                logger.warning(
                    "reconnection attempt %d to %s failed (%s); next in %.2f s",
                    self._failures,
                    self._shown_url,
                    exc,
                    delay,
                )
                continue
            with self._cond:
                closing = self._closing  # close() was called meanwhile
                if not closing:
                    self._conn = conn
                    self._failures = 0
                    self.reconnects += 1
                    self._reconnected = True
            if closing:
                conn.close()
                continue
            logger.info("reconnected to %s (%d channels)", self._shown_url, len(self._channels))
            return

    def _raise_if_closing(self) -> None:
        if self._closing:
            raise ConnectionClosedOK(CloseCode.NORMAL_CLOSURE, "closed by the client")

    def _resubscribe(self, conn: ClientConnection) -> None:
        """Subscribe ``conn`` to every channel again; drop (with a WARNING) the channels the
        server now refuses. Events that arrive meanwhile are queued as usual."""
        with self._cond:
            ids = {next(self._ids) % (MAX_ID + 1): channel for channel in self._channels}
            for msg_id in ids:
                self._pending[msg_id] = _WAITING
        try:
            for msg_id, channel in ids.items():
                envelope = {"event": "mls.subscribe", "data": {"channel": channel}, "id": msg_id}
                conn.send(self.formatter.encode(envelope))
            deadline = None if self.timeout is None else time.monotonic() + self.timeout
            while True:
                with self._cond:
                    if all(self._pending[i] is not _WAITING for i in ids):
                        break
                message = conn.recv(timeout=_remaining(deadline))
                with self._cond:
                    self._dispatch(message)
                    self._cond.notify_all()
            with self._cond:
                for msg_id, channel in ids.items():
                    try:
                        _reply_data(self._pending[msg_id])
                    except ErrorReply as exc:
                        logger.warning("cannot subscribe to %s again: %s", channel, exc)
                        self._channels.pop(channel, None)
        finally:
            with self._cond:
                for msg_id in ids:
                    self._pending.pop(msg_id, None)

    # -- closing -------------------------------------------------------------------------

    def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Close the connection (closing handshake, bounded by ``close_timeout``) and stop
        reconnecting. Calls blocked in other threads raise ConnectionClosedOK once the
        events received before the close are consumed. Safe to call twice."""
        with self._cond:
            self._closing = True
            conn = self._conn
            if conn is None and self._failure is None:
                self._failure = ConnectionClosedOK(code, reason)
        if conn is not None:
            conn.close(code, reason)
        with self._cond:
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called or the connection is closed for good."""
        conn = self._conn
        return self._closing or self._failure is not None or (conn is not None and conn.closed)

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open" if self._conn is not None else "connecting"
        return f"<Client {self._shown_url} {state} connection_id={self.connection_id!r}>"


def _reply_data(slot: _Slot) -> Any:
    """The data of a reply envelope; raises for an error reply or a lost connection."""
    if isinstance(slot, BaseException):
        raise slot
    if isinstance(slot, _Waiting):
        raise InvalidState("no reply yet")
    error = slot.get("error")
    if error is not None:
        if not isinstance(error, dict):
            raise ErrorReply("internal", f"malformed error reply: {error!r:.80}")
        fields = error.get("fields")
        raise ErrorReply(
            str(error.get("code", "internal")),
            str(error.get("message", "")),
            fields if isinstance(fields, dict) else None,
        )
    return slot.get("data")
