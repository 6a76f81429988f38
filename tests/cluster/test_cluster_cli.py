"""``mlsockets status``, ``emit`` and ``check`` as real subprocesses against a real
redis-server and an ``mlsockets serve`` node (tests/cluster/cluster_app.py) with a client on it.

The node's heartbeat (every ttl / 3 seconds) writes its status into Redis; ``status`` reads it.
"Exactly once" for ``emit`` is checked with a marker emitted after the event: Redis delivers in
order, so once the marker arrived, a duplicate of the event would have arrived too.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from cluster_support import ROOT, Processes, RedisServer, free_port, wait_for

from mlsockets.client import Client, ReceivedEvent

CHANNEL = "room:cli"
DOWN = "redis://admin:s3cret@127.0.0.1:1/0"  # nothing listens on port 1


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MLSOCKETS_")}
    return subprocess.run(
        [sys.executable, "-m", "mlsockets", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        env={**environ, **(env or {})},
    )


def _answers(proc: Any, port: int) -> bool:
    assert proc.poll() is None, Processes.stderr(proc)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/status")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


@pytest.fixture
def node(processes: Processes, redis_server: RedisServer, prefix: str) -> int:
    """An ``mlsockets serve`` node on the test's prefix (TTL 1 s: a heartbeat every 0.33 s);
    returns its port."""
    port = free_port()
    env = {
        "MLSOCKETS_REDIS_URL": redis_server.url,
        "CLUSTER_PREFIX": prefix,
        "CLUSTER_TTL": "1.0",
        "MLSOCKETS_CLOSE_TIMEOUT": "1",
    }
    proc = processes.python(
        "-m", "mlsockets", "serve", "cluster_app:app", "--bind", f"127.0.0.1:{port}", env=env
    )
    wait_for(lambda: _answers(proc, port), 30, "the mlsockets serve node")
    return port


@pytest.fixture
def client(node: int) -> Iterator[Client]:
    client = Client.connect(f"ws://127.0.0.1:{node}/ws?user=ada", timeout=10)
    client.subscribe(CHANNEL)
    yield client
    client.close()


def status_json(redis_url: str, prefix: str) -> dict[str, Any]:
    result = cli("status", "--redis", redis_url, "--prefix", prefix, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def read_until_marker(client: Client, timeout: float = 10.0) -> list[ReceivedEvent]:
    events: list[ReceivedEvent] = []
    deadline = time.monotonic() + timeout
    while not events or events[-1].event != "marker":
        left = deadline - time.monotonic()
        assert left > 0, f"timed out; received {[e.event for e in events]}"
        events.append(client.receive(timeout=left))
    return events


def test_status_shows_the_node_its_relay_and_its_connections(
    client: Client, redis_server: RedisServer, prefix: str
) -> None:
    def current() -> dict[str, Any] | None:
        report = status_json(redis_server.url, prefix)
        nodes = report["nodes"]
        if len(nodes) == 1 and nodes[0].get("connections") == 1:
            return report
        return None

    report = wait_for(current, 10, "the node's status with one connection")
    (status,) = report["nodes"]
    assert status["relay_state"] == "connected"
    assert status["relay_reconnects"] == 0
    assert status["channels"] >= 1  # room:cli has a local member
    assert isinstance(status["pid"], int) and status["host"] and status["version"]
    assert status["started_at"] <= status["updated_at"]
    assert report["totals"] == {
        "nodes": 1,
        "connections": 1,
        "channels": status["channels"],
        "online_users": 1,
    }
    assert report["relay_states"] == {"connected": 1}

    table = cli("status", "--redis", redis_server.url, "--prefix", prefix)
    assert table.returncode == 0, table.stderr
    assert status["node_id"] in table.stdout and "connected" in table.stdout
    assert "1 nodes, 1 connections, 1 online users; relays: 1 connected" in table.stdout

    empty = cli("status", "--prefix", f"{prefix}x", env={"MLSOCKETS_REDIS_URL": redis_server.url})
    assert empty.returncode == 0, empty.stderr
    assert "no live nodes" in empty.stdout


def test_emit_reaches_the_subscriber_exactly_once(
    client: Client, redis_server: RedisServer, prefix: str
) -> None:
    common = ("--redis", redis_server.url, "--prefix", prefix)
    result = cli("emit", "news.flash", '{"n": 1}', "--to", CHANNEL, *common, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "event": "news.flash",
        "target": f"channel {CHANNEL}",
        "route": f"redis {redis_server.url}",
        "received": 1,
    }
    result = cli("emit", "nudge", "[1, 2]", "--user", "ada", *common)
    assert result.returncode == 0, result.stderr
    assert "received by 1 process(es)" in result.stdout
    assert cli("emit", "marker", *common).returncode == 0  # everyone
    events = read_until_marker(client)
    flashes = [e for e in events if e.event == "news.flash"]
    assert [(e.data, e.channel) for e in flashes] == [({"n": 1}, CHANNEL)]
    assert [e.data for e in events if e.event == "nudge"] == [[1, 2]]


def test_emit_errors(redis_server: RedisServer) -> None:
    bad = cli("emit", "x", "{not json", "--redis", redis_server.url)
    assert bad.returncode == 2
    assert "DATA is not valid JSON" in bad.stderr and "Traceback" not in bad.stderr
    down = cli("emit", "x", '"data"', "--redis", DOWN)
    assert down.returncode == 1
    assert "cannot publish to redis://admin:***@127.0.0.1:1/0" in down.stderr
    assert "s3cret" not in down.stderr and "Traceback" not in down.stderr


def test_status_with_redis_unreachable_exits_1(redis_server: RedisServer) -> None:
    result = cli("status", "--redis", DOWN, "--json")
    assert result.returncode == 1
    assert "cannot reach Redis at redis://admin:***@127.0.0.1:1/0" in result.stderr
    assert "s3cret" not in result.stderr and "Traceback" not in result.stderr
    reply = json.loads(result.stdout)  # --json: the error as JSON too
    assert reply["ok"] is False and reply["error"] == "unreachable"
    assert "s3cret" not in result.stdout
    missing = cli("status")
    assert missing.returncode == 2
    assert "no Redis URL" in missing.stderr


def test_check(redis_server: RedisServer) -> None:
    ok = cli("check", env={"MLSOCKETS_REDIS_URL": redis_server.url, "MLSOCKETS_PING_TIMEOUT": "5"})
    assert ok.returncode == 0, ok.stderr
    assert "ok: settings (2 set, the others default)" in ok.stdout
    assert "ping_timeout from environment variable MLSOCKETS_PING_TIMEOUT" in ok.stdout
    assert f"ok: Redis at {redis_server.url} answers PING" in ok.stdout
    alone = cli("check")
    assert alone.returncode == 0 and "skipped: Redis" in alone.stdout
    bad = cli("check", "--redis", redis_server.url, env={"MLSOCKETS_PING_INTERVAL": "soon"})
    assert bad.returncode == 2
    assert (
        "invalid setting ping_interval = 'soon' (from environment variable "
        "MLSOCKETS_PING_INTERVAL): not a valid number" in bad.stderr
    )
    assert "Traceback" not in bad.stderr
    down = cli("check", "--redis", DOWN)
    assert down.returncode == 1
    assert "cannot reach Redis at redis://admin:***@127.0.0.1:1/0" in down.stderr
    assert "s3cret" not in down.stderr
