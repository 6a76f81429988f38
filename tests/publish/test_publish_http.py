"""The publish API over real HTTP: a Flask app and a SocketApp served by a real mlsockets
Server on port 0 (and on a Unix socket), WebSocket clients subscribed with the Python client.

"Exactly once": after the event under test, a marker is published to the same target; the
server delivers in order, so a client whose next event is the marker got no duplicate.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from publish_apps import KEY, MAX_BODY, SECRET, WINDOW, create_flask_app, create_socket_app
from publish_support import Reply, Served

from mlsockets.client import Client
from mlsockets.publish_api import PublishAPI, PublishOptions, sign

JSON = {"Content-Type": "application/json"}
BEARER = {**JSON, "Authorization": f"Bearer {KEY}"}
PUBLISH = "/ws/api/publish"
BATCH = "/ws/api/publish/batch"

App = Callable[[], Any]
APPS = pytest.mark.parametrize(
    "make_app", [create_flask_app, create_socket_app], ids=["flask", "socketapp"]
)


def signed(body: bytes, *, secret: str = SECRET, at: float | None = None) -> dict[str, str]:
    timestamp = str(int(time.time() if at is None else at))
    return {
        **JSON,
        "X-MLSockets-Timestamp": timestamp,
        "X-MLSockets-Signature": sign(secret, timestamp, body),
    }


def dumps(obj: object) -> bytes:
    return json.dumps(obj).encode()


def error(reply: Reply, status: int, code: str) -> dict[str, Any]:
    assert reply.status == status, reply
    assert reply.headers["content-type"] == "application/json"
    assert set(reply.body) >= {"error"}, reply.body
    err: dict[str, Any] = reply.body["error"]
    assert err["code"] == code, err
    assert isinstance(err["message"], str) and err["message"]
    return err


def exactly_once(client: Client, event: str, data: Any, channel: str | None) -> None:
    got = client.receive(timeout=10)
    assert (got.event, got.data, got.channel) == (event, data, channel)
    marker = client.receive(timeout=10)
    assert marker.event == "marker", f"a duplicate or a stray event: {marker}"


def subscribed(
    connect: Callable[..., Client], served: Served, channel: str, query: str = ""
) -> Client:
    client = connect(served.ws + query)
    client.subscribe(channel)
    return client


# -- delivery ---------------------------------------------------------------------------


@APPS
def test_a_publish_reaches_every_subscriber_exactly_once(
    make_app: App, serve: Callable[..., Served], connect: Callable[..., Client]
) -> None:
    served = serve(make_app())
    subscribers = [subscribed(connect, served, "room:1") for _ in range(2)]
    outsider = subscribed(connect, served, "room:2")

    reply = served.request(
        "POST", PUBLISH, dumps({"event": "news", "data": {"n": 1}, "channel": "room:1"}), BEARER
    )
    assert (reply.status, reply.body) == (200, {"ok": True, "received": 2})
    body = dumps({"event": "marker", "channel": "room:1"})
    assert served.request("POST", PUBLISH, body, signed(body)).status == 200
    for client in subscribers:
        exactly_once(client, "news", {"n": 1}, "room:1")

    # Nothing reached room:2: its next event is its own marker.
    assert (
        served.request(
            "POST", PUBLISH, dumps({"event": "marker", "channel": "room:2"}), BEARER
        ).status
        == 200
    )
    assert outsider.receive(timeout=10).event == "marker"


@APPS
def test_targets_a_connection_everyone_and_skip(
    make_app: App, serve: Callable[..., Served], connect: Callable[..., Client]
) -> None:
    served = serve(make_app())
    first, second = connect(served.ws), connect(served.ws)
    assert first.connection_id and second.connection_id

    reply = served.request(
        "POST", PUBLISH, dumps({"event": "direct", "connection": second.connection_id}), BEARER
    )
    assert reply.body == {"ok": True, "received": 1}
    reply = served.request(
        "POST", PUBLISH, dumps({"event": "all", "data": [1], "skip": first.connection_id}), BEARER
    )
    assert reply.body == {"ok": True, "received": 1}
    assert served.request("POST", PUBLISH, dumps({"event": "marker"}), BEARER).body["received"] == 2

    got = [second.receive(timeout=10) for _ in range(3)]
    assert [(e.event, e.data, e.channel) for e in got] == [
        ("direct", None, None),
        ("all", [1], None),
        ("marker", None, None),
    ]
    assert first.receive(timeout=10).event == "marker"  # skipped "all", never got "direct"


def test_targets_a_user_and_a_tag(
    serve: Callable[..., Served], connect: Callable[..., Client]
) -> None:
    served = serve(create_socket_app())
    alice = connect(served.ws + "?user=alice&tag=staff")
    bob = connect(served.ws + "?user=bob")
    assert (
        served.request("POST", PUBLISH, dumps({"event": "dm", "user": "bob"}), BEARER).body[
            "received"
        ]
        == 1
    )
    assert (
        served.request("POST", PUBLISH, dumps({"event": "memo", "tag": "staff"}), BEARER).body[
            "received"
        ]
        == 1
    )
    assert served.request("POST", PUBLISH, dumps({"event": "marker"}), BEARER).status == 200
    assert [bob.receive(timeout=10).event for _ in range(2)] == ["dm", "marker"]
    assert [alice.receive(timeout=10).event for _ in range(2)] == ["memo", "marker"]


@APPS
def test_batch_publishes_every_message_with_per_message_results(
    make_app: App, serve: Callable[..., Served], connect: Callable[..., Client]
) -> None:
    served = serve(make_app())
    client = subscribed(connect, served, "room:1")
    messages = [
        {"event": "one", "data": 1, "channel": "room:1"},
        {"event": "nobody", "channel": "room:empty"},
        {"event": "two", "data": 2},
        {"event": "marker", "channel": "room:1"},
    ]
    body = dumps({"messages": messages})
    reply = served.request("POST", BATCH, body, signed(body))
    assert reply.status == 200, reply
    assert reply.body == {
        "ok": True,
        "received": 3,
        "results": [
            {"ok": True, "received": 1},
            {"ok": True, "received": 0},
            {"ok": True, "received": 1},
            {"ok": True, "received": 1},
        ],
    }
    got = [client.receive(timeout=10) for _ in range(3)]
    assert [(e.event, e.data, e.channel) for e in got] == [
        ("one", 1, "room:1"),
        ("two", 2, None),
        ("marker", None, "room:1"),
    ]


@APPS
def test_batch_validation_is_all_or_nothing(
    make_app: App, serve: Callable[..., Served], connect: Callable[..., Client]
) -> None:
    served = serve(make_app())
    client = subscribed(connect, served, "room:1")
    messages = [
        {"event": "fine", "channel": "room:1"},
        {"event": "mls.welcome", "channel": "room 1"},
        {"data": 3},
    ]
    err = error(
        served.request("POST", BATCH, dumps({"messages": messages}), BEARER), 400, "invalid"
    )
    assert err["fields"] == {
        "messages": {
            "1": {
                "event": ["events starting with 'mls.' are reserved"],
                "channel": ["channel name contains an invalid character: ' '"],
            },
            "2": {"event": ["Missing data for required field."]},
        }
    }
    too_many = {"messages": [{"event": "x"}] * 101}
    err = error(served.request("POST", BATCH, dumps(too_many), BEARER), 400, "invalid")
    assert err["fields"] == {"messages": ["at most 100 messages per batch"]}
    err = error(served.request("POST", BATCH, dumps({"messages": []}), BEARER), 400, "invalid")
    assert "messages" in err["fields"]
    # The valid message of the refused batch was not published.
    assert (
        served.request(
            "POST", PUBLISH, dumps({"event": "marker", "channel": "room:1"}), BEARER
        ).status
        == 200
    )
    assert client.receive(timeout=10).event == "marker"


def test_over_a_unix_socket(serve: Callable[..., Served], connect: Callable[..., Client]) -> None:
    served = serve(create_flask_app(), unix=True)
    client = subscribed(connect, served, "room:1")
    body = dumps({"event": "news", "data": "via unix", "channel": "room:1"})
    reply = served.request("POST", PUBLISH, body, signed(body), unix=True)
    assert (reply.status, reply.body) == (200, {"ok": True, "received": 1})
    error(served.request("POST", PUBLISH, body, JSON, unix=True), 401, "unauthorized")
    assert (
        served.request("POST", PUBLISH, dumps({"event": "marker"}), BEARER, unix=True).status == 200
    )
    exactly_once(client, "news", "via unix", "room:1")


def test_flask_hooks_do_not_run_for_the_api(serve: Callable[..., Served]) -> None:
    """The app's CSRF-style hook refuses POSTs without a token; the API is answered before
    Flask dispatches, so the hook never sees it; the app's own routes still work."""
    served = serve(create_flask_app())
    assert served.request("POST", "/form", b"x").status == 400  # the hook is live
    assert served.request("POST", "/form", b"x", {"X-CSRF-Token": "t"}).body == "posted"
    assert served.request("GET", "/ping").body == "pong"
    assert served.request("POST", PUBLISH, dumps({"event": "e"}), BEARER).status == 200


