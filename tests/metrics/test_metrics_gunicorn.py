"""A real gunicorn with two mlsockets workers in prometheus_client's multiprocess mode, run
with deploy/gunicorn.conf.py: one scrape, answered by either worker, shows the sum of both;
a worker killed with SIGKILL stops counting in the live gauges (the config's child_exit)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import gevent
import pytest
from cluster_support import Processes, free_port
from metrics_support import ROOT, Scrape, scrape

from mlsockets.client import Client

GUNICORN = Path(sys.executable).with_name("gunicorn")

pytestmark = pytest.mark.skipif(not GUNICORN.exists(), reason="gunicorn is not installed")

APP = """
import os

from mlsockets.events import EventRouter
from mlsockets.hub import Hub
from mlsockets.wsgi import SocketApp

router = EventRouter()
router.add("pid", lambda conn, data: os.getpid())
app = SocketApp(Hub(router), metrics_path="/metrics")
"""


def start(processes: Processes, tmp_path: Path, workers: int, env: dict[str, str]) -> Any:
    (tmp_path / "metrics_app.py").write_text(APP)
    port = free_port()
    proc = processes.start(
        str(GUNICORN),
        "-c",
        str(ROOT / "deploy" / "gunicorn.conf.py"),
        "-w",
        str(workers),
        "--bind",
        f"127.0.0.1:{port}",
        "--pythonpath",
        str(tmp_path),
        "--graceful-timeout",
        "5",
        "metrics_app:app",
        env={"MLSOCKETS_CLOSE_TIMEOUT": "1", "MLSOCKETS_PING_INTERVAL": "0", **env},
    )
    proc.port = port
    url = f"http://127.0.0.1:{port}/metrics"
    with gevent.Timeout(30, AssertionError("gunicorn did not start")):
        while True:
            assert proc.poll() is None, Processes.stderr(proc)
            try:
                scrape(url)
                return proc
            except OSError:
                gevent.sleep(0.1)


def stop(proc: Any) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)  # the master stops its workers too
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def wait_scrape(url: str, predicate: Any, what: str) -> Scrape:
    last: Scrape | None = None
    try:
        with gevent.Timeout(30):
            while True:
                last = scrape(url)
                if predicate(last):
                    return last
                gevent.sleep(0.1)
    except gevent.Timeout:
        raise AssertionError(f"timed out waiting for {what}; last:\n{last and last.text}") from None


def test_one_scrape_sums_both_workers(processes: Processes, tmp_path: Path) -> None:
    directory = tmp_path / "prometheus"
    directory.mkdir()
    (directory / "counter_99999.db").write_bytes(b"stale")  # cleared by on_starting
    proc = start(processes, tmp_path, 2, {"PROMETHEUS_MULTIPROC_DIR": str(directory)})
    url = f"http://127.0.0.1:{proc.port}/metrics"
    clients: dict[int, list[Client]] = {}
    try:
        with gevent.Timeout(60, AssertionError("never reached both workers")):
            while len(clients) < 2 or sum(map(len, clients.values())) < 4:
                client = Client.connect(f"ws://127.0.0.1:{proc.port}/ws", timeout=10)
                clients.setdefault(client.emit("pid", ack=True), []).append(client)
        total = sum(map(len, clients.values()))

        def summed(s: Scrape) -> bool:
            return (
                s.value("mlsockets_connections_open") == total
                and s.value("mlsockets_handshakes_total", status="101") == total
                and s.value("mlsockets_messages_received_total") == total
                and s.value("mlsockets_event_handler_seconds_count", event="pid") == total
            )

        wait_scrape(url, summed, f"a scrape with both workers' {total} connections")

        # SIGKILL one worker: its connections drop, and child_exit removes its live gauge.
        victim, lost = next(iter(clients.items()))
        os.kill(victim, signal.SIGKILL)
        survivors = total - len(lost)
        after = wait_scrape(
            url,
            lambda s: s.value("mlsockets_connections_open") == survivors,
            f"the open connections to drop to {survivors}",
        )
        # Counters of the dead worker still count: they happened.
        assert after.value("mlsockets_handshakes_total", status="101") == total
    finally:
        for group in clients.values():
            for client in group:
                client.close()
        stop(proc)
    assert "Traceback" not in Processes.stderr(proc), Processes.stderr(proc)


def test_per_worker_counts_are_warned_about(processes: Processes, tmp_path: Path) -> None:
    proc = start(processes, tmp_path, 1, {})
    stop(proc)
    assert "PROMETHEUS_MULTIPROC_DIR is not set" in Processes.stderr(proc)
