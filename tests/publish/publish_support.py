"""Helpers for tests/publish (imported as ``publish_support``; the name is unique across
tests/): a server under test and one-request HTTP calls to it, over TCP or its Unix socket."""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mlsockets.transport.gevent import Server


@dataclass
class Reply:
    status: int
    headers: Mapping[str, str]
    body: Any
    all_headers: list[tuple[str, str]] = field(default_factory=list)


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=10)
        self.unix_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(self.unix_path)


@dataclass
class Served:
    """A running server: its TCP port and, when asked for, its Unix socket path."""

    server: Server
    port: int
    unix_path: str | None = None

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def url(self, path: str = "/ws/api/publish") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def request(
        self,
        method: str,
        path: str,
        body: bytes | Any = None,
        headers: Mapping[str, str] | None = None,
        *,
        unix: bool = False,
        chunked: bool = False,
    ) -> Reply:
        """One request on a fresh connection; the reply's JSON (or text) decoded."""
        conn: http.client.HTTPConnection
        if unix:
            assert self.unix_path is not None
            conn = _UnixHTTPConnection(self.unix_path)
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(
                method, path, body=body, headers=dict(headers or {}), encode_chunked=chunked
            )
            response = conn.getresponse()
            raw = response.read()
            try:
                decoded: Any = json.loads(raw)
            except ValueError:
                decoded = raw.decode(errors="replace")
            return Reply(
                response.status,
                {k.lower(): v for k, v in response.getheaders()},
                decoded,
                response.getheaders(),
            )
        finally:
            conn.close()
