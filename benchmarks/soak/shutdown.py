"""Shutdown and reload under load.

``sigterm``: the soak app (``mlsockets serve``, or gunicorn with one mlsockets worker) holds
``clients`` connections on ``/fanout`` (``swarm.py hold``) while one more publishes a
broadcast every ``publish_ms`` ms, so frames are in flight; then SIGTERM. Every client must
receive Close 1001, every frame it got must parse (nothing half-written), no data may follow a
Close, and the process must exit, within ``shutdown_grace``.

``reload``: gunicorn holds ``clients`` connections on ``/echo``; a prober makes a new handshake
and an echo every 50 ms; SIGHUP. The old worker's clients get 1001, a new worker takes over,
and every probe before, during and after the reload must succeed (a probe accepted by the old
worker just as it stops gets a clean 1001 instead: counted apart, the next one reconnects).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.soak import wire
from benchmarks.soak.procs import Processes, swarm_result


def sigterm(
    logdir: Path,
    *,
    clients: int = 5000,
    gunicorn: bool = False,
    grace: float = 10.0,
    publish_ms: float = 20.0,
) -> dict[str, Any]:
    """Run the SIGTERM scenario; its figures (see the module docstring)."""
    env = {"MLSOCKETS_SHUTDOWN_GRACE": str(grace), "MLSOCKETS_COMPRESSION": "0"}
    with Processes(logdir) as procs:
        server = procs.server(gunicorn=gunicorn, env=env)
        swarm = procs.swarm(
            "hold", server.url("/fanout"), clients, "--publish-ms", str(publish_ms),
            "--timeout", str(grace + 300),
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while server.stats()["fanout_subscribers"] < clients and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)  # broadcasts flowing
        open_before = server.stats()["websockets_open"]
        rss_kb = server.rss_kb()
        exit_seconds = server.stop(signal.SIGTERM, timeout=grace + 60)
        seen = swarm_result(swarm, timeout=grace + 60)
        log = server.stderr()
    return {
        "server": "gunicorn" if gunicorn else "mlsockets serve",
        "clients": clients,
        "shutdown_grace": grace,
        "websockets_open": open_before,
        "rss_kb": rss_kb,
        "exit_seconds": round(exit_seconds, 2),
        "exit_status": server.proc.returncode,
        "opened": seen.get("opened", 0),
        "close_codes": seen.get("close_codes", {}),
        "eof_without_close": seen.get("eof_without_close", 0),
        "bad_frames": seen.get("bad_frames", 0),
        "bad_messages": seen.get("bad_messages", 0),
        "data_after_close": seen.get("data_after_close", 0),
        "broadcasts_published": seen.get("published", 0),
        "messages_received": seen.get("messages", 0),
        "errors": seen.get("errors", []),
        "tracebacks_in_log": log.count("Traceback"),
    }


def reload(logdir: Path, *, clients: int = 1000, grace: float = 10.0) -> dict[str, Any]:
    """Run the gunicorn HUP scenario; its figures (see the module docstring)."""
    env = {"MLSOCKETS_SHUTDOWN_GRACE": str(grace)}
    probes = {"ok": 0, "failed": 0, "ok_after_new_worker": 0, "going_away": 0}
    errors: list[str] = []
    stop = threading.Event()
    with Processes(logdir) as procs:
        server = procs.server(gunicorn=True, env=env)
        swarm = procs.swarm("hold", server.url("/echo"), clients, "--timeout", str(grace + 300))
        old_pid = server.worker_pid
        new_worker = threading.Event()

        def probe() -> None:
            while not stop.is_set():
                try:
                    client = wire.Client(server.url("/echo"), timeout=10)
                    try:
                        if client.status != 101:
                            raise ValueError(f"status {client.status}")
                        answer = client.echo("probe")
                    except ConnectionError as exc:
                        if "closed with 1001" not in str(exc):
                            raise
                        # Accepted by the old worker just as it stopped: a clean Going Away,
                        # which a client answers by reconnecting (the next probe does).
                        probes["going_away"] += 1
                        continue
                    finally:
                        client.close()
                    if answer != "probe":
                        raise ValueError(f"echo {answer!r}")
                    probes["ok"] += 1
                    probes["ok_after_new_worker"] += new_worker.is_set()
                except Exception as exc:
                    probes["failed"] += 1
                    errors.append(repr(exc)[:200])
                stop.wait(0.05)

        prober = threading.Thread(target=probe, daemon=True)
        prober.start()
        time.sleep(1.0)
        server.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + grace + 60
        new_pid = old_pid
        while time.monotonic() < deadline:
            try:
                new_pid = int(server.stats()["pid"])
            except (OSError, ValueError):
                new_pid = old_pid
            if new_pid != old_pid and not os.path.exists(f"/proc/{old_pid}"):
                break
            time.sleep(0.1)
        new_worker.set()
        seen = swarm_result(swarm, timeout=grace + 60)
        time.sleep(2.0)  # keep probing the new worker
        stop.set()
        prober.join(timeout=30)
        still_serving = server.proc.poll() is None
        log = server.stderr()
    return {
        "clients": clients,
        "old_worker": old_pid,
        "new_worker": new_pid,
        "old_worker_gone": not os.path.exists(f"/proc/{old_pid}"),
        "master_running": still_serving,
        "close_codes": seen.get("close_codes", {}),
        "eof_without_close": seen.get("eof_without_close", 0),
        "bad_frames": seen.get("bad_frames", 0),
        "probes": probes,
        "probe_errors": errors[:5],
        "tracebacks_in_log": log.count("Traceback"),
    }
