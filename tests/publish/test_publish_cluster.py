"""``mlsockets serve`` nodes of the Flask app and a real redis-server: a publish over HTTP to
one node reaches the clients of every node, exactly once, also from a node that has no
WebSocket (hence no hub) yet; with Redis gone, the API answers 503.

"Exactly once": Redis delivers one publisher's messages in order, so a client whose next
event after the one under test is the marker published after it got no duplicate. No timing
assertions: the bounds only stop a hung test.
"""

from __future__ import annotations

import shutil
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from cluster_support import Processes, RedisServer, free_port, wait_for
from publish_apps import KEY, SECRET

from mlsockets.client import Client, PublishClient, PublishError

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


@pytest.fixture
def socket_dir() -> Iterator[str]:
    where = tempfile.mkdtemp(prefix="mlsp-", dir="/tmp")  # short: sun_path is 108 bytes
    yield where
    shutil.rmtree(where, ignore_errors=True)


@pytest.fixture
def clients() -> Iterator[list[Client]]:
    opened: list[Client] = []
    yield opened
    for client in opened:
        client.close()


def start_node(processes: Processes, redis_url: str, *binds: str) -> Any:
    args = [arg for bind in binds for arg in ("--bind", bind)]
    proc = processes.python(
        "-m", "mlsockets", "serve", "publish_apps:create_flask_app()", *args,
        env={
            "MLSOCKETS_REDIS_URL": redis_url,
            "PYTHONPATH": f"{HERE}:{ROOT}",
            "MLSOCKETS_CLOSE_TIMEOUT": "1",
        },
    )  # fmt: skip
    return proc


def answers(proc: Any, port: int) -> bool:
    assert proc.poll() is None, Processes.stderr(proc)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as response:
            return bool(response.read() == b"pong")
    except OSError:
        return False


def next_event(client: Client, skip: str = "") -> Any:
    """The client's next event, skipping any named ``skip``."""
    while True:
        event = client.receive(timeout=15)
        if event.event != skip:
            return event


def test_a_publish_to_one_node_reaches_the_clients_of_both_once(
    processes: Processes,
    private_redis: RedisServer,
    clients: list[Client],
    socket_dir: str,
) -> None:
    port_a, port_b, port_c = free_port(), free_port(), free_port()
    sock_a = f"{socket_dir}/a.sock"
    node_a = start_node(processes, private_redis.url, f"127.0.0.1:{port_a}", f"unix:{sock_a}")
    node_b = start_node(processes, private_redis.url, f"127.0.0.1:{port_b}")
    node_c = start_node(processes, private_redis.url, f"127.0.0.1:{port_c}")  # never a client
    wait_for(lambda: answers(node_a, port_a), 30, "node a")
    wait_for(lambda: answers(node_b, port_b), 30, "node b")
    wait_for(lambda: answers(node_c, port_c), 30, "node c")
    on_a = Client.connect(f"ws://127.0.0.1:{port_a}/ws", timeout=10)
    clients.append(on_a)
    on_b = Client.connect(f"ws://127.0.0.1:{port_b}/ws", timeout=10)
    clients.append(on_b)
    for client in (on_a, on_b):
        client.subscribe("room:1")
    # Node a is reached over its Unix socket listener, node b over TCP.
    to_a = PublishClient(f"http+unix://{quote(sock_a, safe='')}/ws/api/publish", secret=SECRET)
    to_b = PublishClient(f"http://127.0.0.1:{port_b}/ws/api/publish", key=KEY)

    # Wait until both relays carry messages: probe until the client on b hears one.
    def relayed() -> bool:
        try:
            to_a.publish("probe", to="room:1")
        except PublishError as exc:
            assert exc.status == 503, exc  # a relay still connecting
            return False
        try:
            return bool(on_b.receive(timeout=0.5).event == "probe")
        except TimeoutError:
            return False

    wait_for(relayed, 30, "node b to receive from node a")
    assert to_a.publish("sync", to="room:1")["ok"]
    for client in (on_a, on_b):
        assert next_event(client, skip="probe").event == "sync"

    assert to_a.publish("news", {"from": "a"}, to="room:1") == {"ok": True, "received": 1}
    assert to_b.publish("news", {"from": "b"}, to="room:1") == {"ok": True, "received": 1}
    reply = to_a.publish_batch([{"event": "batched", "channel": "room:1"}, {"event": "marker"}])
    assert reply["ok"] is True and reply["received"] == 2  # this node's client, twice
    for client in (on_a, on_b):
        got = [client.receive(timeout=15) for _ in range(4)]
        assert [(e.event, e.data) for e in got] == [
            ("news", {"from": "a"}),
            ("news", {"from": "b"}),
            ("batched", None),
            ("marker", None),
        ], client

    # A node with no WebSocket (no hub yet) publishes through its publish-only emitter.
    to_c = PublishClient(f"http://127.0.0.1:{port_c}/ws/api/publish", key=KEY)
    assert to_c.publish("via-c", to="room:1") == {"ok": True, "received": 0}
    assert to_c.publish("marker", to="room:1")["ok"]
    for client in (on_a, on_b):
        assert [client.receive(timeout=15).event for _ in range(2)] == ["via-c", "marker"]

    # Redis gone: node a still delivers locally, and says the other nodes were not reached.
    private_redis.kill()

    def refused() -> PublishError | None:
        try:
            to_a.publish("lost", to="room:1")
        except PublishError as exc:
            return exc
        return None

    error = wait_for(refused, 30, "a 503 while Redis is down")
    assert error.status == 503 and error.code == "unavailable", error.body
    assert error.message.startswith("the broadcaster is unavailable")
    assert error.body["delivered"] == 1
    logs = [Processes.stderr(node) for node in (node_a, node_b, node_c)]
    assert not any("Traceback" in log for log in logs), logs
