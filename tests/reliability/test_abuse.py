"""Abuse against one server while a well-behaved client keeps using it (quick scale).

One module-scoped run of every attack (benchmarks/soak/abuse.py); each test checks one
attack's outcome: its clients ended with the expected close code or HTTP status, the probe
client was answered throughout, RSS stayed bounded, fds and greenlets came back.
"""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks.soak import abuse, checks


@pytest.fixture(scope="module")
def attacked(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return abuse.run(tmp_path_factory.mktemp("abuse"), scale=1.0)


@pytest.mark.parametrize("attack", list(abuse.ATTACKS))
def test_attack_is_contained(attacked: dict[str, Any], attack: str) -> None:
    assert checks.abuse({attack: attacked[attack]}) == []


def test_expected_close_codes_recorded_by_the_server(attacked: dict[str, Any]) -> None:
    codes = {name: r["server_close_codes"] for name, r in attacked.items() if name[0] != "_"}
    assert codes["invalid_utf8"]["1007 invalid UTF-8 in a text message"] == 200
    assert codes["ping_flood"]["1008 slow consumer"] == 10
    assert codes["compression_bomb"]["1009 decompressed message exceeds the maximum size"] == 10
    assert codes["oversized"]["1009 message larger than 1048576 bytes"] == 50


def test_no_tracebacks_in_the_server_log(attacked: dict[str, Any]) -> None:
    assert attacked["_server_tracebacks"] == 0
    assert attacked["_server_slow_consumer_warnings"] == 10  # the ping flooders
