"""Many raw WebSocket clients in one process, on one epoll loop (stdlib only, no gevent).

Run it as its own process, beside the server under test::

    python -m benchmarks.soak.swarm hold URL -n 5000 [-k 200] [--publish-ms 20] [--timeout 120]
    python -m benchmarks.soak.swarm stall URL -n 10 [--rcvbuf 4096] [--timeout 120]

``hold``: open N connections (K handshakes in flight), print ``READY open=<n>``, then read
every frame strictly (:class:`wire.FrameParser`), answer pings, answer a server Close and
count its code. With ``--publish-ms`` (path ``/fanout``) one more connection becomes the
publisher and sends a message every MS milliseconds, so frames are in flight when the server
stops; every broadcast received must be one of those messages, intact. Ends when every
connection is closed, at ``--timeout``, or on SIGUSR1 (closes the rest with 1000).

``stall``: open N connections with a small receive buffer, print ``READY``, and never read
again (a client that stopped reading). On SIGUSR1 / SIGTERM or at ``--timeout`` it drains each
socket once to see whether the server closed it.

The last line is ``RESULT {json}``; exit status 0 unless handshakes failed or frames were bad.
"""

from __future__ import annotations

import argparse
import errno
import json
import re
import select
import signal
import socket
import sys
import time
from collections import Counter
from typing import Any

from benchmarks.soak import wire

_PUBLISHED = re.compile(rb"m[0-9]{1,12}")


class Conn:
    __slots__ = ("sock", "state", "head", "parser", "out", "code", "publisher")

    def __init__(self, sock: socket.socket, request: bytes, publisher: bool = False) -> None:
        self.sock = sock
        self.state = "connecting"  # -> handshake -> open -> closing -> done
        self.head = b""
        self.parser = wire.FrameParser()
        self.out = request
        self.code: int | None = None
        self.publisher = publisher


