"""A client of the HTTP publish API (docs/publish-api.md), standard library only.

::

    client = PublishClient("https://app.example.com/ws/api/publish", key=os.environ["KEY"])
    client.publish("order.shipped", {"id": 7}, to="private-user.42")
    client.publish("maintenance", {"at": "22:00"})                      # everyone
    client.publish_batch([{"event": "a", "channel": "room:1"}, {"event": "b", "user": "42"}])

URLs: ``http://host[:port]/path``, ``https://host[:port]/path``, or a Unix socket as
``http+unix://<socket path, percent-encoded>/path``, e.g.
``http+unix://%2Frun%2Fapp.sock/ws/api/publish`` for ``mlsockets serve --bind
unix:/run/app.sock`` (the ``requests-unixsocket`` convention). The path is the publish
endpoint's; the batch endpoint is that path plus ``/batch``.

Credentials: ``key`` is sent as ``Authorization: Bearer <key>``; with ``secret`` every request
is signed (``X-MLSockets-Timestamp`` and ``X-MLSockets-Signature``, HMAC-SHA256 over the
timestamp, a dot and the exact body). Given both, both are sent, and the server uses the one
it is configured for.

Every call opens its own connection (no state is shared between calls: any thread or
greenlet may call), sends one request, reads the reply and closes. Nothing is retried: a
publish is not idempotent for the clients that receive it twice.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import socket
import ssl
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from mlsockets.exceptions import MLSocketsError

__all__ = ["PublishClient", "PublishError"]

#: Largest reply read, in bytes: a publish reply is a few hundred bytes.
MAX_REPLY = 1 << 20


class PublishError(MLSocketsError):
    """The server answered with an HTTP error.

    Attributes:
        status: the HTTP status (401, 400, 413, 503...).
        body: the decoded JSON reply (``{"error": {"code", "message", "fields"?}}``), or its
            text when it was not JSON.
        code: the reply's error code (``unauthorized``, ``invalid``...), or None.
        message: the server's message, or the reply's text.
    """

    def __init__(self, status: int, body: Any) -> None:
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            self.code: str | None = str(error.get("code"))
            self.message = str(error.get("message"))
            fields = error.get("fields")
            detail = f"{self.code}: {self.message}"
            if fields:
                detail += f" {json.dumps(fields, sort_keys=True)}"
        else:
            self.code = None
            self.message = body if isinstance(body, str) else json.dumps(body)
            detail = self.message[:200]
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status
        self.body = body


@dataclass(frozen=True, slots=True)
class _Endpoint:
    scheme: str  # "http", "https" or "http+unix"
    host: str  # the host, or the socket's path
    port: int | None
    path: str
    host_header: str


def _parse(url: str) -> _Endpoint:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https", "http+unix"):
        raise ValueError(f"not an http://, https:// or http+unix:// URL: {url!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"a publish URL has no query or fragment: {url!r}")
    path = parts.path or "/"
    if scheme == "http+unix":
        # netloc, not hostname: hostname lower-cases, and a path is case-sensitive.
        socket_path = unquote(parts.netloc)
        if not socket_path:
            raise ValueError(f"no socket path in {url!r}: use http+unix://%2Frun%2Fapp.sock/...")
        return _Endpoint(scheme, socket_path, None, path, "localhost")
    if not parts.hostname:
        raise ValueError(f"no host in {url!r}")
    port = parts.port  # raises ValueError for a bad port
    return _Endpoint(scheme, parts.hostname, port, path, parts.netloc.rpartition("@")[2])


class _UnixConnection(http.client.HTTPConnection):
    """HTTP/1.1 over a Unix stream socket."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._socket_path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


