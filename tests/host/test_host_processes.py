"""One host, no Redis: a real ``gunicorn -w 3 -k mlsockets.gunicorn.GeventWebSocketWorker``
whose workers relay through Unix sockets in one directory (``host_app.py``), clients spread
over every worker (each worker reports its pid), a view and an ``Emitter.for_directory`` in
another process broadcasting, presence across workers, a worker killed with SIGKILL.

"Exactly once": each client reads until it has every expected event, then keeps reading
until nothing more comes for a moment; a duplicate would show up there. The waits are bounds
that stop a hung test, never assertions on time.
"""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from host_support import (
    GUNICORN,
    Processes,
    connect,
    drain,
    emit_from_another_process,
    http_json,
    named,
    no_tracebacks,
    on_worker,
    read_until,
    spread,
    start_gunicorn,
    wait_for,
    whoami,
)

from mlsockets.client import Client, ReceivedEvent
from mlsockets.registry.hostdir import HostDirectory

pytestmark = pytest.mark.skipif(not GUNICORN.exists(), reason="gunicorn is not installed")

BIG = 1_500_000  # bytes of data in the large messages (more than 1 MB)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(tmp_path)
    yield procs
    procs.close()


@pytest.fixture
def clients() -> Iterator[list[Client]]:
    opened: list[Client] = []
    yield opened
    for client in opened:
        client.close()


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    return tmp_path / "sockets"


def _have_all(expected: dict[str, int]) -> object:
    seen: dict[str, int] = {}

    def done(event: ReceivedEvent) -> bool:
        seen[event.event] = seen.get(event.event, 0) + 1
        return all(seen.get(name, 0) >= n for name, n in expected.items())

    return done


def test_broadcasts_reach_every_worker_once_presence_is_one_and_a_stuck_peer_blocks_nothing(
    processes: Processes, clients: list[Client], directory: Path
) -> None:
    gunicorn, port = start_gunicorn(
        processes, directory, HOST_SEND_TIMEOUT="1", HOST_MAX_QUEUE=str(8 << 20)
    )
    by_pid = spread(clients, port, "w", workers=3)
    pids = sorted(by_pid)
    everyone = [by_pid[pid] for pid in pids]
    for client in everyone:
        client.subscribe("room:lobby")
    # Every worker bound its socket, owner-only, in an owner-only directory.
    assert os.stat(directory).st_mode & 0o777 == 0o700
    sockets = sorted(p for p in directory.iterdir() if p.suffix == ".sock")
    assert len(sockets) == 3 and all(p.stat().st_mode & 0o777 == 0o600 for p in sockets)

    # A view on one of the workers, a client's event (the sender excluded), a cron-like
    # process, and a message larger than 1 MB from a view and from the other process.
    status, body = http_json(port, "POST", "/broadcast?event=news&to=room:lobby", {"n": 1})
    assert status == 200, body
    sender = everyone[0]
    assert sender.emit("chat.send", {"channel": "room:lobby", "text": "hi"}, ack=True) is True
    status, body = http_json(port, "POST", f"/broadcast?event=big&to=room:lobby&size={BIG}")
    assert status == 200, body
    printed = emit_from_another_process(
        processes,
        directory,
        ["emitted", {"by": "cron"}, "room:lobby"],
        ["big2", {"char": "y", "repeat": BIG}, "room:lobby"],
    )
    assert printed.split() == ["3", "3"]  # three serving processes received each

    for client in everyone:
        expected = {"news": 1, "emitted": 1, "big": 1, "big2": 1}
        if client is not sender:
            expected["chat.message"] = 1
        events = read_until(client, _have_all(expected))  # type: ignore[arg-type]
        events += drain(client)
        names = [e.event for e in events]
        for name in ("news", "emitted", "big", "big2"):
            assert names.count(name) == 1, names
        assert names.count("chat.message") == (0 if client is sender else 1), names
        big = {e.event: e.data for e in events if e.event in ("big", "big2")}
        assert big == {"big": "x" * BIG, "big2": "y" * BIG}  # intact, not truncated

    # Presence across workers: alice on the first and the third worker is one member.
    room = "presence-room.1"
    alice1 = on_worker(clients, port, "alice", pids[0], room)
    alice2 = on_worker(clients, port, "alice", pids[2])
    assert [m["user_id"] for m in alice2.subscribe(room)["members"]] == ["alice"]
    bob = on_worker(clients, port, "bob", pids[1])
    assert [m["user_id"] for m in bob.subscribe(room)["members"]] == ["alice", "bob"]
    for tab in (alice1, alice2):
        joined = read_until(tab, named("mls.joined"))
        assert [e.data["member"]["user_id"] for e in joined if e.event == "mls.joined"] == ["bob"]
    online = http_json(port, "GET", f"/online?channel={room}")[1]
    assert "alice" in online["users"] and online["members"] == ["alice", "bob"]
    assert len(online["nodes"]) == 3
    # One tab closes: alice is still present (on the other worker): no mls.left.
    alice1.close()
    wait_for(
        lambda: http_json(port, "GET", "/online?user=alice")[1]["connections"] == 1,
        what="alice's first tab forgotten",
    )
    alice2.close()
    left = read_until(bob, named("mls.left"))
    left += drain(bob)
    assert [e.data for e in left if e.event == "mls.left"] == [
        {"channel": room, "member": {"user_id": "alice", "info": {"name": "Alice"}}}
    ]

    # A stuck peer: a live process (its lock is held) whose socket never reads. Publishing
    # big messages goes on; the records for it are dropped, counted and logged.
    stuck_dir = HostDirectory(directory)
    stuck_dir.claim("stuck-peer")  # type: ignore[arg-type]
    stuck = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        stuck.bind(stuck_dir.socket_path("stuck-peer"))
        stuck.listen(1)
        for i in range(12):
            status, body = http_json(
                port, "POST", f"/broadcast?event=load&to=room:lobby&size={300_000 + i}"
            )
            assert status == 200, body
        for client in everyone:  # the live workers got everything (from several workers:
            # the order between two publishers is not defined)
            events = read_until(client, _have_all({"load": 12}))  # type: ignore[arg-type]
            sizes = sorted(len(e.data) for e in events if e.event == "load")
            assert sizes == [300_000 + i for i in range(12)]
        dropped: dict[int, int] = {}

        def drops() -> int:
            body = http_json(port, "GET", "/status")[1]
            dropped[body["pid"]] = body["peers"].get("stuck-peer", {}).get("dropped", 0)
            return sum(dropped.values())

        wait_for(drops, what="the records for the stuck peer counted as dropped")
    finally:
        stuck.close()
        stuck_dir.release("stuck-peer")  # type: ignore[arg-type]
    assert "relay message(s) for peer stuck-peer" in processes.stderr(gunicorn)
    no_tracebacks(gunicorn)


