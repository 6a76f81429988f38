"""Several hubs in this process, each with its own UnixBroadcaster (its own socket, node id and
HostRegistry) on one directory: fan-out, targets, presence, dead peers, stuck peers, stale
directories, permissions, the Emitter and the Flask selection. Connections are in-memory
fakes; the sockets, files, locks and SQLite are real."""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from host_support import wait_for

from mlsockets import metrics
from mlsockets.auth import Principal
from mlsockets.broadcast.base import (
    BroadcastUnavailable,
    ClusterUnavailable,
    ConnectionTarget,
    User,
)
from mlsockets.broadcast.emitter import Emitter
from mlsockets.broadcast.records import HEADER, MessageTooLarge, record
from mlsockets.broadcast.unix import UnixBroadcaster, UnixPublisher
from mlsockets.channels.authorizers import ChannelAuthorizers
from mlsockets.events import EventRouter
from mlsockets.exceptions import ConfigurationError
from mlsockets.formatters.base import FORMATTERS
from mlsockets.hub import Hub, HubOptions
from mlsockets.registry.hostdir import HostDirectory
from mlsockets.typing import ConnectionId, NodeId

JSON = FORMATTERS["mlsockets.json.v1"]
_ids = itertools.count(1)
ROOM = "presence-room.1"


class FakeConn:
    """A hub connection that records the envelopes it is sent."""

    def __init__(self, user: str | None = None) -> None:
        self.id = ConnectionId(f"conn-{next(_ids)}")
        info = {"name": user.title()} if user else {}
        self.principal = Principal(user_id=user, info=info)  # type: ignore[arg-type]
        self.formatter = JSON
        self.sent: list[dict[str, Any]] = []

    def send(self, message: str | bytes) -> None:
        self.sent.append(self.formatter.decode(message))  # type: ignore[arg-type]

    def close(self, code: int, reason: str) -> None:
        pass

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.sent if e.get("event") == name]

    def got(self, name: str, count: int = 1) -> Callable[[], bool]:
        return lambda: len(self.events(name)) >= count


Make = Callable[..., Hub]


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    return tmp_path / "sockets"


@pytest.fixture
def make_hub(directory: Path) -> Iterator[Make]:
    """``make_hub(**from_directory_options)``: a hub on its own UnixBroadcaster, closed after
    the test."""
    made: list[UnixBroadcaster] = []

    def make(**options: Any) -> Hub:
        options.setdefault("check_interval", 0.05)
        broadcaster = UnixBroadcaster.from_directory(directory, **options)
        made.append(broadcaster)
        authorizers = ChannelAuthorizers()
        authorizers.add("presence-room.{id}", lambda principal, id: dict(principal.info))
        return Hub(
            EventRouter(), authorizers, broadcaster=broadcaster, options=HubOptions(heartbeat=None)
        )

    yield make
    for broadcaster in made:
        broadcaster.close()


def connect(hub: Hub, user: str | None = None, *channels: str) -> FakeConn:
    conn = FakeConn(user)
    assert hub.connect(conn)  # type: ignore[arg-type]
    for channel in channels:
        subscribe(hub, conn, channel)
    return conn


def subscribe(hub: Hub, conn: FakeConn, channel: str) -> dict[str, Any]:
    msg_id = next(_ids)
    envelope = {"event": "mls.subscribe", "data": {"channel": channel}, "id": msg_id}
    hub.receive(conn, conn.formatter.encode(envelope))  # type: ignore[arg-type]
    (reply,) = [e for e in conn.sent if e.get("reply") == msg_id]
    assert "error" not in reply, reply
    return reply["data"]  # type: ignore[no-any-return]


def settle(*conns: FakeConn, seconds: float = 0.3) -> None:
    """Give late (duplicate) deliveries a moment to arrive before counting."""
    time.sleep(seconds)


