"""A real session at INFO, access log on, with secrets everywhere a client or an operator puts
them: a token in the query string and in a header, a cookie, event payloads, a refused token,
a Redis URL with a password, publish API keys. None may appear in the captured logs."""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from cluster_support import free_port

from mlsockets.admission import Admission
from mlsockets.broadcast.redis import RedisBroadcaster
from mlsockets.client import Client
from mlsockets.events import EventRouter
from mlsockets.exceptions import InvalidHandshake
from mlsockets.hub import Hub
from mlsockets.publish_api import PublishOptions
from mlsockets.tokens import TokenAuthenticator
from mlsockets.transport.gevent import Server, ServerOptions
from mlsockets.wsgi import SocketApp

SIGNING_SECRET = "signing-secret-0123456789abcdef"
COOKIE = "cookie-secret-77f1e2d3"
PAYLOAD = "payload-secret-5a5a5a"
REDIS_PASSWORD = "redis-password-9c9c9c"
PUBLISH_KEY = "publish-key-0123456789abcdef"
WRONG_KEY = "wrong-publish-key-fedcba987654"


@pytest.fixture
def session_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.INFO)
    yield caplog


def test_no_secret_or_payload_in_the_logs(session_logs: pytest.LogCaptureFixture) -> None:
    auth = TokenAuthenticator(SIGNING_SECRET)
    token = auth.make_token("alice", ttl=600)
    router = EventRouter()
    router.add("echo", lambda conn, data: data)
    # A cluster broadcaster whose Redis is down: its errors name the URL (redacted).
    broadcaster = RedisBroadcaster.from_url(
        f"redis://:{REDIS_PASSWORD}@127.0.0.1:{free_port()}/0",
        presence=False,
        startup_timeout=0.2,
        connect_timeout=0.2,
    )
    hub = Hub(router, broadcaster=broadcaster)
    app = SocketApp(
        hub,
        admission=Admission(authenticate=auth),
        publish=PublishOptions(key=PUBLISH_KEY),
        metrics_path="/metrics",
    )
    server = Server(
        app,
        ["127.0.0.1:0"],
        options=ServerOptions(ping_interval=None, close_timeout=0.5),
        access_log=logging.getLogger("mlsockets.access"),
        metrics_bind="127.0.0.1:0",
    )
    server.start()
    try:
        host, port = server.addresses[0]
        url = f"ws://{host}:{port}/ws"
        cookie = {"Cookie": f"session={COOKIE}"}
        with Client.connect(f"{url}?token={token}", headers=cookie, timeout=10) as by_query:
            assert by_query.emit("echo", {"text": PAYLOAD}, ack=True) == {"text": PAYLOAD}
            by_query.emit("echo", PAYLOAD)  # no ack
            by_query.emit("nobody.handles", PAYLOAD)  # an error reply
        with Client.connect(url, token=token, headers=cookie, timeout=10) as by_header:
            by_header.emit("echo", PAYLOAD, ack=True)
        with pytest.raises(InvalidHandshake) as refused:
            Client.connect(f"{url}?token={token}x&access_token={token}", timeout=10)
        assert refused.value.status == 401
        # The right key passes (503: the broadcaster's Redis is down), the wrong one is 401.
        for key, status in ((PUBLISH_KEY, 503), (WRONG_KEY, 401)):
            request = urllib.request.Request(
                f"http://{host}:{port}/ws/api/publish",
                data=json.dumps({"event": "news", "data": PAYLOAD}).encode(),
                headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
            )
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    answered = response.status
            except urllib.error.HTTPError as error:
                answered = error.code
                error.close()
            assert answered == status
    finally:
        server.shutdown(grace=1)
        hub.close()

    records = session_logs.records
    text = "\n".join(f"{r.name} {r.levelname} {r.getMessage()}" for r in records)
    # The session was logged (so the check below looks at something) ...
    assert "mlsockets.access" in text and "mlsockets.hub" in text
    assert "redis://" in text  # the unreachable Redis, by its redacted URL
    # ... and nothing secret was.
    for secret in (token, SIGNING_SECRET, COOKIE, PAYLOAD, REDIS_PASSWORD, PUBLISH_KEY, WRONG_KEY):
        assert secret not in text, f"{secret!r} was logged:\n{text}"
