"""Subprocesses a test starts, always stopped and reaped at teardown: one class for every
test directory that runs servers, CLIs or gunicorn as real processes.

Imported as ``processes`` (pytest puts ``tests/`` on ``sys.path`` for the root conftest; the
name is unique across tests/). Each directory's support module configures it: where children
run, their environment, and how they are stopped.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def inherited_env() -> dict[str, str]:
    """The test's environment with unbuffered Python output."""
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


def stderr(proc: Any) -> str:
    """What a child started by :meth:`Processes.start` wrote to its stderr so far."""
    return Path(proc.stderr_path).read_text()


class Processes:
    """Subprocesses started by a test; stopped, reaped and their pipes closed by :meth:`close`.

    Args:
        tmp_path: where each child's stderr goes (``stderr-N.log``).
        cwd: the children's working directory (unless :meth:`start` says).
        base_env: makes the environment each child starts from; :meth:`start`'s ``env``
            is laid over it.
        pythonpath: put on the children's ``PYTHONPATH`` (test apps next to the tests).
        stop_signal: sent at teardown to children still running; one that has not exited
            10 s later gets SIGKILL.
    """

    def __init__(
        self,
        tmp_path: Path,
        *,
        cwd: Path = ROOT,
        base_env: Callable[[], dict[str, str]] = inherited_env,
        pythonpath: Sequence[Path] = (),
        stop_signal: int = signal.SIGKILL,
    ) -> None:
        self.tmp_path = tmp_path
        self.cwd = cwd
        self.base_env = base_env
        self.pythonpath = os.pathsep.join(str(p) for p in pythonpath)
        self.stop_signal = stop_signal
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> Any:
        """Popen with stdout piped (text) and stderr to a file, read by :meth:`stderr`."""
        child_env = self.base_env()
        if self.pythonpath:
            child_env["PYTHONPATH"] = self.pythonpath
        child_env.update(env or {})
        path = self.tmp_path / f"stderr-{len(self.procs)}.log"
        with open(path, "w") as log:  # the child keeps its own copy of the descriptor
            proc = subprocess.Popen(
                args,
                cwd=cwd or self.cwd,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env=child_env,
            )
        proc.stderr_path = path  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def python(self, *args: str, env: dict[str, str] | None = None) -> Any:
        """``python ARGS`` with this interpreter."""
        return self.start(sys.executable, *args, env=env)

    def cli(self, *args: str, **kwargs: Any) -> Any:
        """``python -m mlsockets ARGS``."""
        return self.start(sys.executable, "-m", "mlsockets", *args, **kwargs)

    stderr = staticmethod(stderr)

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(self.stop_signal)
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=10)
            if proc.stdout is not None:
                proc.stdout.close()
