"""A real cluster: ``gunicorn -w 2 -k mlsockets.gunicorn.GeventWebSocketWorker`` and a
standalone ``mlsockets serve`` node, each process with its own hub and relay, one redis-server,
clients (:class:`mlsockets.client.Client`) on every process; an HTTP view and an Emitter in a
separate process broadcast; Redis and a node die.

"Exactly once" is checked with a marker an Emitter publishes after the events under test:
Redis delivers in publish order, so once a client has the marker, a duplicate would have
arrived before it. No timing assertions: the bounds only stop a hung test.
"""

from __future__ import annotations

import http.client
import itertools
import json
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gevent
import pytest
from cluster_support import Processes, RedisServer, free_port, wait_for
from gunicorn import config

from mlsockets.client import Client, ReceivedEvent

GUNICORN = Path(sys.executable).with_name("gunicorn")
# gunicorn >= 27 opens a control socket in ~/.gunicorn by default; tests must not share one.
NO_CONTROL_SOCKET = ["--no-control-socket"] if hasattr(config, "ControlSocketDisable") else []
# Seconds: a dead node is purged about that long after its last heartbeat (sent every TTL/3).
# Not shorter: a live worker starved of CPU for a TTL on a busy machine would be purged too.
TTL = "2.0"

pytestmark = pytest.mark.skipif(not GUNICORN.exists(), reason="gunicorn is not installed")


def http_json(port: int, method: str, path: str, body: object = None) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
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


def _pid(proc: Any, port: int) -> int | None:
    """The pid of the process (worker) that answered ``/status``, or None."""
    assert proc.poll() is None, Processes.stderr(proc)
    try:
        status, body = http_json(port, "GET", "/status")
    except OSError:
        return None
    return int(body["pid"]) if status == 200 else None


def cluster_env(redis_url: str, prefix: str, **extra: str) -> dict[str, str]:
    return {
        "MLSOCKETS_REDIS_URL": redis_url,
        "CLUSTER_PREFIX": prefix,
        "CLUSTER_TTL": TTL,
        "MLSOCKETS_CLOSE_TIMEOUT": "1",
        **extra,
    }


def start_gunicorn(processes: Processes, env: dict[str, str], workers: int = 2) -> tuple[Any, int]:
    port = free_port()
    proc = processes.start(
        str(GUNICORN),
        "-k", "mlsockets.gunicorn.GeventWebSocketWorker",
        "-w", str(workers),
        "--bind", f"127.0.0.1:{port}",
        "--graceful-timeout", "5",
        *NO_CONTROL_SOCKET,
        "cluster_app:app",
        env=env,
    )  # fmt: skip
    # Every worker, not just the first one booted: under load the second may take seconds
    # more, and tests that need a client on each worker would all land on the first.
    pids: set[int] = set()

    def every_worker_answers() -> bool:
        pid = _pid(proc, port)
        if pid is not None:
            pids.add(pid)
        return len(pids) >= workers

    wait_for(every_worker_answers, 60, f"all {workers} gunicorn workers answering")
    return proc, port


def start_node(processes: Processes, env: dict[str, str]) -> tuple[Any, int]:
    port = free_port()
    proc = processes.python(
        "-m", "mlsockets", "serve", "cluster_app:app", "--bind", f"127.0.0.1:{port}", env=env
    )
    wait_for(lambda: _answers(proc, port), 30, "the mlsockets serve node")
    return proc, port


@pytest.fixture
def clients() -> Iterator[list[Client]]:
    opened: list[Client] = []
    yield opened
    for client in opened:
        client.close()


def connect(clients: list[Client], port: int, user: str, *channels: str) -> Client:
    client = Client.connect(f"ws://127.0.0.1:{port}/ws?user={user}", timeout=10)
    clients.append(client)
    for channel in channels:
        client.subscribe(channel)
    return client


def whoami(client: Client) -> dict[str, Any]:
    return client.emit("whoami", ack=True)  # type: ignore[no-any-return]


def one_client_per_worker(
    clients: list[Client], port: int, user: str, *channels: str, workers: int = 2
) -> list[Client]:
    """Connect until there is a client on each gunicorn worker; close the extra ones."""
    by_pid: dict[int, Client] = {}
    for attempt in range(60):
        client = connect(clients, port, f"{user}{attempt}")
        pid = whoami(client)["pid"]
        if pid in by_pid:
            clients.remove(client)
            client.close()
            continue
        by_pid[pid] = client
        if len(by_pid) == workers:
            break
    assert len(by_pid) == workers, "the connections all went to the same worker"
    for client in by_pid.values():
        for channel in channels:
            client.subscribe(channel)
    return list(by_pid.values())


def relay_connected(client: Client) -> Callable[[], bool]:
    return lambda: whoami(client)["state"] == "connected"


