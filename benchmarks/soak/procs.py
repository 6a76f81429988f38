"""Processes for the reliability scenarios: the server under test, its samplers, the clients.

Everything runs on 127.0.0.1 and is stopped by PID: :class:`Processes` kills and reaps
whatever is still running when its ``with`` block ends, also after a failure.

Works in a plain process and in a gevent-patched one (the pytest run): threads and sleeps
are gevent's there, which is what a test process needs.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
_VENV_PY = ROOT / ".venv" / "bin" / "python"
PYTHON = str(_VENV_PY) if _VENV_PY.exists() else sys.executable
APP = "benchmarks.soak.soak_app:app"
BENCH_SRC = Path(os.environ.get("BENCH_SRC", ROOT.parent / "shared" / "tools" / "bench"))
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mlsockets" / "soak"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def rss_kb(pid: int) -> int:
    """VmRSS of a process, from /proc/<pid>/status (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def fd_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def http_get(port: int, path: str, timeout: float = 20.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def slope_per_minute(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) samples, in value units per minute."""
    n = len(samples)
    if n < 2:
        return 0.0
    mx = sum(t for t, _ in samples) / n
    my = sum(v for _, v in samples) / n
    sxx = sum((t - mx) ** 2 for t, _ in samples)
    if sxx == 0:
        return 0.0
    sxy = sum((t - mx) * (v - my) for t, v in samples)
    return sxy / sxx * 60.0


def median(values: list[float]) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


class Processes:
    """Subprocesses started in a ``with`` block; every one still running at its end is
    killed (SIGKILL) and reaped, its pipes closed."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.procs: list[subprocess.Popen[str]] = []

    def __enter__(self) -> Processes:
        self.logdir.mkdir(parents=True, exist_ok=True)
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)  # gunicorn's workers too
                except OSError:
                    proc.kill()
            proc.wait(timeout=30)
            if proc.stdout is not None:
                proc.stdout.close()

    def start(self, *args: str, env: dict[str, str] | None = None, name: str = "proc") -> Any:
        """Popen in its own process group, stdout piped (text), stderr to a log file."""
        path = self.logdir / f"{name}-{len(self.procs)}.err"
        with open(path, "w") as log:
            proc = subprocess.Popen(
                args,
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
                start_new_session=True,
            )
        proc.stderr_path = path  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    # -- the server under test --------------------------------------------------------------

    def server(
        self,
        *,
        gunicorn: bool | None = None,
        env: dict[str, str] | None = None,
        timeout: float = 60,
    ) -> Server:
        """Start the soak app (``mlsockets serve``, or gunicorn with one mlsockets worker;
        default: ``SOAK_SERVER=gunicorn`` in the environment picks gunicorn) on a free port
        with ``MLSOCKETS_*`` settings from ``env``; return once /stats answers."""
        if gunicorn is None:
            gunicorn = os.environ.get("SOAK_SERVER") == "gunicorn"
        port = free_port()
        settings = {"MLSOCKETS_PING_INTERVAL": "0", **(env or {})}
        if gunicorn:
            args = [
                PYTHON, "-m", "gunicorn", "-k", "mlsockets.gunicorn.GeventWebSocketWorker",
                "-w", "1", "-b", f"127.0.0.1:{port}", "--graceful-timeout",
                str(int(float(settings.get("MLSOCKETS_SHUTDOWN_GRACE", "10"))) + 5),
                "--worker-connections", "20000",
                "--no-control-socket",  # one shared ~/.gunicorn/gunicorn.ctl per user otherwise
                APP,
            ]  # fmt: skip
        else:
            args = [PYTHON, "-m", "mlsockets", "serve", APP, "--bind", f"127.0.0.1:{port}"]
        proc = self.start(*args, env=settings, name="gunicorn" if gunicorn else "serve")
        server = Server(proc, port)
        deadline = time.monotonic() + timeout
        while True:
            try:
                server.worker_pid = int(server.stats()["pid"])
                return server
            except (OSError, ValueError, KeyError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"server did not start: {server.stderr()[-2000:]}") from None
                time.sleep(0.1)

    # -- clients ------------------------------------------------------------------------

    def swarm(self, mode: str, url: str, n: int, *extra: str, ready_timeout: float = 120) -> Any:
        """Start ``swarm.py MODE URL -n N EXTRA...``; return once it printed READY."""
        proc = self.start(
            PYTHON, "-m", "benchmarks.soak.swarm", mode, url, "-n", str(n), *extra, name="swarm"
        )
        line = _readline(proc, ready_timeout)
        if not line.startswith("READY"):
            raise RuntimeError(f"swarm did not get ready: {line!r} {_tail(proc)}")
        proc.ready_line = line  # type: ignore[attr-defined]
        return proc

    def loadgen(self, *args: str, timeout: float = 600) -> dict[str, Any]:
        """Run the shared C load generator to completion; its RESULT json (``exit`` added)."""
        proc = self.start(str(loadgen_binary()), *args, "-q", name="loadgen")
        out, _ = proc.communicate(timeout=timeout)
        return {**_result(out), "exit": proc.returncode}


def swarm_result(proc: Any, timeout: float = 120) -> dict[str, Any]:
    """Wait for a swarm to finish and parse its RESULT line (``exit`` added)."""
    out, _ = proc.communicate(timeout=timeout)
    return {**_result(out), "exit": proc.returncode}


def _result(out: str) -> dict[str, Any]:
    for line in reversed(out.splitlines()):
        if line.startswith("RESULT "):
            result: dict[str, Any] = json.loads(line[7:])
            return result
    raise RuntimeError(f"no RESULT line in: {out[-2000:]!r}")


def _readline(proc: Any, timeout: float) -> str:
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return got[0].strip() if got else ""


def _tail(proc: Any) -> str:
    return Path(proc.stderr_path).read_text()[-2000:]


def loadgen_binary() -> Path:
    """The shared harness's C load generator, built (``cc -O2``) into the cache on first use."""
    source = BENCH_SRC / "loadgen.c"
    binary = CACHE / "loadgen"
    if binary.exists() and (
        not source.exists() or binary.stat().st_mtime >= source.stat().st_mtime
    ):
        return binary
    cc = shutil.which("cc") or shutil.which("gcc")
    if not source.exists() or cc is None:
        raise FileNotFoundError(f"need {source} and a C compiler (set BENCH_SRC)")
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = binary.with_suffix(f".{os.getpid()}")
    subprocess.run([cc, "-O2", "-o", str(tmp), str(source)], check=True, timeout=120)
    tmp.replace(binary)
    return binary


@dataclass
class Server:
    """The soak app running in a subprocess; ``worker_pid`` is the process serving it (the
    gunicorn worker under gunicorn, else the process itself)."""

    proc: Any
    port: int
    worker_pid: int = 0
    samples: list[dict[str, float]] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def stats(self) -> dict[str, Any]:
        status, body = http_get(self.port, "/stats")
        if status != 200:
            raise ValueError(f"/stats answered {status}")
        stats: dict[str, Any] = json.loads(body)
        return stats

    def rss_kb(self) -> int:
        return rss_kb(self.worker_pid)

    def fds(self) -> int:
        return fd_count(self.worker_pid)

    def stderr(self) -> str:
        return Path(self.proc.stderr_path).read_text()

    def settle(
        self, baseline: dict[str, int], *, slack: int = 3, timeout: float = 30
    ) -> dict[str, int]:
        """Wait until fds and greenlets are back within ``slack`` of ``baseline``; the last
        reading either way (the caller asserts)."""
        deadline = time.monotonic() + timeout
        while True:
            now = self.resources()
            back = all(now[k] <= baseline[k] + slack for k in ("fds", "greenlets"))
            if back or time.monotonic() > deadline:
                return now
            time.sleep(0.25)

    def resources(self) -> dict[str, int]:
        stats = self.stats()
        return {
            "fds": self.fds(),
            # Parked callback workers are a bounded pool (see soak_app.stats): not counted.
            "greenlets": int(stats["greenlets"]) - int(stats["idle_workers"]),
            "idle_workers": int(stats["idle_workers"]),
            "rss_kb": self.rss_kb(),
            "websockets_open": int(stats["websockets_open"]),
        }

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> float:
        """Signal the server and wait for it; seconds it took to exit."""
        started = time.monotonic()
        self.proc.send_signal(sig)
        self.proc.wait(timeout=timeout)
        return time.monotonic() - started


class Sampler:
    """Samples a server's RSS (and fds) every ``interval`` seconds in a thread, optionally
    greenlets through /stats; ``peak_rss_kb`` and ``samples`` once stopped."""

    def __init__(self, server: Server, interval: float = 0.1, stats_every: float = 0.0) -> None:
        self.server = server
        self.interval = interval
        self.stats_every = stats_every
        self.samples: list[dict[str, float]] = []
        self.peak_rss_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.started = time.monotonic()

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        next_stats = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            rss = self.server.rss_kb()
            self.peak_rss_kb = max(self.peak_rss_kb, rss)
            if self.stats_every and now >= next_stats:
                next_stats = now + self.stats_every
                sample: dict[str, float] = {"t": now - self.started, "rss_kb": rss}
                sample["fds"] = self.server.fds()
                try:
                    stats = self.server.stats()
                    sample["greenlets"] = stats["greenlets"]
                    sample["idle_workers"] = stats["idle_workers"]
                except (OSError, ValueError, KeyError):
                    sample["greenlets"] = sample["idle_workers"] = -1
                self.samples.append(sample)
            self._stop.wait(self.interval)
