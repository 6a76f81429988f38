"""Helpers for tests/host: subprocesses that are always reaped, a gunicorn with mlsockets
workers on the Unix-socket broadcaster, clients spread over its workers, polling without
timing assertions.

Imported as ``host_support`` (pytest puts this directory on ``sys.path``; the name is unique
across tests/).
"""

from __future__ import annotations

import http.client
import json
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import processes

from mlsockets.client import Client, ReceivedEvent

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
GUNICORN = Path(sys.executable).with_name("gunicorn")
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], T], timeout: float = 20.0, what: str = "a condition") -> T:
    """Poll ``predicate`` until it returns something truthy (returned); fail after
    ``timeout`` seconds. Never a timing assertion: the bound only stops a hung test."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class Processes(processes.Processes):
    """Subprocesses run from this directory, with it and the repository on PYTHONPATH;
    stopped with SIGTERM at teardown (SIGKILL after 10 s), so gunicorn cleans its sockets."""

    def __init__(self, tmp_path: Path) -> None:
        super().__init__(tmp_path, cwd=HERE, pythonpath=(HERE, ROOT), stop_signal=signal.SIGTERM)


def http_json(port: int, method: str, path: str, body: object = None) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        payload = None if body is None else json.dumps(body).encode()
        conn.request(method, path, body=payload)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def _answers(proc: Any, port: int) -> bool:
    assert proc.poll() is None, Processes.stderr(proc)
    try:
        return http_json(port, "GET", "/status")[0] == 200
    except OSError:
        return False


def start_gunicorn(
    processes: Processes, directory: Path, workers: int = 3, **env: str
) -> tuple[Any, int]:
    """gunicorn with ``workers`` mlsockets workers serving host_app on ``directory``."""
    from gunicorn import config

    port = free_port()
    # gunicorn >= 27 opens a control socket in ~/.gunicorn by default; tests must not share one.
    control = ["--no-control-socket"] if hasattr(config, "ControlSocketDisable") else []
    proc = processes.start(
        str(GUNICORN),
        "-k", "mlsockets.gunicorn.GeventWebSocketWorker",
        "-w", str(workers),
        "--bind", f"127.0.0.1:{port}",
        "--graceful-timeout", "5",
        *control,
        "host_app:app",
        env={"HOST_DIR": str(directory), "MLSOCKETS_CLOSE_TIMEOUT": "1", **env},
    )  # fmt: skip
    wait_for(lambda: _answers(proc, port), 60, "gunicorn")
    # Every worker bound its socket (each creates its hub when it imports the app).
    wait_for(
        lambda: len(list(directory.glob("*.sock"))) == workers, 60, f"{workers} worker sockets"
    )
    return proc, port


def connect(clients: list[Client], port: int, user: str, *channels: str) -> Client:
    client = Client.connect(
        f"ws://127.0.0.1:{port}/ws?user={user}", timeout=20, max_message_size=8 << 20
    )
    clients.append(client)
    for channel in channels:
        client.subscribe(channel)
    return client


def whoami(client: Client) -> dict[str, Any]:
    return client.emit("whoami", ack=True)  # type: ignore[no-any-return]


def spread(clients: list[Client], port: int, user: str, workers: int) -> dict[int, Client]:
    """Connect until every one of ``workers`` gunicorn workers has a client; close the extra
    ones. Returns the clients by worker pid."""
    by_pid: dict[int, Client] = {}
    for attempt in range(200):
        client = connect(clients, port, f"{user}{attempt}")
        pid = whoami(client)["pid"]
        if pid in by_pid:
            clients.remove(client)
            client.close()
            continue
        by_pid[pid] = client
        if len(by_pid) == workers:
            return by_pid
    raise AssertionError(f"connections reached only workers {sorted(by_pid)}")


def on_worker(clients: list[Client], port: int, user: str, pid: int, *channels: str) -> Client:
    """A client of ``user`` on the worker ``pid`` (reconnecting until it lands there)."""
    for _ in range(200):
        client = connect(clients, port, user)
        if whoami(client)["pid"] == pid:
            for channel in channels:
                client.subscribe(channel)
            return client
        clients.remove(client)
        client.close()
    raise AssertionError(f"no connection reached worker {pid}")


def read_until(
    client: Client, done: Callable[[ReceivedEvent], bool], timeout: float = 30.0
) -> list[ReceivedEvent]:
    """The events ``client`` receives up to and including the first one ``done`` accepts."""
    events: list[ReceivedEvent] = []
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"timed out; received {[e.event for e in events]}")
        event = client.receive(timeout=left)
        events.append(event)
        if done(event):
            return events


def named(name: str) -> Callable[[ReceivedEvent], bool]:
    return lambda event: event.event == name


def drain(client: Client, settle: float = 0.5) -> list[ReceivedEvent]:
    """What ``client`` receives until nothing came for ``settle`` seconds (to see that no
    duplicate follows; a bound on waiting, never an assertion on time)."""
    events: list[ReceivedEvent] = []
    while True:
        try:
            events.append(client.receive(timeout=settle))
        except TimeoutError:
            return events


def emit_from_another_process(processes: Processes, directory: Path, *emits: Any) -> str:
    """Run ``Emitter.for_directory`` in a fresh Python process; return what it printed."""
    code = (
        "import json, sys\n"
        "from mlsockets import Emitter\n"
        "with Emitter.for_directory(sys.argv[1]) as emitter:\n"
        "    for event, data, to in json.loads(sys.argv[2]):\n"
        "        if isinstance(data, dict) and 'repeat' in data:  # too long for argv\n"
        "            data = data['char'] * data['repeat']\n"
        "        print(emitter.emit(event, data, to=to))\n"
    )
    proc = processes.python("-c", code, str(directory), json.dumps(emits))
    assert proc.wait(30) == 0, Processes.stderr(proc)
    assert proc.stdout is not None
    return str(proc.stdout.read())


def no_tracebacks(*procs: Any) -> None:
    for proc in procs:
        log = Processes.stderr(proc)
        assert "Traceback" not in log, log