def read_until(
    client: Client, done: Callable[[ReceivedEvent], bool], timeout: float = 20.0
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


def emit_from_another_process(processes: Processes, url: str, prefix: str, *emits: Any) -> str:
    """Run an Emitter in a fresh Python process; return what it printed."""
    code = (
        "import json, sys\n"
        "from mlsockets import Emitter\n"
        "with Emitter.from_url(sys.argv[1], prefix=sys.argv[2]) as emitter:\n"
        "    for event, data, to in json.loads(sys.argv[3]):\n"
        "        print(emitter.emit(event, data, to=to))\n"
    )
    proc = processes.python("-c", code, url, prefix, json.dumps(emits))
    assert proc.wait(30) == 0, Processes.stderr(proc)
    assert proc.stdout is not None
    return str(proc.stdout.read())


def no_tracebacks(*procs: Any) -> None:
    for proc in procs:
        log = Processes.stderr(proc)
        assert "Traceback" not in log, log


def test_broadcasts_from_a_view_an_emitter_and_a_client_reach_everyone_once(
    processes: Processes, clients: list[Client], redis_server: RedisServer, prefix: str
) -> None:
    env = cluster_env(redis_server.url, prefix)
    gunicorn, gport = start_gunicorn(processes, env)
    node, nport = start_node(processes, env)
    workers = one_client_per_worker(clients, gport, "w", "room:lobby")
    on_node = connect(clients, nport, "n0", "room:lobby")
    everyone = [*workers, on_node]
    for client in everyone:
        wait_for(relay_connected(client), what="every relay connected")
    pids = {whoami(c)["pid"] for c in everyone}
    assert len(pids) == 3

    # A view on one of the gunicorn workers.
    status, body = http_json(gport, "POST", "/broadcast?event=news&to=room:lobby", {"n": 1})
    assert status == 200, body
    # A client's event, re-emitted by its worker to the channel, the sender excluded.
    sender = workers[0]
    assert sender.emit("chat.send", {"channel": "room:lobby", "text": "hi"}, ack=True) is True
    # A cron-like process; then the marker.
    printed = emit_from_another_process(
        processes,
        redis_server.url,
        prefix,
        ["emitted", {"by": "cron"}, "room:lobby"],
        ["marker", None, "room:lobby"],
    )
    assert printed.split() == ["3", "3"]  # three processes have members of room:lobby

    for client in everyone:
        events = read_until(client, named("marker"))
        names = [e.event for e in events]
        assert names.count("news") == 1, names
        assert names.count("emitted") == 1, names
        assert names.count("chat.message") == (0 if client is sender else 1), names
    no_tracebacks(gunicorn, node)


def test_a_node_killed_with_sigkill_is_purged_and_its_members_leave(
    processes: Processes, clients: list[Client], redis_server: RedisServer, prefix: str
) -> None:
    env = cluster_env(redis_server.url, prefix)
    gunicorn, gport = start_gunicorn(processes, env)
    node, nport = start_node(processes, env)
    room = "presence-room.1"
    alice = connect(clients, gport, "alice", room)
    bob = connect(clients, nport, "bob")
    members = bob.subscribe(room)["members"]
    assert [m["user_id"] for m in members] == ["alice", "bob"]
    joined = read_until(alice, named("mls.joined"))[-1]
    assert joined.data["member"] == {"user_id": "bob", "info": {"name": "Bob"}}
    assert http_json(gport, "GET", "/online")[1]["users"] == ["alice", "bob"]

    node.send_signal(signal.SIGKILL)
    node.wait(10)
    left = read_until(alice, named("mls.left"))[-1]
    assert left.data == {"channel": room, "member": {"user_id": "bob", "info": {"name": "Bob"}}}

    def purged() -> bool:
        online = http_json(gport, "GET", f"/online?channel={room}")[1]
        # The two gunicorn workers are left (a condition, not a snapshot: a worker's
        # heartbeat may be a moment late on a busy machine).
        return (online["users"], online["members"], len(online["nodes"])) == (
            ["alice"],
            ["alice"],
            2,
        )

    wait_for(purged, what="the cluster without the killed node")
    no_tracebacks(gunicorn)


def test_redis_killed_and_restarted_mid_traffic(
    processes: Processes, clients: list[Client], private_redis: RedisServer, prefix: str
) -> None:
    env = cluster_env(private_redis.url, prefix)
    gunicorn, gport = start_gunicorn(processes, env)
    node, nport = start_node(processes, env)
    everyone = [
        *one_client_per_worker(clients, gport, "w", "room:lobby"),
        connect(clients, nport, "n0", "room:lobby"),
    ]
    for client in everyone:
        wait_for(relay_connected(client), what="every relay connected")

    statuses: list[int] = []

    def traffic() -> None:
        for i in itertools.count():
            port = gport if i % 2 else nport
            try:
                statuses.append(
                    http_json(port, "POST", "/broadcast?event=tick&to=room:lobby", i)[0]
                )
            except OSError:
                statuses.append(0)
            gevent.sleep(0.02)

    pump = gevent.spawn(traffic)
    try:
        wait_for(lambda: statuses.count(200) >= 5, what="traffic")
        private_redis.kill()
        wait_for(lambda: 503 in statuses, what="emits failing loudly while Redis is down")
        private_redis.start()
        for client in everyone:  # asks each process over its own connection
            wait_for(relay_connected(client), 30, "every relay reconnected")
        wait_for(lambda: statuses[-3:] == [200, 200, 200], what="traffic flowing again")
    finally:
        pump.kill()
    assert set(statuses) <= {200, 503}, statuses  # every emit answered: delivered, or refused

    status, body = http_json(gport, "POST", "/broadcast?event=final&to=room:lobby", None)
    assert status == 200, body
    for client in everyone:
        read_until(client, named("final"))
        assert client.reconnects == 0  # the WebSockets never noticed
    # The registries wrote themselves back into the empty Redis.
    wait_for(
        lambda: len(http_json(gport, "GET", "/online")[1].get("users", [])) == 3,
        what="the cluster registry restored",
    )
    assert gunicorn.poll() is None and node.poll() is None
    no_tracebacks(gunicorn, node)


def test_redis_unreachable_at_start_fails_clearly_when_configured(
    processes: Processes, prefix: str
) -> None:
    dead = f"redis://:s3cret@127.0.0.1:{free_port()}/0"
    node = processes.python(
        "-m", "mlsockets", "serve", "cluster_app:app", "--bind", f"127.0.0.1:{free_port()}",
        env=cluster_env(dead, prefix, CLUSTER_STARTUP="fail"),
    )  # fmt: skip
    assert node.wait(30) == 2
    log = Processes.stderr(node)
    # "mlsockets serve: error: ..." (the CLI names the command; the test does not care how)
    assert ": error: cannot reach Redis at redis://***@127.0.0.1:" in log, log
    assert "s3cret" not in log


def test_redis_unreachable_at_start_is_retried_by_default(
    processes: Processes, redis_executable: str, tmp_path: Path, prefix: str
) -> None:
    late = RedisServer(redis_executable, tmp_path)
    node, port = start_node(processes, cluster_env(late.url, prefix))
    try:
        assert http_json(port, "GET", "/status")[1]["state"] == "connecting"
        status, body = http_json(port, "POST", "/broadcast?event=x", None)
        assert status == 503 and "relay is connecting" in body["error"], body
        late.start()
        wait_for(
            lambda: http_json(port, "GET", "/status")[1]["state"] == "connected",
            what="the node connecting once Redis is up",
        )
        assert http_json(port, "POST", "/broadcast?event=x", None)[0] == 200
        assert "cannot reach Redis" in Processes.stderr(node)  # said loudly, once
    finally:
        late.kill()


def test_nodes_stopped_with_sigterm_leave_the_cluster_at_once(
    processes: Processes, clients: list[Client], redis_server: RedisServer, prefix: str
) -> None:
    """``mlsockets serve`` (then a gunicorn worker) closes its connections, returns, and the
    hub closes at exit (Hub.close_at_exit): the node deregisters itself instead of waiting
    for a purge."""
    env = cluster_env(redis_server.url, prefix, CLUSTER_TTL="60")  # a purge would take 60 s
    gunicorn, gport = start_gunicorn(processes, env, workers=1)
    node, nport = start_node(processes, env)
    room = "presence-room.1"
    alice = connect(clients, gport, "alice", room)
    bob = connect(clients, nport, "bob")
    bob.subscribe(room)
    read_until(alice, named("mls.joined"))

    node.send_signal(signal.SIGTERM)
    assert node.wait(30) == 0, Processes.stderr(node)
    left = read_until(alice, named("mls.left"))[-1]
    assert left.data["member"]["user_id"] == "bob"
    assert "deregistered" in Processes.stderr(node)
    online = http_json(gport, "GET", f"/online?channel={room}")[1]
    assert (online["members"], len(online["nodes"])) == (["alice"], 1)
    # The same for a gunicorn worker: the last node leaves, nothing is left in Redis.
    gunicorn.send_signal(signal.SIGTERM)
    assert gunicorn.wait(30) == 0, Processes.stderr(gunicorn)
    admin = redis_server.client()
    try:
        assert admin.smembers(f"{prefix}:nodes") == set()
        assert admin.keys(f"{prefix}:node:*") == []
    finally:
        admin.close()
    no_tracebacks(gunicorn, node)