class PublishClient:
    """Publishes events through a server's HTTP publish API.

    Args:
        url: the publish endpoint (see the module docstring for the forms).
        key: the shared key (``MLSOCKETS_PUBLISH_KEY``).
        secret: the HMAC secret (``MLSOCKETS_PUBLISH_SECRET``).
        timeout: seconds for connecting, and for each read and write.
        ssl_context: for ``https://`` (default: ``ssl.create_default_context()``).

    Raises:
        ValueError: a bad URL, or neither ``key`` nor ``secret``.
    """

    def __init__(
        self,
        url: str,
        *,
        key: str | None = None,
        secret: str | bytes | None = None,
        timeout: float = 5.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if not key and not secret:
            raise ValueError("give the publish API's key or secret")
        self.url = url
        self.timeout = timeout
        self._endpoint = _parse(url)
        self._key = key
        self._secret = secret.encode("utf-8") if isinstance(secret, str) else secret
        self._ssl_context = ssl_context

    def __repr__(self) -> str:
        return f"PublishClient({self.url!r})"  # never the credentials

    def publish(
        self,
        event: str,
        data: object = None,
        *,
        to: str | None = None,
        user: str | None = None,
        connection: str | None = None,
        tag: str | None = None,
        skip: str | None = None,
    ) -> dict[str, Any]:
        """Send ``event`` with ``data`` to one target: ``to`` (a channel name), ``user``,
        ``connection`` or ``tag``; none of them sends it to everyone. ``skip`` excludes a
        connection id (the one that caused the event).

        Returns:
            The server's reply, ``{"ok": True, "received": n}``: ``n`` connections of the
            node that answered received it (other nodes' are not counted).

        Raises:
            ValueError: more than one target; ``data`` holds NaN or Infinity.
            TypeError: ``data`` holds something JSON cannot encode.
            PublishError: the server refused (its status and error in the exception).
            OSError: the server cannot be reached (refused, timed out, TLS failure...).
        """
        message = _message(event, data, to=to, user=user, connection=connection, tag=tag)
        if skip is not None:
            message["skip"] = skip
        return self._post(self._endpoint.path, message)

    def publish_batch(self, messages: Iterable[Mapping[str, object]]) -> dict[str, Any]:
        """Send several messages in one request (each as the server's JSON message:
        ``{"event", "data"?, "channel" | "user" | "connection" | "tag"?, "skip"?}``).

        The server validates every message before publishing any: one invalid message
        refuses the whole batch (400, with the ``fields`` of each bad one by index).

        Returns:
            ``{"ok": True, "received": total, "results": [{"ok": True, "received": n}, ...]}``.

        Raises:
            PublishError: a refusal; 503 when some messages could not reach every node
                (``body["results"]`` says which).
            OSError: the server cannot be reached.
        """
        return self._post(self._endpoint.path.rstrip("/") + "/batch", {"messages": list(messages)})

    def _post(self, path: str, payload: Mapping[str, object]) -> dict[str, Any]:
        body = json.dumps(payload, separators=(",", ":"), allow_nan=False).encode("utf-8")
        headers = {"Content-Type": "application/json", "Host": self._endpoint.host_header}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        if self._secret:
            timestamp = str(int(time.time()))
            message = timestamp.encode("ascii") + b"." + body
            digest = hmac.new(self._secret, message, hashlib.sha256).hexdigest()
            headers["X-MLSockets-Timestamp"] = timestamp
            headers["X-MLSockets-Signature"] = f"sha256={digest}"
        conn = self._connection()
        try:
            conn.request("POST", path, body=body, headers=headers)
            response = conn.getresponse()
            status = response.status
            raw = response.read(MAX_REPLY + 1)
        except http.client.HTTPException as exc:  # not an HTTP server at the other end
            raise ConnectionError(f"bad HTTP reply from {self.url}: {exc!r}") from exc
        finally:
            conn.close()
        reply = _decode(raw[:MAX_REPLY])
        if not 200 <= status < 300:
            raise PublishError(status, reply)
        if not isinstance(reply, dict):
            raise PublishError(status, reply if isinstance(reply, str) else json.dumps(reply))
        return reply

    def _connection(self) -> http.client.HTTPConnection:
        endpoint = self._endpoint
        if endpoint.scheme == "http+unix":
            return _UnixConnection(endpoint.host, self.timeout)
        if endpoint.scheme == "https":
            return http.client.HTTPSConnection(
                endpoint.host,
                endpoint.port,
                timeout=self.timeout,
                context=self._ssl_context or ssl.create_default_context(),
            )
        return http.client.HTTPConnection(endpoint.host, endpoint.port, timeout=self.timeout)


def _message(event: str, data: object, **targets: str | None) -> dict[str, object]:
    given = {("channel" if k == "to" else k): v for k, v in targets.items() if v is not None}
    if len(given) > 1:
        names = ", ".join("to" if k == "channel" else k for k in given)
        raise ValueError(f"give at most one target, not {names}")
    return {"event": event, "data": data, **given}


def _decode(raw: bytes) -> Any:
    """The reply's JSON, or its text when it is not JSON (a proxy's error page)."""
    text = raw.decode("utf-8", "replace")
    try:
        return json.loads(text)
    except ValueError:
        return text
