"""``flask --app reload_app mlsockets status | emit | check`` as real subprocesses: the group is
added by ``init_app`` and reads the app's settings (here from the environment, through the
extension's defaults), against a private redis-server and an ``mlsockets serve`` node."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from cli_support import HERE, Processes, clean_env, run, serving_address, wait_for
from websockets.sync.client import connect

FLASK = str(Path(sys.executable).parent / "flask")
DOWN = "redis://admin:s3cret@127.0.0.1:1/0"  # nothing listens on port 1


def flask(*args: str, **env: str) -> Any:
    return run(FLASK, "--app", "reload_app", "mlsockets", *args, env=clean_env(**env), cwd=HERE)


def test_check_without_and_with_redis(redis_url: str) -> None:
    alone = flask("check", "--json")
    assert alone.returncode == 0, alone.stderr
    report = json.loads(alone.stdout)
    assert report["ok"] is True and report["redis"] is None
    assert report["broadcast"] == "local" and report["path"] == "/ws"
    ok = flask("check", MLSOCKETS_REDIS_URL=redis_url, MLSOCKETS_ALLOWED_ORIGINS="https://a.io")
    assert ok.returncode == 0, ok.stderr
    assert "broadcast redis, origins https://a.io" in ok.stdout
    assert f"ok: Redis at {redis_url} answers PING" in ok.stdout
    down = flask("check", "--json", MLSOCKETS_REDIS_URL=DOWN)
    assert down.returncode == 1
    assert json.loads(down.stdout)["error"] == "unreachable"
    assert "s3cret" not in down.stdout + down.stderr


def test_a_bad_setting_stops_the_app_with_the_settings_message() -> None:
    bad = flask("check", MLSOCKETS_HANDSHAKE_RATE="fast")
    assert bad.returncode != 0
    assert "handshake_rate = 'fast' (from environment variable MLSOCKETS_HANDSHAKE_RATE)" in (
        bad.stderr
    )
    typo = flask("check", MLSOCKETS_REDIS_URI="redis://x")
    assert typo.returncode != 0 and "did you mean MLSOCKETS_REDIS_URL?" in typo.stderr


def test_status_and_emit_through_redis(processes: Processes, redis_url: str) -> None:
    missing = flask("status")
    assert missing.returncode == 2 and "MLSOCKETS_REDIS_URL is not set" in missing.stderr
    local = flask("emit", "x")
    assert local.returncode == 2 and "reaches no connection" in local.stderr
    node = processes.start(
        sys.executable, "-m", "mlsockets", "serve", "reload_app:app", "--bind", "127.0.0.1:0",
        env=clean_env(MLSOCKETS_REDIS_URL=redis_url),
    )  # fmt: skip
    address = serving_address(node)
    with connect(
        f"ws://{address}/ws", origin=f"http://{address}",  # type: ignore[arg-type]
        subprotocols=["mlsockets.json.v1"], open_timeout=20, proxy=None,  # type: ignore[list-item]
    ) as ws:  # fmt: skip

        def one_node() -> Any:
            done = flask("status", "--json", MLSOCKETS_REDIS_URL=redis_url)
            assert done.returncode == 0, done.stderr
            report = json.loads(done.stdout)
            return report if report["totals"]["nodes"] == 1 else None

        # The node writes its status when it starts, then at each heartbeat (10 s by default):
        # its connection count may not include ours yet.
        report = wait_for(one_node, 30, "the node's status")
        assert report["nodes"][0]["pid"] == node.pid
        table = flask("status", MLSOCKETS_REDIS_URL=redis_url)
        assert "1 nodes, " in table.stdout and str(node.pid) in table.stdout
        sent = flask("emit", "flash", '{"n": 2}', "--json", MLSOCKETS_REDIS_URL=redis_url)
        assert sent.returncode == 0, sent.stderr
        assert json.loads(sent.stdout) == {"event": "flash", "target": "everyone", "route": "redis"}
        while True:
            message = json.loads(ws.recv(timeout=20))
            if message.get("event") == "flash":
                assert message["data"] == {"n": 2}
                break
    bad = flask("emit", "x", "{nope", MLSOCKETS_REDIS_URL=redis_url)
    assert bad.returncode == 2 and "DATA is not valid JSON" in bad.stderr
    both = flask("emit", "x", "--to", "a", "--user", "b", MLSOCKETS_REDIS_URL=redis_url)
    assert both.returncode == 2 and "at most one of" in both.stderr