def test_the_flask_api_is_off_without_credentials(serve: Callable[..., Served]) -> None:
    served = serve(create_flask_app(MLSOCKETS_PUBLISH_KEY=None, MLSOCKETS_PUBLISH_SECRET=None))
    reply = served.request("POST", PUBLISH, dumps({"event": "e"}), {**BEARER, "X-CSRF-Token": "t"})
    assert reply.status == 404


def test_the_flask_api_follows_mlsockets_path(serve: Callable[..., Served]) -> None:
    served = serve(create_flask_app(MLSOCKETS_PATH="/sockets/"))
    assert (
        served.request("POST", "/sockets/api/publish", dumps({"event": "e"}), BEARER).status == 200
    )
    assert served.request("POST", PUBLISH, dumps({"event": "e"}), BEARER).status == 400  # CSRF hook


# -- authentication -----------------------------------------------------------------------


@APPS
def test_401_for_missing_bad_or_malformed_credentials(
    make_app: App, serve: Callable[..., Served]
) -> None:
    served = serve(make_app())
    body = dumps({"event": "e"})
    cases = [
        (JSON, "missing credentials"),
        ({**JSON, "Authorization": f"Bearer {KEY}x"}, "invalid key"),
        ({**JSON, "Authorization": f"Basic {KEY}"}, "malformed Authorization header"),
        (
            {**signed(body), "X-MLSockets-Signature": sign(SECRET + "x", int(time.time()), body)},
            "invalid signature",
        ),
        ({**signed(body), "X-MLSockets-Signature": "sha1=abc"}, "malformed X-MLSockets-Signature"),
        ({**signed(body), "X-MLSockets-Timestamp": "yesterday"}, "malformed X-MLSockets-Timestamp"),
        ({**JSON, "X-MLSockets-Signature": sign(SECRET, 1, body)}, "needs both"),
        # A signature over another body: the body is part of what is signed.
        ({**signed(dumps({"event": "other"}))}, "invalid signature"),
    ]
    for headers, message in cases:
        reply = served.request("POST", PUBLISH, body, headers)
        err = error(reply, 401, "unauthorized")
        assert message in err["message"], (headers, err)
        challenges = [v for k, v in reply.all_headers if k.lower() == "www-authenticate"]
        assert challenges == [
            'Bearer realm="mlsockets publish"',
            'MLSockets-HMAC-SHA256 realm="mlsockets publish"',
        ]


