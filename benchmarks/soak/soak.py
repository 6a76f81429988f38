"""Soak: ``connections`` WebSockets on one server process with steady traffic for ``minutes``.

The shared C load generator holds ``connections - 2`` subscribers on ``/fanout`` plus its
publisher, which sends a ``size``-byte broadcast, waits until every subscriber got it, then
waits ``gap_ms``, for the whole run (stopped with SIGUSR1 at the end; a broadcast that does
not reach every subscriber within its timeout ends the run with ``incomplete``). One more
connection echoes a message every 0.5 s (each answer checked). Heartbeats are on
(``ping_interval`` 20 s), so every connection is also pinged and answers.

Every ``sample_every`` seconds: the server's RSS and open fds (/proc) and its greenlets
(/stats, a ``gc`` walk). The first ``warmup`` fraction of the samples is left out of the
trend; the least-squares slope of the rest is reported per minute, with the totals.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.soak import wire
from benchmarks.soak.procs import Processes, Sampler, loadgen_binary, slope_per_minute


def run(
    logdir: Path,
    *,
    minutes: float = 10.0,
    connections: int = 10000,
    gap_ms: float = 250.0,
    size: int = 64,
    sample_every: float = 5.0,
    warmup: float = 0.1,
) -> dict[str, Any]:
    """Run the soak; its figures (see the module docstring)."""
    seconds = minutes * 60
    env = {"MLSOCKETS_PING_INTERVAL": "20", "MLSOCKETS_COMPRESSION": "0"}
    echo = {"ok": 0, "failed": 0}
    errors: list[str] = []
    with Processes(logdir) as procs:
        server = procs.server(env=env)
        subscribers = connections - 2
        loadgen = procs.start(
            str(loadgen_binary()), "fanout", server.url("/fanout"), "-n", str(subscribers),
            "-m", "100000", "-s", str(size), "--gap", str(gap_ms), "--rep-timeout", "30",
            "--max-time", str(int(seconds + 600)), "--pid", str(server.worker_pid), "-q",
            name="loadgen",
        )  # fmt: skip
        deadline = time.monotonic() + 300
        while server.stats()["fanout_subscribers"] < subscribers:
            if loadgen.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the load generator did not connect its subscribers")
            time.sleep(0.5)
        stop = threading.Event()

        def prober() -> None:
            client = wire.Client(server.url("/echo"), timeout=30)
            n = 0
            while not stop.is_set():
                try:
                    n += 1
                    if client.echo(f"soak {n}") != f"soak {n}":
                        raise ValueError("wrong echo")
                    echo["ok"] += 1
                except Exception as exc:
                    echo["failed"] += 1
                    errors.append(repr(exc)[:200])
                    client.close()
                    client = wire.Client(server.url("/echo"), timeout=30)
                stop.wait(0.5)
            client.close()

        probe = threading.Thread(target=prober, daemon=True)
        probe.start()
        started = time.monotonic()
        with Sampler(server, interval=1.0, stats_every=sample_every) as sampler:
            while time.monotonic() - started < seconds and loadgen.poll() is None:
                time.sleep(1.0)
        stop.set()
        probe.join(timeout=60)
        open_at_end = server.stats()["websockets_open"]
        ended_early = loadgen.poll() is not None
        loadgen.send_signal(10)  # SIGUSR1: finish the current broadcast, report
        out, _ = loadgen.communicate(timeout=120)
        warnings = sum("WARNING" in line for line in server.stderr().splitlines())
        tracebacks = server.stderr().count("Traceback")
    result = _loadgen_result(out)
    samples = sampler.samples
    trend = samples[int(len(samples) * warmup) :]

    def series(key: str) -> list[tuple[float, float]]:
        return [(s["t"], s[key]) for s in trend]

    return {
        "minutes": round((time.monotonic() - started) / 60, 2),
        "connections": connections,
        "websockets_open_at_end": open_at_end,
        "broadcasts": result.get("repeats"),
        "loadgen": {k: result.get(k) for k in ("subs", "incomplete", "deliv_per_s", "errors")},
        # Stopped by SIGUSR1 (exit status 1: fewer broadcasts than -m); the broadcast in
        # flight then counts as incomplete. Ending before the signal is a failure.
        "loadgen_ended_early": ended_early,
        "loadgen_exit": loadgen.returncode,
        "echo": echo,
        "echo_errors": errors[:5],
        "server_warnings": warnings,
        "server_tracebacks": tracebacks,
        "samples": samples,
        "rss_kb_first_last": [trend[0]["rss_kb"], trend[-1]["rss_kb"]] if trend else [],
        "rss_kb_per_min": round(slope_per_minute(series("rss_kb")), 1),
        "fds_per_min": round(slope_per_minute(series("fds")), 3),
        "greenlets_per_min": round(slope_per_minute(series("greenlets")), 3),
        "rss_kb_range": [min(s["rss_kb"] for s in trend), max(s["rss_kb"] for s in trend)]
        if trend
        else [],
        "fds_range": [min(s["fds"] for s in trend), max(s["fds"] for s in trend)] if trend else [],
        "greenlets_range": [min(s["greenlets"] for s in trend), max(s["greenlets"] for s in trend)]
        if trend
        else [],
    }


def _loadgen_result(out: str) -> dict[str, Any]:
    for line in reversed(out.splitlines()):
        if line.startswith("RESULT "):
            parsed: dict[str, Any] = json.loads(line[7:])
            return parsed
    return {"error": out[-500:]}
