"""The publish API as a WSGI application, called directly: what it reads, what it logs, how
failures of the publish callable are answered, and its configuration errors. The HTTP
behaviour seen by a client is in test_publish_http.py."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging
from typing import Any

import pytest

from mlsockets.broadcast.base import BroadcastUnavailable, ConnectionTarget, Tag, Target, User
from mlsockets.exceptions import ConfigurationError
from mlsockets.publish_api import PublishAPI, PublishOptions, sign

KEY = "k" * 32
SECRET = "s" * 32
AUTH = {"HTTP_AUTHORIZATION": f"Bearer {KEY}"}


class Recorder:
    """A publish callable that records its calls; ``fail`` makes the nth call raise."""

    def __init__(self, received: int = 2) -> None:
        self.calls: list[tuple[str, object, str | Target | None, str | None]] = []
        self.received = received
        self.fail: dict[int, BaseException] = {}

    def __call__(
        self,
        event: str,
        data: object = None,
        *,
        to: str | Target | None = None,
        skip: str | None = None,
    ) -> int:
        self.calls.append((event, data, to, skip))
        error = self.fail.get(len(self.calls))
        if error is not None:
            raise error
        return self.received


class CountingStream(io.RawIOBase):
    """An endless body that counts the bytes handed out."""

    def __init__(self) -> None:
        self.given = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = len(buffer)
        buffer[:n] = b" " * n
        self.given += n
        return n


def call(
    api: PublishAPI,
    body: bytes | io.RawIOBase = b"",
    *,
    path: str = "/api/publish",
    method: str = "POST",
    length: bool = True,
    **environ: str,
) -> tuple[int, dict[str, str], Any]:
    stream = io.BytesIO(body) if isinstance(body, bytes) else body
    env: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "CONTENT_TYPE": "application/json",
        "wsgi.input": stream,
        **environ,
    }
    if length and isinstance(body, bytes):
        env.setdefault("CONTENT_LENGTH", str(len(body)))
    started: list[Any] = []
    chunks = api(env, lambda status, headers: started.extend([status, headers]))
    raw = b"".join(chunks)
    return int(started[0].split()[0]), dict(started[1]), json.loads(raw)


def make(recorder: Recorder | None = None, **options: Any) -> PublishAPI:
    options.setdefault("key", KEY)
    options.setdefault("secrets", SECRET)
    return PublishAPI(recorder or Recorder(), PublishOptions(**options))


def test_targets_map_to_the_hub_targets() -> None:
    recorder = Recorder()
    api = make(recorder)
    for message in [
        {"event": "a", "data": {"x": [1, None]}, "channel": "room:1", "skip": "c1"},
        {"event": "b", "user": "42"},
        {"event": "c", "connection": "abc"},
        {"event": "d", "tag": "staff"},
        {"event": "e"},
    ]:
        assert call(api, json.dumps(message).encode(), **AUTH)[0] == 200
    assert recorder.calls == [
        ("a", {"x": [1, None]}, "room:1", "c1"),
        ("b", None, User("42"), None),
        ("c", None, ConnectionTarget("abc"), None),
        ("d", None, Tag("staff"), None),
        ("e", None, None, None),
    ]


def test_never_reads_more_than_max_body_plus_one() -> None:
    api = make(max_body=1000)
    endless = CountingStream()
    status, headers, body = call(api, endless, **AUTH)  # type: ignore[arg-type]
    assert status == 413 and body["error"]["code"] == "too_large"
    assert endless.given == 1001
    # With a Content-Length over the limit, nothing is read at all.
    endless = CountingStream()
    status, _, _ = call(api, endless, CONTENT_LENGTH="1001", **AUTH)  # type: ignore[arg-type]
    assert (status, endless.given) == (413, 0)


def test_credentials_are_checked_before_the_body_is_read() -> None:
    api = make(max_body=1000)
    endless = CountingStream()
    status, headers, body = call(api, endless, HTTP_AUTHORIZATION="Bearer wrong")  # type: ignore[arg-type]
    assert (status, endless.given) == (401, 0)
    stale = {
        "HTTP_X_MLSOCKETS_TIMESTAMP": "1000",
        "HTTP_X_MLSOCKETS_SIGNATURE": "sha256=" + "0" * 64,
    }
    status, _, body = call(api, endless, **stale)  # type: ignore[arg-type]
    assert (status, endless.given) == (401, 0)
    assert body["error"]["message"].startswith("stale timestamp")


def test_a_body_shorter_than_its_content_length_is_a_400() -> None:
    status, headers, body = call(make(), b'{"event": "e"}', CONTENT_LENGTH="100", **AUTH)
    assert status == 400 and body["error"]["code"] == "bad_request"
    assert headers["Connection"] == "close"
    status, _, body = call(make(), b"{}", CONTENT_LENGTH="-1", **AUTH)
    assert (status, body["error"]["message"]) == (400, "invalid Content-Length")


def test_an_unavailable_broadcaster_is_a_503() -> None:
    recorder = Recorder()
    recorder.fail[1] = BroadcastUnavailable("Redis is unreachable", delivered=3)
    status, headers, body = call(make(recorder), b'{"event": "e", "channel": "c"}', **AUTH)
    assert status == 503
    assert headers["Retry-After"] == "1"
    assert body == {
        "error": {
            "code": "unavailable",
            "message": "the broadcaster is unavailable (Redis is unreachable); it reached 3 "
            "connection(s) of this node and no other; try again later",
        },
        "delivered": 3,
    }


def test_a_batch_reports_which_messages_failed() -> None:
    recorder = Recorder(received=1)
    recorder.fail[2] = BroadcastUnavailable("Redis is unreachable", delivered=0)
    batch = {"messages": [{"event": "a"}, {"event": "b"}, {"event": "c"}]}
    status, _, body = call(
        make(recorder), json.dumps(batch).encode(), path="/api/publish/batch", **AUTH
    )
    assert status == 503
    assert body["ok"] is False and body["received"] == 2
    assert body["error"]["code"] == "unavailable"
    assert body["error"]["message"].startswith("1 of 3 messages could not be published")
    assert [r["ok"] for r in body["results"]] == [True, False, True]
    assert body["results"][1]["error"]["code"] == "unavailable"
    assert [c[0] for c in recorder.calls] == ["a", "b", "c"]  # the others were still sent


def test_a_bug_in_publish_is_a_500_without_details(caplog: pytest.LogCaptureFixture) -> None:
    recorder = Recorder()
    recorder.fail[1] = RuntimeError("secret internals")
    with caplog.at_level(logging.ERROR, "mlsockets.publish"):
        status, _, body = call(make(recorder), b'{"event": "e"}', **AUTH)
    assert (status, body) == (500, {"error": {"code": "internal", "message": "internal error"}})
    assert "secret internals" in caplog.text  # logged with its traceback, never sent


def test_logs_event_and_target_never_key_or_payload(caplog: pytest.LogCaptureFixture) -> None:
    body = json.dumps({"event": "order.shipped", "data": "PAYLOAD-123", "user": "42"}).encode()
    timestamp = "2000000000"
    api = PublishAPI(Recorder(), PublishOptions(key=KEY, secrets=SECRET), clock=lambda: 2e9)
    signed = {
        "HTTP_X_MLSOCKETS_TIMESTAMP": timestamp,
        "HTTP_X_MLSOCKETS_SIGNATURE": sign(SECRET, timestamp, body),
    }
    with caplog.at_level(logging.DEBUG, "mlsockets"):
        assert call(api, body, **AUTH)[0] == 200
        assert call(api, body, **signed)[0] == 200
        assert call(api, body, HTTP_AUTHORIZATION="Bearer wrong-key")[0] == 401
    published = [r for r in caplog.records if r.getMessage().startswith("published")]
    assert [r.levelno for r in published] == [logging.INFO, logging.INFO]
    assert (
        published[0].getMessage() == "published 'order.shipped' to user '42': 2 local receiver(s)"
    )
    for secret in ("PAYLOAD-123", KEY, SECRET, "wrong-key", signed["HTTP_X_MLSOCKETS_SIGNATURE"]):
        assert secret not in caplog.text


def test_sign_is_hmac_sha256_over_timestamp_dot_body() -> None:
    body = b'{"event":"e"}'
    expected = hmac.new(SECRET.encode(), b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign(SECRET, 1700000000, body) == f"sha256={expected}"
    assert sign(SECRET.encode(), "1700000000", body) == sign(SECRET, 1700000000, body)


def test_uppercase_hex_signatures_pass() -> None:
    body = b'{"event": "e"}'
    api = PublishAPI(Recorder(), PublishOptions(secrets=SECRET), clock=lambda: 1e9)
    signature = "sha256=" + sign(SECRET, 1000000000, body).removeprefix("sha256=").upper()
    headers = {"HTTP_X_MLSOCKETS_TIMESTAMP": "1000000000", "HTTP_X_MLSOCKETS_SIGNATURE": signature}
    assert call(api, body, **headers)[0] == 200


def test_other_paths_go_to_the_wrapped_app_or_404() -> None:
    assert call(make(), b"{}", path="/elsewhere", **AUTH)[0] == 404

    def fallback(environ: Any, start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        return [b'"app"']

    api = PublishAPI(Recorder(), PublishOptions(key=KEY), app=fallback)
    assert call(api, b"{}", path="/elsewhere")[2] == "app"
    assert call(api, b"{}", path="/api/publish/")[2] == "app"  # exact paths only


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "needs a key or at least one secret"),
        ({"key": "short"}, "publish key must be at least 16 bytes"),
        ({"secrets": ["s" * 16, "short"]}, "publish secret must be at least 16 bytes"),
        ({"key": KEY, "window": 0}, "window must be > 0"),
        ({"key": KEY, "window": float("nan")}, "window must be > 0"),
        ({"key": KEY, "max_body": 0}, "max_body must be >= 1"),
        ({"key": KEY, "max_batch": True}, "max_batch must be >= 1"),
    ],
)
def test_options_are_checked(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        PublishOptions(**options)


def test_secrets_never_appear_in_reprs() -> None:
    options = PublishOptions(key=KEY, secrets=SECRET)
    assert options.secrets == (SECRET,)
    api = PublishAPI(Recorder(), options)
    for text in (repr(options), repr(api)):
        assert KEY not in text and SECRET not in text
