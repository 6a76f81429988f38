"""The nginx recipes of deploy/ in a real nginx, in front of real mlsockets servers.

Each site file is used as shipped, with only its addresses (and certificate paths) swapped for
the test's: ``nginx -t`` accepts it, and WebSocket handshakes and messages pass through it
(the Upgrade / Connection headers), the Host header keeps the same-origin check working, and
refusals arrive as HTTP statuses.

- deploy/nginx-compose.conf (docker-compose.yml's nginx): plain HTTP, two upstream nodes;
- deploy/nginx.conf: TLS with a self-signed certificate made here by ``openssl``.

Without nginx (or openssl) these tests skip, except in CI (``CI=true``), where that fails.
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask

from mlsockets import InvalidHandshake
from mlsockets.client import Client
from mlsockets.transport.gevent import Server, ServerOptions

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
TIMEOUT = 10.0


def _require(program: str) -> str:
    path = shutil.which(program) or shutil.which(program, path="/usr/sbin:/sbin")
    if path is None:
        message = f"{program} is not installed (apt-get install {program})"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{message}: the deploy recipes cannot go untested in CI", pytrace=False)
        pytest.skip(message)
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _swap(text: str, old: str, new: str) -> str:
    """Replace ``old``, which the recipe must contain exactly once (else the test is stale)."""
    assert text.count(old) == 1, f"the recipe no longer has exactly one {old!r}"
    return text.replace(old, new)


@pytest.fixture
def chat_app() -> Flask:
    from examples.chat import create_app

    return create_app()


@pytest.fixture
def servers(chat_app: Flask) -> Iterator[list[int]]:
    """Two mlsockets servers of the chat app (one hub: the same process): their ports."""
    started = []
    for _ in range(2):
        server = Server(chat_app, ["127.0.0.1:0"], options=ServerOptions(ping_interval=None))
        server.start()
        started.append(server)
    yield [server.addresses[0][1] for server in started]
    for server in started:
        server.shutdown(grace=1.0)


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[Callable[[str], None]]:
    """``nginx(site)`` checks a site configuration with ``nginx -t`` and runs it."""
    executable = _require("nginx")
    processes: list[subprocess.Popen[bytes]] = []

    def run(site: str) -> None:
        (tmp_path / "site.conf").write_text(site)
        conf = tmp_path / "nginx.conf"
        temp = {name: tmp_path / name for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
        conf.write_text(
            "worker_processes 1;\n"
            "daemon off;\n"
            f"pid {tmp_path}/nginx.pid;\n"
            f"error_log {tmp_path}/error.log info;\n"
            "events { worker_connections 64; }\n"
            "http {\n"
            "    access_log off;\n"
            f"    client_body_temp_path {temp['body']};\n"
            f"    proxy_temp_path {temp['proxy']};\n"
            f"    fastcgi_temp_path {temp['fastcgi']};\n"
            f"    uwsgi_temp_path {temp['uwsgi']};\n"
            f"    scgi_temp_path {temp['scgi']};\n"
            f"    include {tmp_path}/site.conf;\n"
            "}\n"
        )
        command = [executable, "-p", str(tmp_path), "-c", str(conf)]
        checked = subprocess.run([*command, "-t"], capture_output=True, text=True, timeout=20)
        assert checked.returncode == 0, checked.stderr
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        processes.append(process)

    yield run
    for process in processes:
        process.send_signal(signal.SIGQUIT)  # graceful: let the workers finish
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        assert process.stderr is not None
        process.stderr.close()


def _wait_listening(port: int) -> None:
    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _login(connection: http.client.HTTPConnection, user: str) -> str:
    form = urllib.parse.urlencode({"username": user, "password": "wonderland"})
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    connection.request("POST", "/login", form, headers)
    response = connection.getresponse()
    response.read()
    connection.close()
    cookie = response.getheader("Set-Cookie")
    assert response.status == 302 and cookie, response.status
    return cookie.split(";")[0]


def _next(client: Client, event: str) -> object:
    while True:
        received = client.receive(timeout=TIMEOUT)
        if received.event == event:
            return received.data


def test_the_compose_site_proxies_websockets_to_both_nodes(
    servers: list[int], nginx: Callable[[str], None]
) -> None:
    port = _free_port()
    site = (DEPLOY / "nginx-compose.conf").read_text()
    site = _swap(site, "server app1:8000;", f"server 127.0.0.1:{servers[0]};")
    site = _swap(site, "server app2:8000;", f"server 127.0.0.1:{servers[1]};")
    site = _swap(site, "listen 80;", f"listen 127.0.0.1:{port};")
    nginx(site)
    _wait_listening(port)

    url, origin = f"ws://127.0.0.1:{port}/ws", f"http://127.0.0.1:{port}"
    clients = []
    try:
        # The page's Origin carries the port: same origin only if nginx passed Host with it.
        for user in ("alice", "bob"):
            cookie = _login(http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT), user)
            headers = {"Cookie": cookie, "Origin": origin}
            clients.append(Client.connect(url, headers=headers, timeout=TIMEOUT))
        alice, bob = clients
        assert (alice.user_id, bob.user_id) == ("alice", "bob")
        alice.subscribe("room:lobby")
        bob.subscribe("room:lobby")
        ack = bob.emit("chat.send", {"room": "lobby", "text": "through nginx"}, ack=True)
        assert _next(alice, "chat.message") == ack

        with pytest.raises(InvalidHandshake) as anonymous:
            Client.connect(url, headers={"Origin": origin}, timeout=TIMEOUT)
        assert anonymous.value.status == 401
        with pytest.raises(InvalidHandshake) as elsewhere:
            headers = {"Cookie": cookie, "Origin": "https://evil.example"}
            Client.connect(url, headers=headers, timeout=TIMEOUT)
        assert elsewhere.value.status == 403
    finally:
        for client in clients:
            client.close()


def test_the_tls_site_proxies_websockets(
    servers: list[int], nginx: Callable[[str], None], tmp_path: Path
) -> None:
    openssl = _require("openssl")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=example.com", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    port = _free_port()
    site = (DEPLOY / "nginx.conf").read_text()
    site = _swap(site, "server 127.0.0.1:8000;", f"server 127.0.0.1:{servers[0]};")
    site = _swap(site, "listen 443 ssl;", f"listen 127.0.0.1:{port} ssl;")
    site = _swap(site, "/etc/ssl/example.com/fullchain.pem", str(cert))
    site = _swap(site, "/etc/ssl/example.com/privkey.pem", str(key))
    nginx(site)
    _wait_listening(port)

    context = ssl.create_default_context(cafile=str(cert))
    context.check_hostname = False  # the certificate names example.com; we dial 127.0.0.1
    web = http.client.HTTPSConnection("127.0.0.1", port, timeout=TIMEOUT, context=context)
    cookie = _login(web, "carol")
    url = f"wss://127.0.0.1:{port}/ws"
    with Client.connect(url, headers={"Cookie": cookie}, ssl_context=context) as carol:
        assert carol.user_id == "carol"
        assert carol.emit("room.info", {"room": "lobby"}, ack=True)["room"] == "lobby"
    with pytest.raises(InvalidHandshake) as anonymous:
        Client.connect(url, ssl_context=context, timeout=TIMEOUT)
    assert anonymous.value.status == 401
