"""Helpers for tests/cli: subprocesses that are always reaped, their output read line by line
with deadlines, and WebSocket handshakes with an Origin.

Imported as ``cli_support`` (pytest puts this directory on ``sys.path``; the name is unique
across tests/).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gevent
import processes

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
SERVING = re.compile(r"^mlsockets \S+ serving (\S+) on (\S+)$")


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without MLSOCKETS_* / WS_* settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLSOCKETS_", "WS_"))}
    return {**env, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(HERE), **extra}


def run(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT) -> Any:
    """Run a command to completion (60 s at most), output captured as text."""
    return subprocess.run(
        args, cwd=cwd, capture_output=True, text=True, timeout=60, env=env or clean_env()
    )


def mlsockets(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT) -> Any:
    """``python -m mlsockets ARGS`` to completion."""
    return run(sys.executable, "-m", "mlsockets", *args, env=env, cwd=cwd)


class Processes(processes.Processes):
    """Subprocesses run from the repository root in :func:`clean_env`; SIGKILLed at
    teardown."""

    def __init__(self, tmp_path: Path) -> None:
        super().__init__(tmp_path, base_env=clean_env)


stderr = processes.stderr


def serving_address(proc: Any) -> str:
    """The first address of the "serving ... on ADDRESS" lines the CLI prints."""
    with gevent.Timeout(30):
        while True:
            line = proc.stdout.readline()
            assert line, f"the server exited: {stderr(proc)}"
            match = SERVING.match(line.strip())
            if match:
                return match.group(2)


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``check`` until it returns something true; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
