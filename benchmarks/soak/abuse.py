"""Abuse: hostile clients against one server while a well-behaved one keeps talking to it.

Each attack runs in a thread against the soak app (``mlsockets serve``) while the main thread
probes: one echo connection opened before the attack sends a message every 0.2 s, and a new
handshake is made every second; each must be answered within ``PROBE_TIMEOUT``. Around each
attack the server's RSS is sampled every 0.1 s from /proc, and its fds and greenlets (not
counting the callback workers parked for reuse, a pool of at most 64) are read before and
after (``Server.settle`` waits for them to come back).

Attacks (``scale`` multiplies the counts):

* ``handshake_flood``: handshakes to ``/ws-limited`` (rate limited per address: 429) and to
  ``/echo`` (accepted, then dropped without a close), many at a time;
* ``slowloris``: connections that send part of a request line and then nothing;
* ``oversized``: a frame header announcing 1 GiB, and a real 2 MiB message (limit 1 MiB): 1009;
* ``fragmented_forever``: a text message in 16 KiB fragments that never ends: 1009; and
  100,000 empty fragments inside one message, which must be delivered intact;
* ``ping_flood``: pings as fast as possible, pongs never read: dropped as a slow consumer (1008);
* ``compression_bomb``: permessage-deflate message of 64 MiB of zeros (64 KiB on the wire): 1009;
* ``invalid_utf8``: text messages that are not UTF-8, connection after connection: 1007;
* ``subscribe_storm``: envelope clients on the hub subscribing to thousands of channels as fast
  as they can: error replies past ``max_channels_per_connection``, ``rate_limited`` replies,
  then 1008 "rate limit exceeded".
"""

from __future__ import annotations

import json
import socket
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.soak import wire
from benchmarks.soak.procs import Processes, Sampler, Server

PROBE_TIMEOUT = 10.0
ENV = {
    "MLSOCKETS_HANDSHAKE_TIMEOUT": "2",
    "MLSOCKETS_CLOSE_TIMEOUT": "2",
    "SOAK_HANDSHAKE_RATE": "20",
    "SOAK_HANDSHAKE_BURST": "20",
}
DEFLATE = "Sec-WebSocket-Extensions: permessage-deflate\r\n"
JSON_V1 = "Sec-WebSocket-Protocol: mlsockets.json.v1\r\n"


def parallel(count: int, workers: int, job: Callable[[int], Any]) -> list[Any]:
    """``job(i)`` for i in range(count) on ``workers`` threads; results (or exceptions)."""
    results: list[Any] = [None] * count
    lock = threading.Lock()
    todo = iter(range(count))

    def worker() -> None:
        while True:
            with lock:
                i = next(todo, None)
            if i is None:
                return
            try:
                results[i] = job(i)
            except Exception as exc:  # reported, counted by the caller
                results[i] = exc

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(min(workers, count))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def _outcome(results: list[Any]) -> Counter[str]:
    return Counter(r if isinstance(r, str) else type(r).__name__ for r in results)


def _closed_with(client: wire.Client) -> str:
    """What ended a connection: ``close <code>``, ``eof`` or ``reset``."""
    try:
        code = client.wait_close()
    except ConnectionResetError:
        return "reset"
    except TimeoutError:
        return "timeout"
    finally:
        client.close()
    return "eof" if code is None else f"close {code}"


# -- the attacks ------------------------------------------------------------------------------


def handshake_flood(server: Server, scale: float) -> dict[str, Any]:
    def limited(i: int) -> str:
        client = wire.Client(server.url("/ws-limited"), extra_headers=JSON_V1)
        client.close()  # dropped without a closing handshake: the server must clean up
        return f"http {client.status}"

    def echo(i: int) -> str:
        client = wire.Client(server.url("/echo"))
        client.close()
        return f"http {client.status}"

    n = int(300 * scale)
    return {
        "limited": _outcome(parallel(n, 20, limited)),
        "echo": _outcome(parallel(n, 20, echo)),
    }


def slowloris(server: Server, scale: float) -> dict[str, Any]:
    n = int(200 * scale)
    socks = []
    for i in range(n):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        sock.sendall(b"GET /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgr"[: 5 + i % 30])
        socks.append(sock)

    def wait(i: int) -> str:
        sock = socks[i]
        try:
            data = sock.recv(4096)
        except ConnectionResetError:
            return "reset"
        except TimeoutError:
            return "timeout"
        finally:
            sock.close()
        return "eof" if not data else f"answer {data.split(b' ', 2)[1].decode()}"

    return {"connections": n, "ended_by_server": _outcome(parallel(n, 50, wait))}


