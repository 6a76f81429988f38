"""One WebSocket connection over a gevent socket: the blocking object applications use.

Concurrency contract (STYLE.md, principle 2): the greenlet that calls :meth:`WebSocket.receive`
owns reading; any greenlet may :meth:`~WebSocket.send`. Greenlets switch only at I/O, so each
call into the :class:`~mlsockets.protocol.connection.Protocol` runs to completion undisturbed.

Output is never written from the caller's stack: ``send`` queues the frame and schedules one
flush for the end of the current hub iteration, so a burst of sends (a pipelined echo, a
broadcast) costs one ``send`` system call per connection. The flush is non-blocking; bytes the
kernel will not take stay in a queue bounded by ``ServerOptions.max_queue`` and a writer
greenlet, spawned only then, drains it. A client that lets that queue overflow is dropped with
1008 and a WARNING, without ever blocking the sender or the other connections. (One exception
to the first rule: a burst that passes ``max_queue`` before its flush ran is flushed at once,
still without blocking, so that bytes never offered to the kernel do not count against it.)
"""

from __future__ import annotations

import logging
import socket
import ssl
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import gevent
import gevent.ssl
from gevent import get_hub
from gevent._waiter import Waiter

from mlsockets import metrics
from mlsockets.exceptions import ConnectionClosed, ConnectionClosedError, ConnectionClosedOK
from mlsockets.metrics import COUNTS as _COUNTS
from mlsockets.protocol.connection import Close, Protocol, State
from mlsockets.protocol.frames import CloseCode, Opcode, serialize_header
from mlsockets.transport.gevent.compat import GeventWebSocketCompat
from mlsockets.typing import Message

if TYPE_CHECKING:
    from mlsockets.transport.gevent.options import ServerOptions
    from mlsockets.transport.gevent.reaper import Reaper

__all__ = ["WebSocket", "broadcast"]

logger = logging.getLogger("mlsockets.transport")

RECV_SIZE = 65536
#: Seconds a callback-mode worker may deliver one connection's backlog before yielding once.
FAIR_SLICE = 0.01
_LOOP_TURN = 1e-6  # a timer this short fires in the next loop iteration, after its I/O poll
_monotonic = time.monotonic
_TLS_SOCKETS = (ssl.SSLSocket, gevent.ssl.SSLSocket)


def _os_socket(sock: Any) -> Any:
    """The non-blocking OS socket under a plain gevent socket, or None.

    A gevent TLS socket has one too (``_sock``), but bytes written to it or read from it
    directly would bypass the TLS record layer.
    """
    if isinstance(sock, _TLS_SOCKETS):
        return None
    return getattr(sock, "_sock", None)


