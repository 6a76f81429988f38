"""CPU instructions per echo round trip, with and without the metrics hooks, under valgrind.

Throughput on a machine shared with other jobs varies by 2x from run to run, far more than the
few integer additions per message that metrics cost; instructions executed do not depend on
the load. This script runs an echo server (``upgrade.accept(on_message=echo)``, no
compression, as ``benchmarks/server.py``) and a raw-socket client that sends 32 B or 4 KiB
text messages one at a time, in one gevent process, under ``valgrind --tool=callgrind``;
the difference between a long and a short run, divided by the difference in messages, is the
cost of one round trip (client side included, which is the same code for every variant).

Usage::

    python benchmarks/metrics_overhead.py VARIANT=PYTHONPATH [VARIANT=PYTHONPATH ...]
        [--size 32] [--short 2000] [--long 12000] [--enable-metrics VARIANT]

e.g. with two snapshots of ``mlsockets/``, made by ``--make-variants`` (the second one with
the metrics lines of the transport removed)::

    python benchmarks/metrics_overhead.py --make-variants /tmp/ovh
    python benchmarks/metrics_overhead.py without=/tmp/ovh/without with=/tmp/ovh/with \\
        with+prometheus=/tmp/ovh/with --enable-metrics with+prometheus

``--enable-metrics`` also installs the Prometheus backend in that variant (the reaper then
folds the counts once a second). ``--cpu-time`` measures CPU time per round trip instead,
without valgrind, the variants alternating (8 runs each; noisy on a loaded machine).
Internal: ``--child N SIZE ENABLE`` runs one measurement.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The metrics lines of the transport's hot path and reaper (as committed), removed verbatim
# by --make-variants; a line that is no longer there stops it, rather than measure nothing.
_HOOKS = {
    "transport/gevent/connection.py": [
        "from mlsockets import metrics\n",
        "from mlsockets.metrics import COUNTS as _COUNTS\n",
        "        _COUNTS.opened += 1  # metrics: plain integers, folded in batches by the reaper\n",
        "            _COUNTS.bytes_in += len(data)  # metrics\n",
        "                else:\n"
        "                    _COUNTS.messages_in -= 1  # metrics: a control frame is no message "
        "(rare)\n",
        "            _COUNTS.messages_in += len(events)  # metrics\n",
        "        _COUNTS.messages_out += 1  # metrics\n",
        "        _COUNTS.bytes_out += sent  # metrics: what the kernel took (the writer counts the "
        "rest)\n",
        "                _COUNTS.bytes_out += len(data)  # metrics\n",
        "        _COUNTS.slow_consumers += 1  # metrics\n",
        "        if protocol is not None:  # metrics: close codes (received 1006: no Close frame)\n"
        "            sent, rcvd = protocol.close_sent, protocol.close_rcvd\n"
        "            metrics.connection_closed(\n"
        "                None if sent is None else sent.code, None if rcvd is None else rcvd.code\n"
        "            )\n",
        "            resent += 1  # counted by send() in the metrics\n",
        "            written += sent\n",
        "    # metrics: the receivers of the shared frame; bytes the kernel took now "
        "(flushes count\n"
        "    # the rest)\n"
        "    _COUNTS.messages_out += count - resent\n"
        "    _COUNTS.bytes_out += written\n",
        ("    count = written = resent = 0\n", "    count = 0\n"),
    ],
    "transport/gevent/reaper.py": [
        "from mlsockets import metrics\n\n",
        "            try:\n"
        "                metrics.fold()  # metrics: the per-message counts, in one batch a second\n"
        "            except Exception:\n"
        '                logger.exception("folding the metrics failed")\n',
    ],
}


def make_variants(directory: str) -> None:
    """``directory/with/mlsockets``: a snapshot of mlsockets/; ``directory/without/...``: the
    same without the metrics hooks of the transport."""
    import shutil

    for name in ("with", "without"):
        shutil.rmtree(os.path.join(directory, name), ignore_errors=True)
        shutil.copytree(
            os.path.join(ROOT, "mlsockets"),
            os.path.join(directory, name, "mlsockets"),
            ignore=shutil.ignore_patterns("__pycache__"),
        )
    for relative, hooks in _HOOKS.items():
        path = os.path.join(directory, "without", "mlsockets", relative)
        with open(path) as f:
            text = f.read()
        for hook in hooks:
            old, new = hook if isinstance(hook, tuple) else (hook, "")
            if old not in text:
                raise SystemExit(f"{relative}: hook not found (update _HOOKS):\n{old}")
            text = text.replace(old, new)
        if "_COUNTS" in text or "metrics." in text:
            raise SystemExit(f"{relative}: metrics lines left after removing the hooks")
        with open(path, "w") as f:
            f.write(text)


def child(messages: int, size: int, enable: bool) -> None:
    from gevent import monkey

    monkey.patch_all()
    import socket
    import struct

    from mlsockets.transport.gevent import Server, ServerOptions

    if enable:
        from mlsockets import metrics

        metrics.enable()

    def app(environ: dict[str, object], start_response: object) -> list[bytes]:
        upgrade = environ["mlsockets.upgrade"]
        upgrade.accept(on_message=lambda ws, m: ws.send(m))  # type: ignore[attr-defined]
        return []

    server = Server(
        app, ["127.0.0.1:0"], options=ServerOptions(compression=None, ping_interval=None)
    )
    # The reaper's once-a-second pass (heartbeats, and the metrics fold) is per second, not
    # per message, and valgrind stretches a second over fewer messages: keep it out, and
    # time the fold on its own (fold_cost).
    server.reaper.tick = 1e6
    server.start()
    host, port = server.addresses[0]
    sock = socket.create_connection((host, port))
    sock.sendall(
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        head += sock.recv(1)
    # One masked text frame (mask 0, so the payload is sent as is), and its echo unmasked.
    payload = b"x" * size
    length = bytes([0x80 | size]) if size < 126 else b"\xfe" + struct.pack("!H", size)
    frame = b"\x81" + length + b"\x00\x00\x00\x00" + payload
    echo = len(payload) + (2 if size < 126 else 4)
    for _ in range(messages):
        sock.sendall(frame)
        got = 0
        while got < echo:
            got += len(sock.recv(65536))
    sock.close()
    server.shutdown(grace=1)


def fold_cost(pythonpath: str) -> float:
    """Microseconds of one ``metrics.fold()`` with every labelled counter in use (not
    under valgrind: the reaper does this once a second)."""
    code = (
        "import timeit\n"
        "from mlsockets import metrics\n"
        "metrics.enable()\n"
        "c = metrics.COUNTS\n"
        "for s in (101, 400, 401, 403, 426, 429): metrics.handshake(s)\n"
        "for e in ('invalid', 'unauthorized', 'rate_limited'): metrics.error_reply(e)\n"
        "metrics.connection_closed(1000, 1000); metrics.connection_closed(1008, 1006)\n"
        "def step():\n"
        "    c.messages_in += 7; c.bytes_in += 300; c.messages_out += 7; c.bytes_out += 200\n"
        "    metrics.fold()\n"
        "print(min(timeit.repeat(step, number=1000, repeat=5)) * 1000)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.path.abspath(pythonpath)}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600
    )
    if result.returncode != 0:
        raise SystemExit(f"fold timing failed:\n{result.stderr[-3000:]}")
    return float(result.stdout)


def measure(pythonpath: str, messages: int, size: int, enable: bool) -> int:
    env = {**os.environ, "PYTHONPATH": os.path.abspath(pythonpath), "PYTHONHASHSEED": "0"}
    # A first run outside valgrind writes the bytecode caches, so no measured run compiles.
    warm = [sys.executable, os.path.abspath(__file__), "--child", "1", str(size), "0"]
    subprocess.run(warm, env=env, check=True, timeout=600)
    command = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        os.path.abspath(__file__),
        "--child",
        str(messages),
        str(size),
        "1" if enable else "0",
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800)
    found = re.search(r"Collected : (\d+)", result.stderr)
    if result.returncode != 0 or found is None:
        raise SystemExit(f"measurement failed:\n{result.stderr[-3000:]}")
    return int(found.group(1))


def cpu_time(variants: list[tuple[str, str]], size: int, short: int, long_: int) -> None:
    """CPU seconds per round trip without valgrind (varies with the machine's load), the
    variants alternating, 8 runs each; prints the medians."""
    import resource
    import statistics

    def run(path: str, messages: int) -> float:
        env = {**os.environ, "PYTHONPATH": os.path.abspath(path), "PYTHONHASHSEED": "0"}
        command = [sys.executable, os.path.abspath(__file__), "--child", str(messages)]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run([*command, str(size), "0"], env=env, check=True, timeout=600)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        return after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime

    costs: dict[str, list[float]] = {name: [] for name, _ in variants}
    for turn in range(8):
        for name, path in variants if turn % 2 == 0 else variants[::-1]:
            spent = run(path, long_) - run(path, short)
            costs[name].append(spent / (long_ - short) * 1e6)
    print(f"echo of {size} B text, CPU time per round trip ({long_} - {short} messages)")
    for name, values in costs.items():
        low, high = min(values), max(values)
        print(f"{name:>20}: median {statistics.median(values):.2f} us ({low:.2f}-{high:.2f})")


def main(argv: list[str]) -> None:
    if argv[:1] == ["--child"]:
        child(int(argv[1]), int(argv[2]), argv[3] == "1")
        return
    if argv[:1] == ["--make-variants"]:
        make_variants(argv[1])
        return
    size, short, long_, enabled, cpu = 32, 2000, 12000, set(), False
    variants: list[tuple[str, str]] = []
    args = iter(argv)
    for arg in args:
        if arg == "--size":
            size = int(next(args))
        elif arg == "--short":
            short = int(next(args))
        elif arg == "--long":
            long_ = int(next(args))
        elif arg == "--enable-metrics":
            enabled.add(next(args))
        elif arg == "--cpu-time":
            cpu = True
        else:
            name, _, path = arg.partition("=")
            variants.append((name, path or "."))
    if cpu:
        cpu_time(variants, size, short, long_)
        return
    print(f"echo of {size} B text, instructions per round trip ({long_} - {short} messages)")
    baseline = None
    for name, path in variants:
        enable = name in enabled
        cost = (measure(path, long_, size, enable) - measure(path, short, size, enable)) / (
            long_ - short
        )
        baseline = cost if baseline is None else baseline
        print(f"{name:>20}: {cost:10.0f} instructions ({(cost / baseline - 1) * 100:+.2f}%)")
        if enable:
            print(f"{'':>20}  one metrics fold (once a second): {fold_cost(path):.1f} us")


if __name__ == "__main__":
    main(sys.argv[1:])