@APPS
def test_stale_and_future_timestamps_are_refused(
    make_app: App, serve: Callable[..., Served]
) -> None:
    served = serve(make_app())
    body = dumps({"event": "e"})
    now = time.time()
    for at, word in [(now - WINDOW - 30, "old"), (now + WINDOW + 30, "in the future")]:
        err = error(served.request("POST", PUBLISH, body, signed(body, at=at)), 401, "unauthorized")
        assert err["message"].startswith("stale timestamp") and word in err["message"], err
    # Inside the window, both ways, a signed request passes.
    for at in (now - WINDOW / 2, now + WINDOW / 2):
        assert served.request("POST", PUBLISH, body, signed(body, at=at)).status == 200


def test_a_replayed_signature_is_refused_outside_the_window(
    serve: Callable[..., Served], connect: Callable[..., Client]
) -> None:
    """The same bytes, sent again once the server's clock has moved past the window."""
    now = [float(int(time.time()))]
    socket_app = create_socket_app()
    api = PublishAPI(
        socket_app.hub.emit,
        PublishOptions(secrets=SECRET, window=30),
        path=PUBLISH,
        app=socket_app,
        clock=lambda: now[0],
    )
    served = serve(api)
    client = connect(served.ws)
    body = dumps({"event": "once"})
    headers = signed(body, at=now[0])
    assert served.request("POST", PUBLISH, body, headers).body == {"ok": True, "received": 1}
    now[0] += 31
    err = error(served.request("POST", PUBLISH, body, headers), 401, "unauthorized")
    assert "31 seconds old" in err["message"] and "30-second window" in err["message"]
    assert client.receive(timeout=10).event == "once"


