"""PublishClient against real servers: over TCP, TLS and a Unix socket, with a key or a
secret; its errors (PublishError with the server's reply, OSError, ValueError)."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import gevent
import pytest
from publish_apps import KEY, SECRET, create_flask_app, create_socket_app
from publish_support import Served

from mlsockets.client import Client, PublishClient, PublishError
from mlsockets.transport.gevent import Server


def test_publish_with_a_key_or_a_secret_reaches_subscribers(
    serve: Callable[..., Served], connect: Callable[..., Client]
) -> None:
    served = serve(create_flask_app())
    client = connect(served.ws)
    client.subscribe("room:1")
    by_key = PublishClient(served.url(), key=KEY)
    by_secret = PublishClient(served.url(), secret=SECRET)
    assert by_key.publish("news", {"n": 1}, to="room:1") == {"ok": True, "received": 1}
    assert by_secret.publish("news", {"n": 2}, to="room:1") == {"ok": True, "received": 1}
    assert by_secret.publish("everyone") == {"ok": True, "received": 1}
    got = [client.receive(timeout=10) for _ in range(3)]
    assert [(e.event, e.data, e.channel) for e in got] == [
        ("news", {"n": 1}, "room:1"),
        ("news", {"n": 2}, "room:1"),
        ("everyone", None, None),
    ]


def test_targets_skip_and_batch(
    serve: Callable[..., Served], connect: Callable[..., Client]
) -> None:
    served = serve(create_socket_app())
    alice = connect(served.ws + "?user=alice&tag=staff")
    bob = connect(served.ws + "?user=bob")
    assert alice.connection_id is not None and bob.connection_id is not None
    publisher = PublishClient(served.url(), key=KEY, secret=SECRET)
    assert publisher.publish("to-user", user="bob")["received"] == 1
    assert publisher.publish("to-tag", tag="staff")["received"] == 1
    assert publisher.publish("to-conn", 5, connection=alice.connection_id)["received"] == 1
    assert publisher.publish("not-alice", skip=alice.connection_id)["received"] == 1
    reply = publisher.publish_batch(
        [{"event": "b1", "user": "alice"}, {"event": "b2", "data": [2]}]
    )
    assert reply == {
        "ok": True,
        "received": 3,
        "results": [{"ok": True, "received": 1}, {"ok": True, "received": 2}],
    }
    assert [alice.receive(timeout=10).event for _ in range(4)] == ["to-tag", "to-conn", "b1", "b2"]
    assert [bob.receive(timeout=10).event for _ in range(3)] == ["to-user", "not-alice", "b2"]


def test_over_a_unix_socket(serve: Callable[..., Served], connect: Callable[..., Client]) -> None:
    served = serve(create_flask_app(), unix=True)
    assert served.unix_path is not None
    client = connect(served.ws)
    url = f"http+unix://{quote(served.unix_path, safe='')}/ws/api/publish"
    publisher = PublishClient(url, secret=SECRET)
    assert publisher.publish("hello", "unix") == {"ok": True, "received": 1}
    assert publisher.publish_batch([{"event": "again"}])["received"] == 1
    assert [client.receive(timeout=10).data for _ in range(2)] == ["unix", None]


def test_over_tls(tmp_path: Path, connect: Callable[..., Client]) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    server = Server(create_flask_app(), ["127.0.0.1:0"], certfile=str(cert), keyfile=str(key))
    server.start()
    try:
        port = server.addresses[0][1]
        context = ssl.create_default_context(cafile=str(cert))
        url = f"https://localhost:{port}/ws/api/publish"
        assert PublishClient(url, key=KEY, ssl_context=context).publish("e") == {
            "ok": True,
            "received": 0,
        }
        # The default context does not trust a self-signed certificate: an OSError.
        with pytest.raises(ssl.SSLError):
            PublishClient(url, key=KEY).publish("e")
    finally:
        server.shutdown(grace=1.0)


def test_http_errors_raise_publish_error_with_the_reply(serve: Callable[..., Served]) -> None:
    served = serve(create_flask_app())
    with pytest.raises(PublishError) as caught:
        PublishClient(served.url(), key="not-the-key-but-long-enough").publish("e")
    error = caught.value
    assert (error.status, error.code, error.message) == (401, "unauthorized", "invalid key")
    assert error.body == {"error": {"code": "unauthorized", "message": "invalid key"}}
    assert str(error) == "HTTP 401: unauthorized: invalid key"

    publisher = PublishClient(served.url(), key=KEY)
    with pytest.raises(PublishError) as caught:
        publisher.publish("e", to="no spaces")
    assert caught.value.status == 400 and caught.value.code == "invalid"
    assert str(caught.value) == (
        "HTTP 400: invalid: invalid publish request "
        '{"channel": ["channel name contains an invalid character: \' \'"]}'
    )
    with pytest.raises(PublishError) as caught:
        publisher.publish("e", "x" * 5000)
    assert caught.value.status == 413
    with pytest.raises(PublishError) as caught:
        publisher.publish_batch([{"event": "ok"}, {"event": "mls.bad"}])
    assert caught.value.body["error"]["fields"] == {
        "messages": {"1": {"event": ["events starting with 'mls.' are reserved"]}}
    }

    # A reply that is not the API's JSON (a Flask 404 page): its text.
    with pytest.raises(PublishError) as caught:
        PublishClient(served.url("/nowhere"), key=KEY).publish("e")
    assert caught.value.status in (400, 404)  # the app's CSRF-style hook may answer first
    assert caught.value.code is None and isinstance(caught.value.body, str)


def test_an_unreachable_server_raises_os_error(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: refused
        with pytest.raises(OSError):
            PublishClient(f"http://127.0.0.1:{port}/ws/api/publish", key=KEY).publish("e")
    missing = quote(str(tmp_path / "none.sock"), safe="")
    with pytest.raises(OSError):
        PublishClient(f"http+unix://{missing}/ws/api/publish", key=KEY).publish("e")


def test_a_server_that_is_not_http_raises_os_error() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        publisher = PublishClient(f"http://127.0.0.1:{port}/p", key=KEY, timeout=5)

        def garbage() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(b"SSH-2.0-OpenSSH\r\n\r\n")

        greenlet = gevent.spawn(garbage)
        with pytest.raises(OSError, match="bad HTTP reply"):
            publisher.publish("e")
        greenlet.join(5)


@pytest.mark.parametrize(
    ("url", "options", "message"),
    [
        ("ws://h/ws/api/publish", {"key": KEY}, "not an http://"),
        ("http:///ws/api/publish", {"key": KEY}, "no host"),
        ("http+unix:///ws/api/publish", {"key": KEY}, "no socket path"),
        ("http://h/p?x=1", {"key": KEY}, "no query"),
        ("http://h/p", {}, "key or secret"),
    ],
)
def test_bad_arguments_raise_value_error(url: str, options: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PublishClient(url, **options)


def test_more_than_one_target_is_a_value_error() -> None:
    publisher = PublishClient("http://127.0.0.1:1/p", key=KEY)
    with pytest.raises(ValueError, match="at most one target, not to, user"):
        publisher.publish("e", to="room", user="u")
    assert KEY not in repr(publisher)