def dead_socket(directory: HostDirectory, node: str) -> None:
    """What a process killed with SIGKILL leaves: a socket nobody listens on, an unlocked
    lock file."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(directory.socket_path(node))
    sock.close()
    Path(directory.lock_path(node)).write_text("12345\n")


def test_emits_reach_every_hub_once_with_skip_and_targets(make_hub: Make) -> None:
    a, b, c = make_hub(), make_hub(), make_hub()
    on_a, on_b, on_c = connect(a, "alice", "room"), connect(b, "bob", "room"), connect(c, "carol")
    assert a.emit("news", {"n": 1}, to="room", skip=on_a.id) == 0
    b.emit("tell", "hi", to=User("carol"))
    c.emit("direct", None, to=ConnectionTarget(on_b.id))
    c.emit("all")
    wait_for(lambda: on_b.events("news") and on_c.events("tell") and on_b.events("direct"))
    wait_for(lambda: all(conn.events("all") for conn in (on_a, on_b, on_c)))
    settle()
    assert [len(on_b.events("news")), len(on_a.events("news")), len(on_c.events("news"))] == [
        1,
        0,  # the sender, skipped
        0,  # not in the channel
    ]
    assert len(on_c.events("tell")) == 1 and len(on_b.events("direct")) == 1
    assert [len(x.events("all")) for x in (on_a, on_b, on_c)] == [1, 1, 1]


def test_presence_is_one_member_across_processes(make_hub: Make) -> None:
    a, b = make_hub(), make_hub()
    tab1 = connect(a, "alice", ROOM)
    settle()  # its mls.joined has gone by (the relay is asynchronous)
    tab2 = connect(b, "alice")
    assert [m["user_id"] for m in subscribe(b, tab2, ROOM)["members"]] == ["alice"]
    bob = connect(b, "bob")
    assert [m["user_id"] for m in subscribe(b, bob, ROOM)["members"]] == ["alice", "bob"]
    wait_for(tab1.got("mls.joined"))
    settle()
    assert bob.events("mls.joined") == []  # alice's second tab announced nothing
    registry = a.cluster
    assert registry is not None
    assert registry.count_user("alice") == 2  # type: ignore[attr-defined]
    a.disconnect(tab1)  # type: ignore[arg-type]
    settle()
    assert bob.events("mls.left") == []  # still present through the other process
    b.disconnect(tab2)  # type: ignore[arg-type]
    wait_for(bob.got("mls.left"))
    settle()
    assert [e["data"]["member"]["user_id"] for e in bob.events("mls.left")] == ["alice"]


def test_a_dead_process_is_purged_once_and_its_members_leave(
    make_hub: Make, directory: Path
) -> None:
    a, b, dying = make_hub(), make_hub(), make_hub()
    bob, dave = connect(a, "bob", ROOM), connect(b, "dave", ROOM)
    connect(dying, "carol", ROOM)
    wait_for(bob.got("mls.joined", 2))
    node = dying.broadcaster.node_id  # type: ignore[attr-defined]
    # Dies without deregistering: its lock is released (as the kernel does), its rows stay.
    dying.broadcaster.close(deregister=False)  # type: ignore[attr-defined]
    wait_for(bob.got("mls.left"))
    wait_for(dave.got("mls.left"))
    settle()
    for conn in (bob, dave):
        assert [e["data"]["member"]["user_id"] for e in conn.events("mls.left")] == ["carol"]
    registries = [a.cluster, b.cluster]
    assert sum(r.purged_nodes for r in registries) == 1  # type: ignore[union-attr]
    assert a.cluster.channel_members(ROOM) == b.cluster.channel_members(ROOM)  # type: ignore[union-attr]
    assert [m.user_id for m in a.cluster.channel_members(ROOM)] == ["bob", "dave"]  # type: ignore[union-attr]
    assert node not in a.cluster.nodes()  # type: ignore[union-attr]


def test_a_dead_peers_socket_is_detected_and_removed(make_hub: Make, directory: Path) -> None:
    a = make_hub()
    dead_socket(HostDirectory(directory), "gone-1")
    assert (directory / "mls.gone-1.sock").exists()
    a.emit("x")  # its writer is refused: the process is gone
    wait_for(lambda: not (directory / "mls.gone-1.sock").exists(), what="the stale socket removed")
    assert not (directory / "mls.gone-1.lock").exists()
    assert a.broadcaster.stats.dead_peers == 1  # type: ignore[attr-defined]
    assert a.broadcaster.stats.dropped == 0  # type: ignore[attr-defined]


def test_a_stale_directory_after_a_crash_does_not_break_start_up(
    make_hub: Make, directory: Path
) -> None:
    directory.mkdir(mode=0o700)
    host = HostDirectory(directory)
    for node in ("crashed-1", "crashed-2"):
        dead_socket(host, node)
    leftover = directory / ".mls.crashed-3.stmp"  # died while binding, long ago
    leftover.write_text("")
    os.utime(leftover, (time.time() - 3600, time.time() - 3600))
    Path(host.database).write_bytes(b"this is not a database" * 100)
    hub = make_hub()
    conn = connect(hub, "alice", ROOM)
    assert sorted(p.name for p in directory.glob("mls.*.sock")) == [
        f"mls.{hub.broadcaster.node_id}.sock"  # type: ignore[attr-defined]
    ]
    assert not leftover.exists()
    assert hub.cluster.members(ROOM)[0].user_id == "alice"  # type: ignore[union-attr]
    assert len(conn.events("mls.presence")) == 1


def test_stale_rows_of_a_crashed_process_are_purged_at_start(
    make_hub: Make, directory: Path
) -> None:
    directory.mkdir(mode=0o700)
    db = sqlite3.connect(HostDirectory(directory).database)
    db.executescript(
        "CREATE TABLE nodes (node TEXT PRIMARY KEY, pid INTEGER, started REAL);"
        "CREATE TABLE conns (conn TEXT PRIMARY KEY, node TEXT NOT NULL, user TEXT);"
        "CREATE TABLE presence (channel TEXT NOT NULL, user TEXT NOT NULL, node TEXT NOT NULL,"
        " info TEXT NOT NULL, PRIMARY KEY (channel, user, node));"
        "INSERT INTO nodes VALUES ('old-1', 1, 0);"
        "INSERT INTO conns VALUES ('c1', 'old-1', 'zed');"
        f"INSERT INTO presence VALUES ('{ROOM}', 'zed', 'old-1', '{{}}');"
    )
    db.commit()
    db.close()
    hub = make_hub()
    assert hub.cluster.online_users() == []  # type: ignore[union-attr]
    assert hub.cluster.members(ROOM) == []  # type: ignore[union-attr]


def test_a_stuck_peer_never_blocks_the_publisher(make_hub: Make, directory: Path) -> None:
    a = make_hub(send_timeout=0.3, max_queue=4 << 20)
    b = make_hub()
    on_b = connect(b, "bob")
    host = HostDirectory(directory)
    host.claim(NodeId("stuck"))  # alive (its lock is held), but it never reads
    stuck = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stuck.bind(host.socket_path("stuck"))
    stuck.listen(1)
    try:
        for i in range(8):
            a.emit("load", "x" * 400_000 + str(i))  # returns at once: only queued
        wait_for(on_b.got("load", 8), what="the live peer getting everything")
        stats = a.broadcaster.stats  # type: ignore[attr-defined]
        wait_for(lambda: stats.dropped == 8, what="records for the stuck peer dropped")
        assert a.broadcaster.status()["peers"]["stuck"]["dropped"] == stats.dropped  # type: ignore[attr-defined, index]
    finally:
        stuck.close()
        host.release(NodeId("stuck"))


def test_a_message_over_the_limit_is_refused_before_delivery(make_hub: Make) -> None:
    hub = make_hub(max_message=1000)
    conn = connect(hub, "alice")
    with pytest.raises(MessageTooLarge):
        hub.emit("big", "x" * 2000)
    assert conn.events("big") == []


def test_the_emitter_needs_a_running_server(make_hub: Make, directory: Path) -> None:
    with pytest.raises(BroadcastUnavailable, match="does not exist"):
        Emitter.for_directory(directory).emit("x")
    directory.mkdir(mode=0o700)
    dead_socket(HostDirectory(directory), "gone-2")
    with pytest.raises(BroadcastUnavailable, match="no mlsockets server is running"):
        Emitter.for_directory(directory).emit("x")
    assert not (directory / "mls.gone-2.sock").exists()  # removed on the way
    hub = make_hub()
    conn = connect(hub, "alice", "room")
    with Emitter.for_directory(directory) as emitter:
        assert emitter.emit("news", {"big": "y" * 2_000_000}, to="room") == 1
    wait_for(conn.got("news"))
    assert conn.events("news")[0]["data"]["big"] == "y" * 2_000_000


def test_the_emitter_gives_up_a_stuck_peer(make_hub: Make, directory: Path) -> None:
    directory.mkdir(mode=0o700)
    host = HostDirectory(directory)
    host.claim(NodeId("stuck"))
    stuck = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stuck.bind(host.socket_path("stuck"))
    stuck.listen(1)
    try:
        publisher = UnixPublisher(directory, timeout=0.3)
        emitter = Emitter(publisher.publish)
        with pytest.raises(BroadcastUnavailable, match="took the event within"):
            emitter.emit("big", "x" * 2_000_000)
        conn = connect(make_hub(), "alice")
        assert emitter.emit("big", "x" * 2_000_000) == 1  # the live one got it
        assert publisher.dropped == 2
        wait_for(conn.got("big"))
    finally:
        stuck.close()
        host.release(NodeId("stuck"))


def test_directory_permissions(tmp_path: Path) -> None:
    open_dir = tmp_path / "open"
    open_dir.mkdir(mode=0o755)
    os.chmod(open_dir, 0o755)
    with pytest.raises(ConfigurationError, match="chmod 700"):
        UnixBroadcaster.from_directory(open_dir)
    with pytest.raises(ConfigurationError, match="chmod 700"):
        Emitter.for_directory(open_dir).emit("x")
    a_file = tmp_path / "file"
    a_file.write_text("")
    with pytest.raises(ConfigurationError, match="not a directory"):
        UnixBroadcaster.from_directory(a_file)
    with pytest.raises(ConfigurationError, match="invalid prefix"):
        UnixBroadcaster.from_directory(tmp_path / "x", prefix="a/b")
    created = tmp_path / "new" / "sockets"
    UnixBroadcaster.from_directory(created)
    assert os.stat(created).st_mode & 0o777 == 0o700
    if os.geteuid() == 0:  # root can give a directory away to show the refusal
        theirs = tmp_path / "theirs"
        theirs.mkdir(mode=0o700)
        os.chown(theirs, 65534, 65534)
        with pytest.raises(ConfigurationError, match="belongs to uid 65534"):
            UnixBroadcaster.from_directory(theirs)


def test_the_flask_extension_selects_the_unix_broadcaster(
    make_hub: Make, directory: Path, tmp_path: Path
) -> None:
    flask = pytest.importorskip("flask")
    from flask_mlsockets import MLSockets

    app = flask.Flask(__name__, instance_path=str(tmp_path / "instance"))
    app.config.update(MLSOCKETS_BROADCAST="unix", MLSOCKETS_BROADCAST_DIR=str(directory))
    sockets = MLSockets(app)
    with app.app_context(), pytest.raises(BroadcastUnavailable, match="no mlsockets server"):
        sockets.emit("x")  # no hub in this process and no server on the host
    server = make_hub()
    conn = connect(server, "alice")
    with app.app_context():
        sockets.emit("hello", {"from": "a view"})  # through the emitter
        hub = sockets.hub()
        assert isinstance(hub.broadcaster, UnixBroadcaster)
        assert hub.broadcaster.directory.path == directory
        hub.emit("again")
    wait_for(conn.got("hello") and conn.got("again"))
    hub.broadcaster.close()
    short = Path(tempfile.mkdtemp(prefix="i", dir="/tmp"))  # AF_UNIX paths are short
    default = flask.Flask("other", instance_path=str(short))
    default.config["MLSOCKETS_BROADCAST"] = "unix"
    MLSockets(default)
    with default.app_context():
        hub2 = MLSockets.hub(default.extensions["mlsockets"].extension, default)
        assert hub2.broadcaster.directory.path == short / "mlsockets"  # type: ignore[attr-defined]
        hub2.broadcaster.close()  # type: ignore[attr-defined]
    shutil.rmtree(short)
    deep = flask.Flask("deep", instance_path=str(tmp_path / ("d" * 90)))
    deep.config["MLSOCKETS_BROADCAST"] = "unix"
    MLSockets(deep)
    with deep.app_context(), pytest.raises(ConfigurationError, match="AF_UNIX allows 107"):
        MLSockets.hub(deep.extensions["mlsockets"].extension, deep)
    bad = flask.Flask("bad", instance_path=str(tmp_path / "inst3"))
    (tmp_path / "open2").mkdir(mode=0o777)
    os.chmod(tmp_path / "open2", 0o777)
    bad.config.update(MLSOCKETS_BROADCAST="unix", MLSOCKETS_BROADCAST_DIR=str(tmp_path / "open2"))
    with pytest.raises(ConfigurationError, match="chmod 700"):
        MLSockets(bad)


def test_bad_input_on_a_socket_is_dropped_and_counted(make_hub: Make, caplog: Any) -> None:
    hub = make_hub(max_message=1000)
    conn = connect(hub, "alice")
    broadcaster = hub.broadcaster
    path = broadcaster.directory.socket_path(broadcaster.node_id)  # type: ignore[attr-defined]
    bad = [
        record(b"not json"),
        record(b'{"v": 2, "origin": "newer-node"}'),  # a version this node does not read
        HEADER.pack(5000) + b"x" * 10,  # over max_message: the connection is closed
        HEADER.pack(50) + b"half",  # the publisher goes away inside the record
    ]
    before = metrics.COUNTS.dropped.get("unix", 0)
    for data in bad:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(path)
            sock.sendall(data)
    stats = broadcaster.stats  # type: ignore[attr-defined]
    wait_for(lambda: stats.invalid == 4, what="four bad inputs counted")
    assert metrics.COUNTS.dropped["unix"] - before == 4  # mlsockets_broadcast_dropped_total
    assert [e["event"] for e in conn.sent] == ["mls.welcome"]  # nothing delivered
    text = caplog.text
    assert "malformed relay message" in text and "newer-node" in text
    assert "limit (max_message) is 1000" in text and "in the middle of a relay message" in text
    hub.emit("still", None)  # and the broadcaster goes on
    assert conn.events("still")


def test_a_registry_file_removed_while_running_is_written_back(
    make_hub: Make, directory: Path
) -> None:
    a, b = make_hub(), make_hub()
    connect(a, "alice", ROOM)
    bob = connect(b, "bob", ROOM)
    database = HostDirectory(directory).database
    for suffix in ("", "-wal", "-shm"):
        os.unlink(database + suffix)
    registry = b.cluster
    assert registry is not None

    def restored() -> bool:
        try:
            return [m.user_id for m in registry.channel_members(ROOM)] == ["alice", "bob"]  # type: ignore[attr-defined]
        except ClusterUnavailable:
            return False

    wait_for(restored, what="both processes written back")
    assert registry.online_users() == ["alice", "bob"]  # type: ignore[attr-defined]
    assert bob.events("mls.left") == []  # nobody left