def oversized(server: Server, scale: float) -> dict[str, Any]:
    def announced(i: int) -> str:
        client = wire.Client(server.url("/echo"))
        header = bytes([0x81, 0x80 | 127]) + (1 << 30).to_bytes(8, "big") + b"mask"
        client.send(header + b"x" * 65536)
        return _closed_with(client)

    def real(i: int) -> str:
        client = wire.Client(server.url("/echo"))
        try:
            client.send(wire.frame(wire.BINARY, b"y" * (2 << 20)))
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed while we were still sending: the close code was sent first
        return _closed_with(client)

    n = int(40 * scale)
    return {
        "announced_1GiB": _outcome(parallel(n, 10, announced)),
        "real_2MiB": _outcome(parallel(max(1, n // 4), 5, real)),
    }


def fragmented_forever(server: Server, scale: float) -> dict[str, Any]:
    def job(i: int) -> str:
        client = wire.Client(server.url("/echo"))
        chunk = b"z" * 16384
        try:
            client.send(wire.frame(wire.TEXT, chunk, fin=False))
            for _ in range(400):  # 6.4 MiB if nothing stopped it
                client.send(wire.frame(wire.CONT, chunk, fin=False))
        except (BrokenPipeError, ConnectionResetError):
            pass
        return _closed_with(client)

    def empty(i: int) -> str:
        # Fragments that add nothing never reach the size limit: the message must still cost
        # bounded memory however many there are (a fuzzing finding, fixed in the protocol).
        client = wire.Client(server.url("/echo"))
        try:
            client.send(wire.frame(wire.TEXT, b"start", fin=False))
            client.send(wire.frame(wire.CONT, b"", fin=False) * 100_000)
            client.send(wire.frame(wire.CONT, b"end"))
            if client.recv_frame() != (True, wire.TEXT, b"startend"):
                return "wrong message"
            answer = client.echo("after")
            client.send(wire.close_frame())
            return "echoed" if answer == "after" and client.wait_close() == 1000 else "no close"
        finally:
            client.close()

    return {
        "clients": _outcome(parallel(int(20 * scale), 10, job)),
        "empty_fragments": _outcome(parallel(max(1, int(2 * scale)), 5, empty)),
    }


def ping_flood(server: Server, scale: float) -> dict[str, Any]:
    def job(i: int) -> str:
        client = wire.Client(server.url("/echo"))
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        ping = wire.frame(wire.PING, b"p" * 125) * 64
        sent = 0
        try:
            for _ in range(2000):  # up to 128,000 pings, 17 MiB of pongs never read
                client.send(ping)
                sent += 64
        except (BrokenPipeError, ConnectionResetError):
            client.close()
            return "dropped by server"
        client.close()
        return "not dropped"

    return {"clients": _outcome(parallel(int(10 * scale), 10, job))}


def compression_bomb(server: Server, scale: float) -> dict[str, Any]:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    bomb = compressor.compress(b"\0" * (64 << 20)) + compressor.flush(zlib.Z_SYNC_FLUSH)
    bomb = bomb[:-4]  # RFC 7692 section 7.2.1: drop the final 00 00 ff ff

    def job(i: int) -> str:
        client = wire.Client(server.url("/echo"), extra_headers=DEFLATE)
        if "permessage-deflate" not in client.head:
            client.close()
            return "deflate not negotiated"
        try:
            client.send(wire.frame(wire.BINARY, bomb, rsv1=True))
        except (BrokenPipeError, ConnectionResetError):
            pass
        return _closed_with(client)

    return {"wire_bytes": len(bomb), "clients": _outcome(parallel(int(10 * scale), 5, job))}


def invalid_utf8(server: Server, scale: float) -> dict[str, Any]:
    def job(i: int) -> str:
        client = wire.Client(server.url("/echo"))
        client.send(wire.frame(wire.TEXT, b"ok \xff\xfe bad" * (1 + i % 50)))
        return _closed_with(client)

    return {"clients": _outcome(parallel(int(200 * scale), 20, job))}


def subscribe_storm(server: Server, scale: float) -> dict[str, Any]:
    replies: Counter[str] = Counter()
    lock = threading.Lock()

    def job(i: int) -> str:
        client = wire.Client(server.url("/ws"), extra_headers=JSON_V1)
        batch = b"".join(
            wire.frame(
                wire.TEXT,
                json.dumps(
                    {"event": "mls.subscribe", "data": {"channel": f"s{i}-{j}"}, "id": j}
                ).encode(),
            )
            for j in range(3000)
        )
        try:
            client.send(batch)
        except (BrokenPipeError, ConnectionResetError):
            pass
        seen: Counter[str] = Counter()
        while True:
            got = client.recv_frame()
            if got is None:
                result = "eof"
                break
            if got[1] == wire.CLOSE:
                result = f"close {wire.close_code(got[2])} {got[2][2:].decode()}"
                try:
                    client.send(wire.close_frame(wire.close_code(got[2])))  # the handshake
                except OSError:
                    pass
                break
            envelope = json.loads(got[2])
            error = envelope.get("error")
            seen[error["code"] if error else envelope.get("event", "reply")] += 1
        client.close()
        with lock:
            replies.update(seen)
        return result

    return {"clients": _outcome(parallel(int(20 * scale), 20, job)), "replies": dict(replies)}


ATTACKS: dict[str, Callable[[Server, float], dict[str, Any]]] = {
    "handshake_flood": handshake_flood,
    "slowloris": slowloris,
    "oversized": oversized,
    "fragmented_forever": fragmented_forever,
    "ping_flood": ping_flood,
    "compression_bomb": compression_bomb,
    "invalid_utf8": invalid_utf8,
    "subscribe_storm": subscribe_storm,
}


# -- the harness ------------------------------------------------------------------------------


def _probe_during(server: Server, attack: threading.Thread) -> dict[str, Any]:
    """Echo every 0.2 s and a fresh handshake every second until ``attack`` ends."""
    ok = failed = handshakes = 0
    worst = 0.0
    errors: list[str] = []
    probe = wire.Client(server.url("/echo"), timeout=PROBE_TIMEOUT)
    next_handshake = 0.0
    try:
        while attack.is_alive():
            started = time.monotonic()
            try:
                if probe.echo(f"probe {ok}") != f"probe {ok}":
                    raise ValueError("wrong echo")
                if started >= next_handshake:
                    fresh = wire.Client(server.url("/echo"), timeout=PROBE_TIMEOUT)
                    if fresh.echo("hello") != "hello":
                        raise ValueError("wrong echo on a new connection")
                    fresh.send(wire.close_frame())
                    fresh.wait_close()
                    fresh.close()
                    handshakes += 1
                    next_handshake = started + 1.0
                ok += 1
            except Exception as exc:
                failed += 1
                errors.append(repr(exc)[:200])
                probe.close()
                probe = wire.Client(server.url("/echo"), timeout=PROBE_TIMEOUT)
            worst = max(worst, time.monotonic() - started)
            attack.join(0.2)
    finally:
        probe.close()
    return {"ok": ok, "failed": failed, "new_handshakes": handshakes, "worst_s": round(worst, 3),
            "errors": errors[:5]}  # fmt: skip


def run(logdir: Path, *, scale: float = 1.0, only: list[str] | None = None) -> dict[str, Any]:
    """Every attack in turn on one server; per attack its outcome, the probe's figures and the
    server's resources (see the module docstring)."""
    results: dict[str, Any] = {}
    with Processes(logdir) as procs:
        server = procs.server(env=ENV)
        for name, attack in ATTACKS.items():
            if only and name not in only:
                continue
            before = server.resources()
            codes_before = Counter(server.stats()["close_codes"])
            outcome: dict[str, Any] = {}

            def target(
                attack: Callable[[Server, float], dict[str, Any]] = attack,
                outcome: dict[str, Any] = outcome,
            ) -> None:
                try:
                    outcome.update(attack(server, scale))
                except Exception as exc:
                    outcome["error"] = repr(exc)

            thread = threading.Thread(target=target, daemon=True)
            started = time.monotonic()
            with Sampler(server) as sampler:
                thread.start()
                probe = _probe_during(server, thread)
                thread.join()
            seconds = time.monotonic() - started
            after = server.settle(before)
            codes = Counter(server.stats()["close_codes"])
            codes.subtract(codes_before)
            results[name] = {
                "outcome": outcome,
                "probe": probe,
                "seconds": round(seconds, 2),
                "server_close_codes": {k: v for k, v in codes.items() if v},
                "rss_before_kb": before["rss_kb"],
                "peak_rss_kb": sampler.peak_rss_kb,
                "rss_after_kb": after["rss_kb"],
                "fds": [before["fds"], after["fds"]],
                "greenlets": [before["greenlets"], after["greenlets"]],
                "idle_workers_after": after["idle_workers"],
                "websockets_open_after": after["websockets_open"],
                "hub_channels_after": server.stats()["hub_channels"],
            }
        log = server.stderr()
        results["_server_tracebacks"] = log.count("Traceback")
        results["_server_slow_consumer_warnings"] = log.count("dropping slow consumer")
    return results
