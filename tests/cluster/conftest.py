"""Fixtures for tests/cluster: a real ``redis-server`` per session (and a private one for the
tests that kill it), a key prefix per test so tests never see each other's state, and
subprocesses that are always reaped.

Without ``redis-server`` on PATH these tests skip, except in CI (``CI=true``), where that is
a failure: the cluster must be tested there.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster_support import Processes, RedisServer, find_redis_server


def _redis_executable() -> str:
    executable = find_redis_server()
    if executable is None:
        message = "redis-server is not installed (apt-get install redis-server)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{message}: the cluster tests cannot be skipped in CI", pytrace=False)
        pytest.skip(message)
    return executable


@pytest.fixture(scope="session")
def redis_executable() -> str:
    """The path of redis-server (skips, or fails in CI, without it)."""
    return _redis_executable()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server shared by the session's tests (which never kill it)."""
    server = RedisServer(_redis_executable(), tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.kill()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, which it may kill and start again."""
    workdir = tmp_path / "redis"
    workdir.mkdir()
    server = RedisServer(_redis_executable(), workdir)
    server.start()
    yield server
    server.kill()


@pytest.fixture
def prefix() -> str:
    """A Redis key prefix of this test's own."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(tmp_path)
    yield procs
    procs.close()
