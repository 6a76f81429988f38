"""``mlsockets serve`` start-up with the settings model: the pid file, the settings file and
flags, and start-up errors that name the setting and its source (exit status 2)."""

from __future__ import annotations

import http.client
import os
import signal
import sys
from pathlib import Path

from cli_support import (
    Processes,
    clean_env,
    free_port,
    mlsockets,
    run,
    serving_address,
    stderr,
    wait_for,
)
from websockets.sync.client import connect


def test_pid_file_is_written_refuses_a_second_server_and_is_removed(
    processes: Processes, tmp_path: Path
) -> None:
    pid_file = tmp_path / "serve.pid"
    cfg = tmp_path / "mlsockets.toml"
    cfg.write_text(f'pid_file = "{pid_file}"\nbind = ["127.0.0.1:0", "unix:{tmp_path}/s.sock"]\n')
    proc = processes.start(
        sys.executable, "-m", "mlsockets", "serve", "examples.echo:app", "--config", str(cfg)
    )
    address = serving_address(proc)
    assert pid_file.read_text() == f"{proc.pid}\n"
    with connect(f"ws://{address}/ws", open_timeout=20, proxy=None) as ws:
        ws.send("hi")
        assert ws.recv(timeout=20) == "hi"
    second = mlsockets("serve", "examples.echo:app", "--config", str(cfg), "--bind", "127.0.0.1:0")
    assert second.returncode == 2
    assert f"pid file {pid_file}: process {proc.pid} is running" in second.stderr
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert not pid_file.exists() and not (tmp_path / "s.sock").exists()
    assert "Traceback" not in stderr(proc)


def test_a_stale_pid_file_is_replaced(processes: Processes, tmp_path: Path) -> None:
    pid_file = tmp_path / "serve.pid"
    pid_file.write_text("999999999\n")  # no such process
    proc = processes.start(
        sys.executable, "-m", "mlsockets", "serve", "examples.echo:app",
        "--bind", "127.0.0.1:0", "--pid-file", str(pid_file),
    )  # fmt: skip
    serving_address(proc)
    assert pid_file.read_text() == f"{proc.pid}\n"


def test_start_up_errors_name_the_setting_and_its_source(tmp_path: Path) -> None:
    cfg = tmp_path / "mlsockets.toml"
    cfg.write_text("ping_timeout = 0\nmax_mesage_size = 10\n")
    bad = mlsockets("serve", "examples.echo:app", "--config", str(cfg))
    assert bad.returncode == 2
    assert f"ping_timeout = 0 (from file {cfg}): must be greater than 0" in bad.stderr
    assert "did you mean max_message_size?" in bad.stderr
    assert "Traceback" not in bad.stderr and bad.stdout == ""
    env = clean_env(MLSOCKETS_CONFIG=str(cfg), WS_PORT="eighty")
    both = mlsockets("serve", "examples.echo:app", env=env)
    assert both.returncode == 2 and "WS_HOST/WS_PORT" in both.stderr
    flag = mlsockets("serve", "examples.echo:app", "--max-queue", "0")
    assert flag.returncode == 2 and "max_queue = 0 (from flag --max-queue)" in flag.stderr
    origins = mlsockets(
        "serve", "examples.echo:app", env=clean_env(MLSOCKETS_ALLOWED_ORIGINS="https://a/b")
    )
    assert origins.returncode == 2 and "invalid allowed origin 'https://a/b'" in origins.stderr


def test_python_dash_m_and_the_entry_point_agree() -> None:
    exe = Path(sys.executable).parent / "mlsockets"
    assert os.access(exe, os.X_OK)
    version = run(str(exe), "--version")
    assert version.returncode == 0 and version.stdout.startswith("mlsockets ")
    assert mlsockets("--version").stdout == version.stdout
    result = mlsockets("--help")
    assert result.returncode == 0
    for command in ("serve", "status", "emit", "check", "install"):
        assert command in result.stdout
    assert "Exit status: 0 done, 1 unreachable" in result.stdout


def test_metrics_bind_serves_prometheus_metrics(processes: Processes, tmp_path: Path) -> None:
    port = free_port()
    cfg = tmp_path / "mlsockets.toml"
    cfg.write_text(f'metrics_bind = "127.0.0.1:{port}"\n')
    proc = processes.start(
        sys.executable, "-m", "mlsockets", "serve", "examples.echo:app",
        "--config", str(cfg), "--bind", "127.0.0.1:0",
    )  # fmt: skip
    address = serving_address(proc)
    with connect(f"ws://{address}/ws", open_timeout=20, proxy=None) as ws:
        ws.send("counted")
        assert ws.recv(timeout=20) == "counted"

        def scrape() -> str | None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            try:
                conn.request("GET", "/metrics")
                response = conn.getresponse()
                body = response.read().decode()
                return body if response.status == 200 and "mlsockets_" in body else None
            except OSError:
                return None
            finally:
                conn.close()

        assert "mlsockets_" in wait_for(scrape, 30, "the metrics listener")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