def test_a_worker_killed_with_sigkill_is_purged_and_replaced(
    processes: Processes, clients: list[Client], directory: Path
) -> None:
    # What a crash of the whole host left: a socket nobody listens on, an unlocked lock
    # file, an unreadable registry. Start-up goes on and cleans it.
    directory.mkdir(mode=0o700)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(directory / "mls.crashed-1.sock"))
    stale.close()
    (directory / "mls.crashed-1.lock").write_text("1\n")
    (directory / "mls.registry.sqlite3").write_bytes(b"garbage" * 1000)
    gunicorn, port = start_gunicorn(processes, directory)
    assert not (directory / "mls.crashed-1.sock").exists()
    by_pid = spread(clients, port, "w", workers=3)
    victim, survivor = sorted(by_pid)[:2]
    room = "presence-room.7"
    carol = on_worker(clients, port, "carol", victim, room)
    dave = on_worker(clients, port, "dave", survivor)
    assert [m["user_id"] for m in dave.subscribe(room)["members"]] == ["carol", "dave"]
    node = whoami(carol)["node"]
    assert (directory / f"mls.{node}.sock").exists()

    # A stuck worker (stopped) is not a dead one: publishing goes on, nothing is purged, and
    # once it runs again it gets what was queued for it meanwhile.
    os.kill(victim, signal.SIGSTOP)
    try:
        for i in range(3):
            status, body = http_json(port, "POST", f"/broadcast?event=while-stopped&to={room}", i)
            assert status == 200 and body["pid"] != victim, body
        got = read_until(dave, _have_all({"while-stopped": 3}))  # type: ignore[arg-type]
        assert sorted(e.data for e in got if e.event == "while-stopped") == [0, 1, 2]
        assert len(http_json(port, "GET", "/online")[1]["nodes"]) == 3
    finally:
        os.kill(victim, signal.SIGCONT)
    got = read_until(carol, _have_all({"while-stopped": 3}))  # type: ignore[arg-type]
    assert sorted(e.data for e in got if e.event == "while-stopped") == [0, 1, 2]
    assert not [e for e in got if e.event == "mls.left"]

    os.kill(victim, signal.SIGKILL)
    left = read_until(dave, named("mls.left"))
    assert left[-1].data == {
        "channel": room,
        "member": {"user_id": "carol", "info": {"name": "Carol"}},
    }
    assert not drain(dave)  # announced once, by one survivor
    online = http_json(port, "GET", f"/online?channel={room}")[1]
    assert online["members"] == ["dave"] and "carol" not in online["users"]
    assert not (directory / f"mls.{node}.sock").exists()
    assert not (directory / f"mls.{node}.lock").exists()

    # gunicorn replaces the worker; the newcomer joins: it sees the presence and gets
    # broadcasts, and its clients get those of the others.
    def replaced() -> bool:
        return len(http_json(port, "GET", "/online")[1]["nodes"]) == 3

    wait_for(replaced, 60, "the replacement worker registered")
    newcomer = user = None
    for attempt in range(200):
        user = f"eve{attempt}"
        client = connect(clients, port, user)
        if whoami(client)["pid"] not in by_pid:
            newcomer = client
            break
        clients.remove(client)
        client.close()
    assert newcomer is not None, "no connection reached the replacement worker"
    assert [m["user_id"] for m in newcomer.subscribe(room)["members"]] == ["dave", user]
    dave.emit("chat.send", {"channel": room, "text": "welcome"}, ack=True)
    message = read_until(newcomer, named("chat.message"))[-1]
    assert message.data == {"text": "welcome", "from": "dave"}
    no_tracebacks(gunicorn)


def test_a_directory_open_to_other_users_is_refused(processes: Processes, tmp_path: Path) -> None:
    directory = tmp_path / "open"
    directory.mkdir()
    directory.chmod(0o755)
    proc = processes.start(
        str(GUNICORN),
        "-k", "mlsockets.gunicorn.GeventWebSocketWorker",
        "-w", "1",
        "--bind", "127.0.0.1:0",
        "host_app:app",
        env={"HOST_DIR": str(directory)},
    )  # fmt: skip
    assert proc.wait(60) != 0  # the worker cannot boot, so gunicorn stops
    log = processes.stderr(proc)
    assert "has mode 0755: other users could connect" in log and "chmod 700" in log, log
    assert not list(directory.iterdir())  # nothing was bound
