"""SIGHUP on a real ``mlsockets serve`` subprocess: the configuration file is read again, the
new origin list and limits apply to the next handshake, open connections survive, and a broken
file is logged as an error while the old configuration stays."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
from cli_support import Processes, serving_address, stderr, wait_for
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

SUBPROTOCOL = "mlsockets.json.v1"


def open_ws(url: str, origin: str) -> Any:
    return connect(
        url,
        origin=origin,
        subprotocols=[SUBPROTOCOL],
        open_timeout=20,
        proxy=None,  # type: ignore[list-item]
    )


def refused_status(url: str, origin: str) -> int | None:
    """The HTTP status of a refused handshake, or None when it was accepted."""
    try:
        with open_ws(url, origin):
            return None
    except InvalidStatus as exc:
        return int(exc.response.status_code)


def echo(ws: Any, data: object, ident: int) -> None:
    ws.send(json.dumps({"event": "echo", "data": data, "id": ident}))
    while True:  # skip mls.welcome and other system events
        reply = json.loads(ws.recv(timeout=20))
        if reply.get("reply") == ident:
            assert reply["data"] == data
            return


def log_count(proc: Any, text: str) -> int:
    return stderr(proc).count(text)


def test_sighup_reloads_origins_and_limits_without_dropping_connections(
    processes: Processes, tmp_path: Path
) -> None:
    cfg = tmp_path / "mlsockets.toml"
    cfg.write_text('allowed_origins = ["https://a.example"]\n')
    proc = processes.start(
        sys.executable, "-m", "mlsockets", "serve", "reload_app:app",
        "--config", str(cfg), "--bind", "127.0.0.1:0", "--shutdown-grace", "5",
    )  # fmt: skip
    url = f"ws://{serving_address(proc)}/ws"
    big = "x" * 5000
    with open_ws(url, "https://a.example") as kept:
        echo(kept, big, 1)
        assert refused_status(url, "https://b.example") == 403

        cfg.write_text('allowed_origins = ["https://b.example"]\nmax_message_size = 4096\n')
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: log_count(proc, "configuration reloaded") == 1, 30, "the reload")
        line = next(x for x in stderr(proc).splitlines() if "configuration reloaded" in x)
        assert "INFO mlsockets.cli" in line
        assert "allowed_origins ('https://a.example',) -> ('https://b.example',)" in line
        assert "max_message_size 1048576 -> 4096" in line
        assert "after a configuration reload" in stderr(proc)  # the Flask app followed

        assert refused_status(url, "https://a.example") == 403
        with open_ws(url, "https://b.example") as fresh:
            echo(fresh, "small", 2)
            fresh.send(json.dumps({"event": "echo", "data": big, "id": 3}))
            with pytest.raises(ConnectionClosed) as info:
                while True:
                    fresh.recv(timeout=20)
            assert info.value.rcvd is not None and info.value.rcvd.code == 1009
        echo(kept, big, 4)  # opened before the reload: open, and with the limits it began with

        cfg.write_text('allowed_origins = ["https://c.example"]\nping_timeout = -1\n')
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "configuration reload failed" in stderr(proc), 30, "the failed reload")
        assert f"ping_timeout = -1 (from file {cfg})" in stderr(proc)
        assert log_count(proc, "configuration reloaded") == 1
        assert refused_status(url, "https://b.example") is None  # the old list still applies
        assert refused_status(url, "https://c.example") == 403
        echo(kept, "still here", 5)

        cfg.write_text("[broken\n")
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "is not valid TOML" in stderr(proc), 30, "the second failed reload")
        echo(kept, "and here", 6)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert "Traceback" not in stderr(proc)


def test_reload_of_settings_that_need_a_restart_is_reported(
    processes: Processes, tmp_path: Path
) -> None:
    cfg = tmp_path / "mlsockets.toml"
    cfg.write_text('log_level = "info"\n')
    proc = processes.start(
        sys.executable, "-m", "mlsockets", "serve", "reload_app:app",
        "--config", str(cfg), "--bind", "127.0.0.1:0",
    )  # fmt: skip
    url = f"ws://{serving_address(proc)}/ws"
    cfg.write_text('log_level = "warning"\nprefix = "other"\nping_interval = 7\n')
    proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "only applied on restart: prefix" in stderr(proc), 30, "the warning")
    # log_level warning is applied: the INFO line of this reload is not written.
    assert "configuration reloaded" not in stderr(proc)
    with open_ws(url, "http://" + url.split("/")[2]) as ws:  # same origin
        echo(ws, 1, 1)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
