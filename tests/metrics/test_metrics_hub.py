"""Application-layer metrics through a real hub: error replies by code, the event handler
latency histogram, handshake refusals by the WSGI adapter, and ``SocketApp(metrics_path=...)``."""

from __future__ import annotations

import logging
import urllib.request
from collections.abc import Callable

import marshmallow
import pytest
from metrics_support import Scrape, Served

from mlsockets.admission import Admission
from mlsockets.auth import HandshakeRequest, Principal
from mlsockets.client import ErrorReply, connect
from mlsockets.events import EventRouter
from mlsockets.exceptions import InvalidHandshake, Unauthorized
from mlsockets.hub import Hub, HubOptions
from mlsockets.transport.gevent import Server
from mlsockets.wsgi import SocketApp


class Point(marshmallow.Schema):
    x = marshmallow.fields.Integer(required=True)


def router() -> EventRouter:
    events = EventRouter()
    events.add("work", lambda conn, data: data)
    events.add("point", lambda conn, data: data["x"], schema=Point)
    return events


def test_error_replies_and_handler_latency(serve: Callable[..., Served]) -> None:
    served = serve(router())
    before = served.scrape()
    client = served.client()
    for i in range(3):
        assert client.emit("work", i, ack=True) == i
    with pytest.raises(ErrorReply) as invalid:
        client.emit("point", {"x": "not a number"}, ack=True)
    assert invalid.value.code == "invalid"
    with pytest.raises(ErrorReply) as unknown:
        client.emit("nobody.handles.this", None, ack=True)
    assert unknown.value.code == "unknown_event"
    with pytest.raises(ErrorReply) as channel:
        client.subscribe("bad channel name")
    assert channel.value.code == "invalid_channel"
    # A message that is no envelope at all: bad_envelope, answered as mls.error.
    raw = connect(served.url, subprotocols=["mlsockets.json.v1"], compression=None)
    raw.recv(timeout=10)  # mls.welcome
    raw.send("this is not JSON")
    assert "bad_envelope" in str(raw.recv(timeout=10))
    raw.close()

    grew = served.scrape() - before
    assert grew("mlsockets_error_replies_total", code="invalid") == 1
    assert grew("mlsockets_error_replies_total", code="unknown_event") == 1
    assert grew("mlsockets_error_replies_total", code="invalid_channel") == 1
    assert grew("mlsockets_error_replies_total", code="bad_envelope") == 1
    assert grew("mlsockets_event_handler_seconds_count", event="work") == 3
    assert grew("mlsockets_event_handler_seconds_count", event="point") == 1
    # Unknown events run no handler: no histogram series (clients cannot add labels).
    assert 'event="nobody.handles.this"' not in served.scrape().text
    assert grew("mlsockets_event_handler_seconds_bucket", event="work", le="+Inf") == 3
    assert grew("mlsockets_handshakes_total", status="101") == 2
    # 3 acked "work" + point + unknown + subscribe from the client, 1 from the raw one
    assert grew("mlsockets_messages_received_total") == 7


def test_rate_limited_replies_are_counted(serve: Callable[..., Served]) -> None:
    served = serve(router(), hub_options=HubOptions(rate=0.001, burst=1, rate_strikes=100))
    before = served.scrape()
    client = served.client()
    client.emit("work", 1, ack=True)  # the one token of the bucket
    for _ in range(2):
        with pytest.raises(ErrorReply) as limited:
            client.emit("work", 1, ack=True)
        assert limited.value.code == "rate_limited"
    grew = served.scrape() - before
    assert grew("mlsockets_error_replies_total", code="rate_limited") == 2


def _deny(request: HandshakeRequest) -> Principal:
    raise Unauthorized("no token")


def test_socketapp_serves_metrics_and_counts_refusals() -> None:
    app = SocketApp(Hub(router()), admission=Admission(authenticate=_deny), metrics_path="/metrics")
    server = Server(app, ["127.0.0.1:0"])
    server.start()
    try:
        host, port = server.addresses[0]

        def scrape() -> Scrape:
            url = f"http://{host}:{port}/metrics"
            with urllib.request.urlopen(url, timeout=10) as response:
                return Scrape(response.read().decode())

        before = scrape()
        with pytest.raises(InvalidHandshake) as refused:
            connect(f"ws://{host}:{port}/ws", subprotocols=["mlsockets.json.v1"])
        assert refused.value.status == 401
        with pytest.raises(InvalidHandshake) as no_subprotocol:
            connect(f"ws://{host}:{port}/ws")
        assert no_subprotocol.value.status == 400
        grew = scrape() - before
        assert grew("mlsockets_handshakes_total", status="401") == 1
        assert grew("mlsockets_handshakes_total", status="400") == 1
        assert grew("mlsockets_handshakes_total", status="101") == 0
    finally:
        server.shutdown(grace=1)


def test_hub_logs_one_line_per_connection(
    serve: Callable[..., Served], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mlsockets")
    served = serve(router())
    client = served.client()
    connection_id = client.connection_id
    client.emit("work", "a payload", ack=True)
    client.close()
    served.clients.remove(client)
    served.server.shutdown(grace=1)
    hub_lines = [r.getMessage() for r in caplog.records if r.name == "mlsockets.hub"]
    assert hub_lines == [
        f"connection {connection_id} open (user None)",
        hub_lines[1],
    ]
    assert hub_lines[1].startswith(f"connection {connection_id} closed (user None, code 1000, ")
    assert not any("a payload" in r.getMessage() for r in caplog.records)