class WebSocket(GeventWebSocketCompat):
    """A server-side WebSocket connection with a blocking API.

    Created by the handler for every valid handshake, before the application decides; it
    becomes usable once the handshake is accepted (explicitly through the ``Upgrade``, or
    implicitly on first use, as gevent-websocket applications expect).
    """

    __slots__ = (
        "_sock",
        "_raw_send",
        "_protocol",
        "_options",
        "_reaper",
        "_events",
        "_event_pos",
        "_reading",
        "_out",
        "_out_size",
        "_flush_scheduled",
        "_writer",
        "_transport_closed",
        "_close_after_flush",
        "_local_close",
        "_activate",
        "subprotocol",
        "environ",
        "last_recv",
        "ping_sent_at",
        "deadline",
        "_watcher",
        "_on_message",
        "_on_close",
        "_worker",
        "__weakref__",
    )

    def __init__(
        self,
        sock: Any,
        options: ServerOptions,
        reaper: Reaper,
        environ: dict[str, Any],
        activate: Callable[[], object] | None = None,
    ) -> None:
        self._sock = sock
        raw = _os_socket(sock)
        # Plain sockets: write straight to the non-blocking OS socket. TLS sockets have
        # no such shortcut; their writes always go through the writer greenlet.
        self._raw_send: Callable[[bytes], int] | None = raw.send if raw is not None else None
        self._protocol: Protocol | None = None
        self._options = options
        self._reaper = reaper
        self._events: list[Message] = []
        self._event_pos = 0
        self._reading = False
        self._out: list[bytes] = []
        self._out_size = 0
        self._flush_scheduled = False
        self._writer: gevent.Greenlet[Any, Any] | None = None
        self._transport_closed = False
        self._close_after_flush = False
        self._local_close: Close | None = None
        self._activate = activate
        self.subprotocol: str | None = None
        self.environ = environ
        self.last_recv = _monotonic()
        self.ping_sent_at: float | None = None
        self.deadline: float | None = None
        self._watcher: Any = None
        self._on_message: Callable[[WebSocket, Message], object] | None = None
        self._on_close: Callable[[WebSocket], object] | None = None
        self._worker: object | None = None  # set while a worker greenlet serves this connection

    # -- life cycle ---------------------------------------------------------------------

    def open(self, protocol: Protocol, subprotocol: str | None, buffered: bytes = b"") -> None:
        """Start the connection (the handler calls this once the 101 is decided).

        ``buffered`` holds bytes the HTTP parser read past the request head.
        """
        self._protocol = protocol
        self.subprotocol = subprotocol
        self._activate = None
        self.last_recv = _monotonic()
        self._reaper.add(self)
        _COUNTS.opened += 1  # metrics: plain integers, folded in batches by the reaper
        if buffered:
            self._feed(buffered)

    def _ensure_open(self) -> Protocol:
        if self._protocol is None:
            activate = self._activate
            if activate is None:
                raise ConnectionClosedError(CloseCode.ABNORMAL_CLOSURE, "handshake refused")
            activate()  # gevent-websocket style: first use accepts the handshake
            assert self._protocol is not None
        return self._protocol

    @property
    def closed(self) -> bool:
        """True once no more messages can be sent (closing handshake started or done)."""
        p = self._protocol
        return p is None or p.state is not State.OPEN or self._transport_closed

    @property
    def close_code(self) -> int | None:
        """The peer's close code, 1006 if the TCP connection dropped, or the code this side
        failed with (1008 slow consumer, 1011 heartbeat timeout); None while open."""
        if self._local_close is not None:
            return self._local_close.code
        p = self._protocol
        if p is not None and p.failure is not None:  # the peer's protocol error (1002, 1007...)
            return p.failure.code
        return None if p is None else p.close_code

    @property
    def close_reason(self) -> str:
        if self._local_close is not None:
            return self._local_close.reason
        p = self._protocol
        if p is not None and p.failure is not None:
            return p.failure.reason
        return "" if p is None or p.close_rcvd is None else p.close_rcvd.reason

    # -- receiving ------------------------------------------------------------------------

    def receive(self) -> Message | None:
        """Block until the next message; return None once the connection is closed.

        Text messages are ``str``, binary ones ``bytes``. Pings are answered and close
        frames echoed automatically while this runs.
        """
        self._ensure_open()
        while True:
            events = self._events
            if self._event_pos < len(events):
                message = events[self._event_pos]
                self._event_pos += 1
                return message
            if self._transport_closed:
                return None
            self._read(blocking=True)

    def __iter__(self) -> Iterator[Message]:
        """Iterate over messages until the connection closes."""
        while (message := self.receive()) is not None:
            yield message

    def _read(self, blocking: bool) -> None:
        if self._close_after_flush:
            # The input is over (EOF, closing handshake done, or failed) and the transport
            # closes once the output is flushed. Reading again would return EOF at once, in a
            # loop that never yields to the flush callback or the writer: wait for them.
            if blocking:
                writer = self._writer
                if writer is not None:
                    writer.join()
                else:
                    gevent.sleep(0)
            return
        self._reading = True
        try:
            # Non-blocking reads go to the OS socket (poll() only calls this for plain ones).
            data = self._sock.recv(RECV_SIZE) if blocking else self._sock._sock.recv(RECV_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""  # reset, or the socket was closed by a deadline
        finally:
            self._reading = False
        self._feed(data)

    def poll(self) -> None:
        """Process input that is waiting, without blocking (the reaper calls this when no
        greenlet is inside :meth:`receive`, so pongs and closes of idle readers are seen)."""
        if self._reading or self._transport_closed or self._protocol is None:
            return
        if self._watcher is not None:
            return  # callback mode: the hub reads whenever data arrives
        if len(self._events) - self._event_pos > 1024:
            return  # the application is not reading; let TCP push back on the client
        if self._raw_send is None:
            return  # TLS: a non-blocking read could consume half a record; deadlines cover it
        self._read(blocking=False)

    def _feed(self, data: bytes) -> None:
        protocol = self._protocol
        assert protocol is not None
        if data:
            self.last_recv = _monotonic()
            _COUNTS.bytes_in += len(data)  # metrics
            protocol.receive_data(data)
        else:
            protocol.receive_eof()
        events = protocol.events_received()
        if events:
            queue = self._events
            if self._event_pos == len(queue):
                queue = self._events = []
                self._event_pos = 0
            for event in events:
                cls = event.__class__
                if cls is str or cls is bytes:
                    queue.append(event)  # type: ignore[arg-type]
                else:
                    _COUNTS.messages_in -= 1  # metrics: a control frame is no message (rare)
            _COUNTS.messages_in += len(events)  # metrics
        out = protocol.data_to_send()
        if out:
            self._queue(out)
        if protocol.close_expected():
            if protocol.failure is not None:
                logger.info(
                    "closing connection: %s (%d)", protocol.failure.reason, protocol.failure.code
                )
            self._close_transport()

    # -- callback mode ---------------------------------------------------------------

    def serve_callbacks(
        self,
        on_message: Callable[[WebSocket, Message], object],
        on_close: Callable[[WebSocket], object] | None = None,
    ) -> None:
        """Deliver messages to ``on_message(ws, message)`` instead of :meth:`receive`.

        No greenlet is held while the connection is idle: the hub reads when the socket is
        readable, and a worker greenlet is spawned only while messages wait, calling
        ``on_message`` for each in order (it may block). ``on_close(ws)`` runs once, in a
        worker, after the connection closed. Returns at once; call only after :meth:`open`,
        from the greenlet that owns the connection.
        """
        self._on_message = on_message
        self._on_close = on_close
        if self._raw_send is None:
            # TLS: the hub cannot do partial SSL reads; keep a reading greenlet instead.
            self._worker = gevent.spawn(self._blocking_worker)
            return
        self._watcher = get_hub().loop.io(self._sock.fileno(), 1)
        self._watcher.start(self._on_readable)
        if self._event_pos < len(self._events) or self._transport_closed:
            self._dispatch()

    def _on_readable(self) -> None:
        """libev callback (runs in the hub): read once, parse, hand messages to a worker."""
        try:
            data = self._sock._sock.recv(RECV_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        self._feed(data)
        if self._event_pos < len(self._events) or self._transport_closed:
            self._dispatch()
            if len(self._events) - self._event_pos > 256 and self._watcher is not None:
                self._watcher.stop()  # the worker is behind: let TCP push back on the peer

    def _dispatch(self) -> None:
        if self._worker is None:
            self._worker = _WORKERS
            _WORKERS.dispatch(self)

    def run_callbacks(self) -> None:
        """Deliver queued messages to ``on_message`` (called by a worker greenlet)."""
        on_message = self._on_message
        slice_end = _monotonic() + FAIR_SLICE
        try:
            while on_message is not None and self._event_pos < len(self._events):
                message = self._events[self._event_pos]
                self._event_pos += 1
                self._call(on_message, message)
                if self._event_pos < len(self._events) and _monotonic() >= slice_end:
                    # A handler that never blocks (a broadcast writes without blocking) would
                    # hold the hub for the whole backlog: signals, heartbeats and every other
                    # connection waited seconds behind one busy publisher (tests/reliability).
                    # Not sleep(0): that runs queued callbacks only, and gevent polls I/O (and
                    # signals) once per 50 of them; a timer waits for one loop iteration.
                    gevent.sleep(_LOOP_TURN)
                    slice_end = _monotonic() + FAIR_SLICE
        finally:
            self._worker = None
        watcher = self._watcher
        if self._transport_closed:
            self._notify_closed()
        elif watcher is not None and not watcher.active:
            watcher.start(self._on_readable)

    def _blocking_worker(self) -> None:
        on_message = self._on_message
        assert on_message is not None
        try:
            while (message := self.receive()) is not None:
                self._call(on_message, message)
        finally:
            self._worker = None
        self._notify_closed()

    def _call(self, on_message: Callable[[WebSocket, Message], object], message: Message) -> None:
        """Run the application's callback; its failure closes this connection with 1011."""
        try:
            on_message(self, message)
        except ConnectionClosed:
            pass  # the peer left while the handler was sending
        except Exception:
            logger.exception("WebSocket on_message handler failed")
            self.fail(CloseCode.INTERNAL_ERROR, "internal error")

    def _notify_closed(self) -> None:
        on_close = self._on_close
        self._on_close = None
        self._on_message = None
        if on_close is not None:
            try:
                on_close(self)
            except Exception:
                logger.exception("WebSocket on_close handler failed")

    def rebind(self, sock: Any) -> None:
        """Use ``sock`` (the same connection, detached from its HTTP handler) from now on."""
        self._sock = sock
        raw = _os_socket(sock)
        self._raw_send = raw.send if raw is not None else None

    # -- sending -----------------------------------------------------------------------

    def send(self, message: Message | bytearray | memoryview, binary: bool | None = None) -> None:
        """Send a message: ``str`` as text, bytes-like as binary, unless ``binary`` says.

        Never blocks: the frame is queued and flushed when the calling greenlet yields.

        Raises:
            ConnectionClosedOK / ConnectionClosedError: the connection is closed.
        """
        protocol = self._ensure_open()
        if protocol.state is not State.OPEN or self._transport_closed:
            raise self._closed_exception()
        if binary is None:
            binary = not isinstance(message, str)
        if binary:
            protocol.send_binary(message.encode() if isinstance(message, str) else message)
        else:
            protocol.send_text(message if isinstance(message, (str, bytes)) else bytes(message))
        _COUNTS.messages_out += 1  # metrics
        self._queue(protocol.data_to_send())

    def send_frame_bytes(self, frame: bytes) -> None:
        """Queue bytes that already are complete, unmasked frames (a pre-encoded broadcast).

        Only valid for connections without permessage-deflate.
        """
        protocol = self._ensure_open()
        if protocol.state is not State.OPEN or self._transport_closed:
            raise self._closed_exception()
        _COUNTS.messages_out += 1  # metrics
        self._queue(frame)

    def ping(self, data: bytes = b"") -> None:
        """Send a Ping; the answer is handled by whoever is reading."""
        protocol = self._ensure_open()
        if protocol.state is State.OPEN and not self._transport_closed:
            protocol.send_ping(data)
            self._queue(protocol.data_to_send())

    def _closed_exception(self) -> ConnectionClosedOK | ConnectionClosedError:
        code = self.close_code or CloseCode.ABNORMAL_CLOSURE
        if code in (CloseCode.NORMAL_CLOSURE, CloseCode.GOING_AWAY):
            return ConnectionClosedOK(code, self.close_reason)
        return ConnectionClosedError(code, self.close_reason)

    def _queue(self, data: bytes) -> None:
        max_queue = self._options.max_queue
        if self._out_size > max_queue and self._flush_scheduled and self._raw_send is not None:
            # A burst of sends that has not yielded yet: these bytes were never offered to
            # the kernel, so they do not show that the client is slow. Offer them now.
            self._flush()
        if self._transport_closed:
            return
        if self._out_size > max_queue:
            self._slow_consumer()
            return
        self._out.append(data)
        self._out_size += len(data)
        if not self._flush_scheduled and self._writer is None:
            self._flush_scheduled = True
            get_hub().loop.run_callback(self._flush)

    def _flush(self) -> None:
        """Write what is queued without blocking; hand the rest to a writer greenlet."""
        self._flush_scheduled = False
        if self._writer is not None or not self._out or self._transport_closed:
            return
        out = self._out
        data = out[0] if len(out) == 1 else b"".join(out)
        self._out = []
        self._out_size = 0
        sent = 0
        if self._raw_send is not None:
            try:
                sent = self._raw_send(data)
            except BlockingIOError:
                sent = 0
            except OSError:
                self._abort()
                return
        _COUNTS.bytes_out += sent  # metrics: what the kernel took (the writer counts the rest)
        if sent < len(data):
            rest = data[sent:]
            self._out = [rest]
            self._out_size = len(rest)
            self._writer = gevent.spawn(self._write_loop)
        elif self._close_after_flush:
            self._shutdown_socket()

    def _write_loop(self) -> None:
        """Drain the queue with blocking writes (only while the kernel buffer is full)."""
        try:
            while self._out and not self._transport_closed:
                out = self._out
                data = out[0] if len(out) == 1 else b"".join(out)
                self._out = []
                self._out_size = 0
                try:
                    self._sock.sendall(data)
                except OSError:
                    self._abort()
                    return
                _COUNTS.bytes_out += len(data)  # metrics
        finally:
            self._writer = None
        if self._close_after_flush:
            self._shutdown_socket()

    def _slow_consumer(self) -> None:
        _COUNTS.slow_consumers += 1  # metrics
        logger.warning(
            "dropping slow consumer %s: more than %d bytes waiting to be sent",
            self.environ.get("REMOTE_ADDR", "?"),
            self._options.max_queue,
        )
        self._local_close = Close(CloseCode.POLICY_VIOLATION, "slow consumer")
        if self._protocol is not None:
            self._protocol.fail(CloseCode.POLICY_VIOLATION, "slow consumer")
        self._abort()

    # -- closing -------------------------------------------------------------------------

    def close(
        self, code: int = CloseCode.NORMAL_CLOSURE, reason: str | bytes = "", *, wait: bool = True
    ) -> None:
        """Start the closing handshake (RFC 6455 section 7.1.2) and wait for it to finish.

        With ``wait``, and when no other greenlet is reading, reads until the peer's Close
        arrives (at most ``close_timeout``); otherwise whoever reads completes the handshake,
        and the reaper closes TCP at the deadline. Safe to call twice.
        """
        protocol = self._protocol
        if protocol is None or self._transport_closed:
            return
        if isinstance(reason, bytes):
            reason = reason.decode(errors="replace")
        if protocol.state is State.OPEN:
            protocol.send_close(code, reason)
            self._queue(protocol.data_to_send())
            self.deadline = _monotonic() + self._options.close_timeout
        if (
            wait
            and self._watcher is None
            and not self._reading
            and gevent.getcurrent() is not get_hub()
        ):
            while not self._transport_closed:
                self._read(blocking=True)

    def fail(self, code: int, reason: str) -> None:
        """Fail the connection (RFC 6455 section 7.1.7): send Close, then close TCP at once."""
        protocol = self._protocol
        if protocol is None or self._transport_closed:
            return
        self._local_close = Close(code, reason)
        protocol.fail(code, reason)
        out = protocol.data_to_send()
        if out:
            self._queue(out)
        self._close_transport()

    def _close_transport(self) -> None:
        """Close TCP once the queued output is written (section 7.1.1: the server first)."""
        if self._transport_closed or self._close_after_flush:
            return
        self._close_after_flush = True
        if self.deadline is None:
            self.deadline = _monotonic() + self._options.close_timeout
        if self._writer is None and not self._flush_scheduled:
            self._flush()
            if self._writer is None and not self._transport_closed:
                self._shutdown_socket()

    def _shutdown_socket(self) -> None:
        if self._transport_closed:
            return
        self._mark_closed()
        sock = self._sock
        try:
            # FIN after our last frame; then read out what the client still sent, so that
            # closing does not turn into a RST that could destroy our Close frame in flight.
            sock.shutdown(socket.SHUT_WR)
            raw = getattr(sock, "_sock", None)
            if raw is not None:
                for _ in range(4):
                    if not raw.recv(RECV_SIZE):
                        break
        except OSError:
            pass
        self._close_socket()

    def _abort(self) -> None:
        """Drop the TCP connection now (peer gone, deadline passed, or slow consumer)."""
        if self._transport_closed:
            return
        self._mark_closed()
        self._out = []
        self._out_size = 0
        self._close_socket()

    def _mark_closed(self) -> None:
        self._transport_closed = True
        protocol = self._protocol
        if protocol is not None and protocol.state is not State.CLOSED:
            protocol.receive_eof()
        if protocol is not None:  # metrics: close codes (received 1006: no Close frame)
            sent, rcvd = protocol.close_sent, protocol.close_rcvd
            metrics.connection_closed(
                None if sent is None else sent.code, None if rcvd is None else rcvd.code
            )
        self._reaper.discard(self)
        watcher = self._watcher
        if watcher is not None:
            self._watcher = None
            watcher.stop()
            watcher.close()
            if self._on_close is not None:
                self._dispatch()  # the worker calls on_close once the queue is drained

    def _close_socket(self) -> None:
        try:
            self._sock.close()
        except OSError:  # pragma: no cover - close() on a broken socket
            pass

    def wait_closed(self) -> None:
        """Block until the TCP connection is closed (for handlers that returned early)."""
        while not self._transport_closed:
            if self._reading:
                gevent.sleep(0.05)
            else:
                self._read(blocking=True)

    # -- reaper hooks --------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Heartbeat and deadline check; called by the reaper about once a second."""
        if self._transport_closed:
            self._reaper.discard(self)
            return
        if self.deadline is not None and now >= self.deadline:
            logger.info("closing connection: close timeout")
            self._abort()
            return
        interval = self._options.ping_interval
        if not interval or self._protocol is None or self._protocol.state is not State.OPEN:
            return
        sent = self.ping_sent_at
        if sent is not None:
            if self.last_recv >= sent:
                self.ping_sent_at = None
            elif now - sent >= self._options.ping_timeout:
                self.poll()
                if self.last_recv < sent and not self._transport_closed:
                    logger.info(
                        "closing connection: no pong within %.1f s", self._options.ping_timeout
                    )
                    self.fail(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
        elif now - self.last_recv >= interval:
            self.poll()
            if not self._transport_closed:
                self.ping()
                self.ping_sent_at = now


def broadcast(websockets: Iterable[WebSocket], message: Message) -> int:
    """Send one message to many connections, encoding it once (STYLE.md, principle 10).

    Connections without compression get the same frame bytes, written without blocking;
    compressed ones encode with their own context. Closed connections are skipped and a
    slow one is dropped without delaying the others. Returns how many were sent to.
    """
    payload = message.encode() if isinstance(message, str) else bytes(message)
    frame = (
        serialize_header(Opcode.TEXT if isinstance(message, str) else Opcode.BINARY, len(payload))
        + payload
    )
    count = written = resent = 0
    for ws in websockets:
        protocol = ws._protocol
        if protocol is None or protocol.state is not State.OPEN or ws._transport_closed:
            continue
        if protocol.deflate is not None or protocol._send_frag_opcode:
            ws.send(message)
            resent += 1  # counted by send() in the metrics
        elif ws._out or ws._writer is not None or ws._raw_send is None:
            ws._queue(frame)
        else:
            # The common case: nothing queued, so write now and skip the flush callback.
            try:
                sent = ws._raw_send(frame)
            except BlockingIOError:
                sent = 0
            except OSError:
                ws._abort()
                continue
            written += sent
            if sent < len(frame):
                ws._queue(frame[sent:])
        count += 1
    # metrics: the receivers of the shared frame; bytes the kernel took now (flushes count
    # the rest)
    _COUNTS.messages_out += count - resent
    _COUNTS.bytes_out += written
    return count


class _Workers:
    """Greenlets that run callback-mode handlers, reused across connections.

    Spawning a greenlet per burst of messages costs several times a switch into a parked
    one, so finished workers wait (up to ``max_idle`` of them) for the next connection with
    work. An idle connection holds no greenlet; the pool's size follows the number of
    connections busy at the same moment.
    """

    def __init__(self, max_idle: int = 64) -> None:
        self.max_idle = max_idle
        self._idle: list[Waiter[Any]] = []

    def dispatch(self, ws: WebSocket) -> None:
        if self._idle:
            waiter = self._idle.pop()
            if gevent.getcurrent() is get_hub():
                waiter.switch(ws)
            else:
                get_hub().loop.run_callback(waiter.switch, ws)
        else:
            gevent.spawn_raw(self._run, ws)

    def _run(self, ws: WebSocket) -> None:
        waiter: Waiter[Any] = Waiter()
        while True:
            ws.run_callbacks()
            if len(self._idle) >= self.max_idle:
                return
            self._idle.append(waiter)
            ws = waiter.get()
            waiter.clear()


_WORKERS = _Workers()


# Adapters that know only the RawWebSocket protocol find the bulk path here (duck typing).
WebSocket.broadcast = staticmethod(broadcast)  # type: ignore[attr-defined]