def test_rotation_accepts_every_configured_secret(serve: Callable[..., Served]) -> None:
    new = "the-new-secret-after-rotation-00"
    served = serve(create_socket_app(key=None, secrets=(new, SECRET)))
    body = dumps({"event": "e"})
    for secret in (new, SECRET):
        assert served.request("POST", PUBLISH, body, signed(body, secret=secret)).status == 200
    # No key configured: a bearer key is not a credential here.
    err = error(served.request("POST", PUBLISH, body, BEARER), 401, "unauthorized")
    assert err["message"] == (
        "missing credentials: send X-MLSockets-Timestamp and X-MLSockets-Signature"
    )


# -- malformed requests ---------------------------------------------------------------------


@APPS
def test_400_with_field_errors_for_a_bad_body(make_app: App, serve: Callable[..., Served]) -> None:
    served = serve(make_app())
    cases: list[tuple[object, dict[str, Any]]] = [
        ({"data": 1}, {"event": ["Missing data for required field."]}),
        ({"event": ""}, {"event": ["Length must be between 1 and 128."]}),
        ({"event": 7}, {"event": ["Not a valid string."]}),
        (
            {"event": "e", "channel": "private-"},
            {"channel": ["channel name 'private-' is a bare prefix: it needs a name after it"]},
        ),
        (
            {"event": "e", "channel": "x" * 201},
            {"channel": ["channel name is longer than 200 characters"]},
        ),
        (
            {"event": "e", "channel": "a", "user": "b"},
            {
                "channel": ["give at most one of channel, user, connection, tag"],
                "user": ["give at most one of channel, user, connection, tag"],
            },
        ),
        ({"event": "e", "room": "a"}, {"room": ["Unknown field."]}),
        ({"event": "e", "skip": ""}, {"skip": ["Length must be between 1 and 64."]}),
    ]
    for payload, fields in cases:
        err = error(served.request("POST", PUBLISH, dumps(payload), BEARER), 400, "invalid")
        assert err["fields"] == fields, payload
    err = error(served.request("POST", PUBLISH, b"[1, 2]", BEARER), 400, "invalid")
    assert err["message"] == "the body must be a JSON object"
    for raw, message in [
        (b"{not json", "the body is not valid JSON"),
        (b'{"event": NaN}', "the body is not valid JSON"),
        (b"", "the body is empty"),
        (b"\xff\xfe", "the body is not UTF-8"),
    ]:
        err = error(served.request("POST", PUBLISH, raw, BEARER), 400, "bad_request")
        assert err["message"].startswith(message), err


@APPS
def test_405_415_and_404(make_app: App, serve: Callable[..., Served]) -> None:
    served = serve(make_app())
    for method in ("GET", "PUT", "DELETE", "OPTIONS"):
        reply = served.request(method, PUBLISH, None, BEARER)
        error(reply, 405, "method_not_allowed")
        assert reply.headers["allow"] == "POST"
    body = dumps({"event": "e"})
    for content_type in (
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/json; charset=latin-1",
    ):
        reply = served.request("POST", PUBLISH, body, {**BEARER, "Content-Type": content_type})
        error(reply, 415, "unsupported_media_type")
    no_type = served.request("POST", PUBLISH, body, {"Authorization": f"Bearer {KEY}"})
    error(no_type, 415, "unsupported_media_type")
    ok = {**BEARER, "Content-Type": "Application/JSON; charset=UTF-8"}
    assert served.request("POST", PUBLISH, body, ok).status == 200


@APPS
def test_413_for_a_body_over_the_limit(make_app: App, serve: Callable[..., Served]) -> None:
    served = serve(make_app())
    head = b'{"event": "e", "data": "'
    exact = head + b"x" * (MAX_BODY - len(head) - 2) + b'"}'
    assert len(exact) == MAX_BODY
    assert served.request("POST", PUBLISH, exact, BEARER).status == 200
    over = exact[:-2] + b'x"}'
    assert len(over) == MAX_BODY + 1
    reply = served.request("POST", PUBLISH, over, BEARER)
    err = error(reply, 413, "too_large")
    assert err["message"] == f"the body is larger than {MAX_BODY} bytes"
    assert reply.headers["connection"] == "close"

    # Chunked, with no Content-Length: the read stops past the limit.
    chunks = [over[i : i + 1000] for i in range(0, len(over), 1000)]
    reply = served.request("POST", PUBLISH, iter(chunks), BEARER, chunked=True)
    error(reply, 413, "too_large")
    chunks = [exact[i : i + 1000] for i in range(0, len(exact), 1000)]
    assert served.request("POST", PUBLISH, iter(chunks), BEARER, chunked=True).status == 200
    # Signed and chunked: the signature covers the body as reassembled.
    assert served.request("POST", PUBLISH, iter(chunks), signed(exact), chunked=True).status == 200
