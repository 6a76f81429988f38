"""Subprocesses for the transport tests (the CLI, gunicorn), always reaped at teardown.

Imported as ``subprocs`` (pytest puts this directory on ``sys.path``; the name is unique
across tests/).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


class Processes:
    """Subprocesses started by a test; killed and reaped at teardown, pipes closed."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, *args: str, cwd: Path = ROOT, env: dict[str, str] | None = None) -> Any:
        """Popen with stdout piped (text) and stderr to a file, read by :meth:`stderr`."""
        path = self.tmp_path / f"stderr-{len(self.procs)}.log"
        with open(path, "w") as log:  # the child keeps its own copy of the descriptor
            proc = subprocess.Popen(
                args,
                cwd=cwd,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            )
        proc.stderr_path = path  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def cli(self, *args: str, **kwargs: Any) -> Any:
        """``python -m mlsockets ARGS`` (from the repository root unless ``cwd`` says)."""
        return self.start(sys.executable, "-m", "mlsockets", *args, **kwargs)

    @staticmethod
    def stderr(proc: Any) -> str:
        return Path(proc.stderr_path).read_text()

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            if proc.stdout is not None:
                proc.stdout.close()