class Swarm:
    def __init__(self, url: str, args: argparse.Namespace) -> None:
        self.host, self.port, self.path = wire.split_url(url)
        self.args = args
        self.ep = select.epoll()
        self.conns: dict[int, Conn] = {}
        self.stats: Counter[str] = Counter()
        self.close_codes: Counter[int] = Counter()
        self.stop = False
        self.bad: list[str] = []

    # -- connections --------------------------------------------------------------------

    def open_one(self, publisher: bool = False) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if self.args.mode == "stall":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.args.rcvbuf)
        sock.setblocking(False)
        try:
            sock.connect((self.host, self.port))
        except BlockingIOError:
            pass
        conn = Conn(sock, wire.handshake_request(self.host, self.port, self.path), publisher)
        self.conns[sock.fileno()] = conn
        self.ep.register(sock.fileno(), select.EPOLLOUT | select.EPOLLIN)

    def finish(self, conn: Conn, why: str) -> None:
        if conn.state == "done":
            return
        if conn.state in ("connecting", "handshake"):
            self.stats["handshake_failed"] += 1
        elif conn.code is None:
            self.stats[why] += 1
        conn.state = "done"
        fd = conn.sock.fileno()
        try:
            self.ep.unregister(fd)
        except OSError:
            pass
        conn.sock.close()
        self.conns.pop(fd, None)

    def write(self, conn: Conn, data: bytes = b"") -> None:
        conn.out += data
        if not conn.out:
            return
        try:
            sent = conn.sock.send(conn.out)
        except BlockingIOError:
            sent = 0
        except OSError:
            self.finish(conn, "reset")
            return
        conn.out = conn.out[sent:]
        mask = select.EPOLLIN | (select.EPOLLOUT if conn.out else 0)
        try:
            self.ep.modify(conn.sock.fileno(), mask)
        except OSError:
            pass

    # -- events ---------------------------------------------------------------------------

    def on_event(self, fd: int, events: int) -> None:
        conn = self.conns.get(fd)
        if conn is None:
            return
        if conn.state == "connecting":
            err = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self.finish(conn, "connect_failed")
                return
            conn.state = "handshake"
        if events & select.EPOLLOUT and conn.out:
            self.write(conn)
        if not events & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
            return
        if conn.state == "open" and self.args.mode == "stall" and not conn.publisher:
            self.ep.modify(fd, 0)  # a stalled client never reads again
            return
        try:
            data = conn.sock.recv(262144)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.finish(conn, "eof_without_close")
            return
        if conn.state == "handshake":
            conn.head += data
            if b"\r\n\r\n" not in conn.head:
                return
            head, _, data = conn.head.partition(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 101"):
                self.bad.append(head.split(b"\r\n", 1)[0].decode("latin-1"))
                self.finish(conn, "handshake_failed")
                return
            conn.state = "open"
            self.stats["opened"] += 1
            if conn.publisher:
                self.write(conn, wire.frame(wire.TEXT, b"pub"))
            if self.args.mode == "stall":
                self.ep.modify(fd, 0)
                return
        self.on_frames(conn, data)

    def on_frames(self, conn: Conn, data: bytes) -> None:
        try:
            frames = conn.parser.feed(data)
        except wire.BadFrame as exc:
            self.stats["bad_frames"] += 1
            if len(self.bad) < 10:
                self.bad.append(str(exc))
            self.finish(conn, "bad")
            return
        for _fin, opcode, payload in frames:
            self.stats["frames"] += 1
            if conn.code is not None:
                self.stats["data_after_close"] += 1
            elif opcode == wire.PING:
                self.write(conn, wire.frame(wire.PONG, payload))
            elif opcode == wire.CLOSE:
                conn.code = wire.close_code(payload)
                self.close_codes[conn.code] += 1
                if conn.state == "open":
                    self.write(conn, wire.close_frame(conn.code))
                conn.state = "closing"
            elif opcode == wire.TEXT and self.args.publish_ms and not conn.publisher:
                self.stats["messages"] += 1
                if not _PUBLISHED.fullmatch(payload):
                    self.stats["bad_messages"] += 1
            else:
                self.stats["messages"] += 1

    # -- main loop ------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        args = self.args
        started = time.monotonic()
        deadline = started + args.timeout
        to_open = args.n
        publisher: Conn | None = None
        ready = False
        seq = 0
        next_pub = 0.0
        while not self.stop and time.monotonic() < deadline:
            in_flight = 0
            if not ready:
                in_flight = sum(c.state in ("connecting", "handshake") for c in self.conns.values())
            while to_open and in_flight < args.k:
                self.open_one()
                to_open -= 1
                in_flight += 1
            if not ready and not to_open and not in_flight:
                ready = True
                self.stats["handshake_seconds_x1000"] = int((time.monotonic() - started) * 1000)
                print(f"READY open={self.stats['opened']}", flush=True)
                if args.publish_ms:
                    self.open_one(publisher=True)
                    publisher = next(c for c in self.conns.values() if c.publisher)
            if ready and not any(not c.publisher for c in self.conns.values()):
                break  # every subscriber is closed
            now = time.monotonic()
            if publisher is not None and publisher.state == "open" and now >= next_pub:
                seq += 1
                self.write(publisher, wire.frame(wire.TEXT, b"m%d" % seq))
                self.stats["published"] += 1
                next_pub = now + args.publish_ms / 1000
            for fd, events in self.ep.poll(0.01 if publisher is not None else 0.1):
                self.on_event(fd, events)
        self.stats["seconds_x1000"] = int((time.monotonic() - started) * 1000)
        if args.mode == "stall":
            self.drain_stalled()
        for conn in list(self.conns.values()):
            self.stats["still_open"] += not conn.publisher
            try:
                conn.sock.send(wire.close_frame(1000))
            except OSError:
                pass
            conn.sock.close()
        result = {"close_codes": {str(k): v for k, v in self.close_codes.items()}, **self.stats}
        result["errors"] = self.bad
        return result

    def drain_stalled(self) -> None:
        """Did the server close the stalled connections? Read each until EOF or a reset (the
        server's closed socket may still be sending what its kernel buffer held: its window
        reopens as we read); those not ended within 20 s in all are still open."""
        deadline = time.monotonic() + 20.0
        for conn in list(self.conns.values()):
            if conn.state != "open" or conn.publisher:
                continue
            while True:
                conn.sock.settimeout(max(0.1, deadline - time.monotonic()))
                try:
                    data = conn.sock.recv(1 << 20)
                except TimeoutError:
                    break
                except OSError as exc:
                    if exc.errno in (errno.ECONNRESET, errno.EPIPE):
                        data = b""
                    else:
                        raise
                if not data:
                    self.stats["closed_by_server"] += 1
                    self.finish(conn, "stalled_closed")
                    break
                try:
                    for _fin, opcode, payload in conn.parser.feed(data):
                        if opcode == wire.CLOSE:
                            self.close_codes[wire.close_code(payload)] += 1
                except wire.BadFrame:
                    pass  # a connection dropped mid-frame ends mid-frame: that is expected


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=["hold", "stall"])
    parser.add_argument("url")
    parser.add_argument("-n", type=int, required=True)
    parser.add_argument("-k", type=int, default=200, help="handshakes in flight")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--publish-ms", type=float, default=0.0)
    parser.add_argument("--rcvbuf", type=int, default=4096)
    args = parser.parse_args(argv)
    swarm = Swarm(args.url, args)

    def stop(*_: Any) -> None:
        swarm.stop = True

    signal.signal(signal.SIGUSR1, stop)
    signal.signal(signal.SIGTERM, stop)
    result = swarm.run()
    print("RESULT " + json.dumps(result), flush=True)
    bad = result.get("handshake_failed", 0) or result.get("bad_frames", 0)
    return 1 if bad or result.get("bad_messages", 0) else 0


if __name__ == "__main__":
    sys.exit(main())
