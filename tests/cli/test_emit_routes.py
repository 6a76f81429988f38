"""``mlsockets emit`` through each route, end to end against a real ``mlsockets serve``
subprocess with a client connected: the HTTP publish API (``--url``), the host's Unix-socket
broadcaster (``--broadcast-dir``) and Redis (``MLSOCKETS_REDIS_URL``); and their failures with
exit status 1 (unreachable) or 2 (configuration)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from cli_support import Processes, clean_env, free_port, mlsockets, serving_address, wait_for
from websockets.sync.client import connect

SUBPROTOCOL = "mlsockets.json.v1"
KEY = "key-of-the-publish-api-0123456789"


def serve(processes: Processes, **env: str) -> str:
    proc = processes.start(
        sys.executable, "-m", "mlsockets", "serve", "reload_app:app", "--bind", "127.0.0.1:0",
        env=clean_env(**env),
    )  # fmt: skip
    return serving_address(proc)


def client(address: str) -> Any:
    return connect(
        f"ws://{address}/ws", origin=f"http://{address}",  # type: ignore[arg-type]
        subprotocols=[SUBPROTOCOL], open_timeout=20, proxy=None,  # type: ignore[list-item]
    )  # fmt: skip


def next_event(ws: Any, name: str) -> dict[str, Any]:
    while True:
        message = json.loads(ws.recv(timeout=20))
        if message.get("event") == name:
            return dict(message)


def test_emit_through_the_http_publish_api(processes: Processes) -> None:
    address = serve(processes, MLSOCKETS_PUBLISH_KEY=KEY)
    url = f"http://{address}/ws/api/publish"
    with client(address) as ws:
        next_event(ws, "mls.welcome")
        done = mlsockets("emit", "news", '{"n": 1}', "--url", url, "--key", KEY, "--json")
        assert done.returncode == 0, done.stderr
        reply = json.loads(done.stdout)
        assert reply["route"] == f"http {url}" and reply["reply"]["ok"] is True
        assert next_event(ws, "news")["data"] == {"n": 1}
        # The key may come from the environment, as the server's does.
        env = clean_env(MLSOCKETS_PUBLISH_KEY=KEY)
        done = mlsockets("emit", "again", "--url", url, env=env)
        assert done.returncode == 0, done.stderr
        assert f"emitted 'again' to everyone via http {url}" in done.stdout
        assert next_event(ws, "again")["data"] is None
    wrong = mlsockets("emit", "x", "--url", url, "--key", "nope" * 5, "--json")
    assert wrong.returncode == 2
    assert "answered 401" in wrong.stderr and json.loads(wrong.stdout)["ok"] is False
    nokey = mlsockets("emit", "x", "--url", url)
    assert nokey.returncode == 2 and "needs a key or a secret" in nokey.stderr
    down = mlsockets("emit", "x", "--url", f"http://127.0.0.1:{free_port()}/ws/api/publish",
                     "--key", "k")  # fmt: skip
    assert down.returncode == 1 and "cannot reach the publish API" in down.stderr
    assert "Traceback" not in wrong.stderr + nokey.stderr + down.stderr


def test_emit_through_the_unix_broadcaster(processes: Processes, tmp_path: Path) -> None:
    directory = tmp_path / "bcast"
    empty = tmp_path / "empty"
    empty.mkdir(mode=0o700)
    down = mlsockets("emit", "x", "--broadcast-dir", str(empty))
    assert down.returncode == 1, down.stderr  # no serving process there
    address = serve(processes, MLSOCKETS_BROADCAST="unix", MLSOCKETS_BROADCAST_DIR=str(directory))
    with client(address) as ws:
        next_event(ws, "mls.welcome")

        def emitted() -> Any:
            done = mlsockets("emit", "hello", "[1]", "--broadcast-dir", str(directory), "--json")
            return done if done.returncode == 0 else None

        done = wait_for(emitted, 30, "the serving process's broadcaster socket")
        assert json.loads(done.stdout)["received"] == 1
        assert json.loads(done.stdout)["route"] == f"unix {directory}"
        assert next_event(ws, "hello")["data"] == [1]
        env = clean_env(MLSOCKETS_BROADCAST="unix", MLSOCKETS_BROADCAST_DIR=str(directory))
        done = mlsockets("emit", "by-env", env=env)
        assert done.returncode == 0, done.stderr
        assert next_event(ws, "by-env")["data"] is None
    nodir = mlsockets("emit", "x", env=clean_env(MLSOCKETS_BROADCAST="unix"))
    assert nodir.returncode == 2 and "needs a directory" in nodir.stderr


def test_emit_through_redis_with_the_settings_file(
    processes: Processes, redis_url: str, tmp_path: Path
) -> None:
    cfg = tmp_path / "mlsockets.toml"
    cfg.write_text(f'redis_url = "{redis_url}"\n')
    address = serve(processes, MLSOCKETS_CONFIG=str(cfg))
    with client(address) as ws:
        next_event(ws, "mls.welcome")

        def emitted() -> Any:
            done = mlsockets("emit", "ping", "--config", str(cfg), "--json")
            assert done.returncode == 0, done.stderr
            return done if json.loads(done.stdout)["received"] == 1 else None

        wait_for(emitted, 30, "the node's relay subscription")
        assert next_event(ws, "ping")["data"] is None
