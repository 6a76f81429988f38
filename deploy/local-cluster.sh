#!/usr/bin/env bash
# A cluster of the chat example on this machine: a private redis-server (never the one on
# 6379), node A = gunicorn with two mlsockets workers, node B = a standalone `mlsockets
# serve`. Both nodes share channels and presence through that Redis (docs/cluster.md).
#
#   deploy/local-cluster.sh          check it: a client on each node, one broadcast from
#                                    `mlsockets emit --redis` and one from a view (an event
#                                    handler on node A); every client must get each exactly
#                                    once (the sender of the second none). Exit 0, or 1.
#   deploy/local-cluster.sh --demo   run it until Ctrl-C (make demo-cluster): node A on
#                                    $PORT (8000), node B on $PORT + 1, URLs printed.
#
# Everything it started is stopped on exit, whatever the exit (trap). Environment: PYTHON
# (default .venv/bin/python), REDIS_SERVER (default redis-server on PATH), PORT (--demo).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
REDIS_SERVER=${REDIS_SERVER:-redis-server}
MODE=check
case "${1:-}" in
    "") ;;
    --demo) MODE=demo ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "usage: $0 [--demo]" >&2; exit 2 ;;
esac

command -v "$REDIS_SERVER" >/dev/null || { echo "local-cluster: no $REDIS_SERVER (apt-get install redis-server)" >&2; exit 1; }
[ -x "$PY" ] || { echo "local-cluster: no Python at $PY (run make .venv/.installed)" >&2; exit 1; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/mlsockets-cluster.XXXXXX")
PIDS=()

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    # SIGTERM first: gunicorn and mlsockets serve close their WebSockets with 1001.
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for _ in $(seq 50); do
        local alive=0
        for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [ "$alive" = 0 ] && break
        sleep 0.2
    done
    for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ "$status" != 0 ] && [ "$MODE" = check ]; then
        for log in "$WORK"/*.log; do echo "--- $log (last lines)" >&2; tail -n 20 "$log" >&2; done
    fi
    rm -rf "$WORK"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
    "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_for redis|http PORT NAME: until the service answers (30 s at most), or fail.
wait_for() {
    "$PY" - "$@" <<'PY'
import socket, sys, time, urllib.error, urllib.request
kind, port, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
deadline = time.monotonic() + 30
while True:
    try:
        if kind == "redis":
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(7).startswith(b"+PONG"):
                    break
        else:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/login", timeout=2).read()
            break
    except (OSError, urllib.error.URLError):
        pass
    if time.monotonic() > deadline:
        sys.exit(f"local-cluster: {name} did not answer on port {port} within 30 s")
    time.sleep(0.2)
PY
}

REDIS_PORT=$(free_port)
while [ "$REDIS_PORT" = 6379 ]; do REDIS_PORT=$(free_port); done
if [ "$MODE" = demo ]; then
    PORT_A=${PORT:-8000}
    PORT_B=$((PORT_A + 1))
else
    PORT_A=$(free_port)
    PORT_B=$(free_port)
fi
REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"

"$REDIS_SERVER" --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$WORK" >"$WORK/redis.log" 2>&1 &
PIDS+=($!)
wait_for redis "$REDIS_PORT" redis-server

# The chat app reads FLASK_* into its config (from_prefixed_env); MLSOCKETS_REDIS_URL is
# also what `mlsockets emit` and `status` use by default.
export FLASK_MLSOCKETS_REDIS_URL=$REDIS_URL MLSOCKETS_REDIS_URL=$REDIS_URL
cd "$ROOT"
"$PY" -m gunicorn -k mlsockets.gunicorn.GeventWebSocketWorker -w 2 -b "127.0.0.1:$PORT_A" \
    --graceful-timeout 5 "examples.chat:create_app()" >"$WORK/node-a.log" 2>&1 &
PIDS+=($!)
"$PY" -m mlsockets serve "examples.chat:create_app()" --bind "127.0.0.1:$PORT_B" \
    >"$WORK/node-b.log" 2>&1 &
PIDS+=($!)
wait_for http "$PORT_A" "node A (gunicorn)"
wait_for http "$PORT_B" "node B (mlsockets serve)"

if [ "$MODE" = demo ]; then
    cat <<EOF
The chat example as a cluster, sharing rooms and presence through Redis:
  node A  http://127.0.0.1:$PORT_A/  gunicorn, 2 mlsockets workers
  node B  http://127.0.0.1:$PORT_B/  mlsockets serve
  redis   $REDIS_URL  (its own redis-server; logs in $WORK)
Log in as alice on one node and as bob on the other (password: wonderland).
  MLSOCKETS_REDIS_URL=$REDIS_URL .venv/bin/mlsockets status
Nodes appear in the status once a page connected to them. Ctrl-C stops everything.
EOF
    # Ctrl-C reaches every process of the group; the trap then stops what is left.
    trap 'echo "local-cluster: stopped"; exit 0' INT
    while true; do
        for pid in "${PIDS[@]}"; do
            kill -0 "$pid" 2>/dev/null || { echo "local-cluster: a process exited; see $WORK" >&2; exit 1; }
        done
        sleep 1 &
        wait $! || true  # a wait, unlike sleep, is interrupted by the signal: the trap runs now
    done
fi

# The check: alice on node A, bob on node B, both in room:lobby.
"$PY" - "$PORT_A" "$PORT_B" "$REDIS_URL" <<'PY'
import http.client
import json
import subprocess
import sys
import urllib.parse
import uuid

from mlsockets.client import Client

port_a, port_b, redis_url = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]


def login(port, username):
    web = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    form = urllib.parse.urlencode({"username": username, "password": "wonderland"})
    web.request("POST", "/login", form, {"Content-Type": "application/x-www-form-urlencoded"})
    response = web.getresponse()
    response.read()
    cookie = response.getheader("Set-Cookie")
    if response.status != 302 or not cookie:
        sys.exit(f"local-cluster: login as {username} on port {port}: HTTP {response.status}")
    return cookie.split(";")[0]


def copies(client, text, first=10.0, settle=1.0):
    """How many chat.message events carrying ``text`` arrive (waiting up to ``first``
    seconds for the first, then ``settle`` seconds more for duplicates)."""
    count, timeout = 0, first
    while True:
        try:
            event = client.receive(timeout=timeout)
        except TimeoutError:
            return count
        if event.event == "chat.message" and (event.data or {}).get("text") == text:
            count += 1
            timeout = settle


clients = {}
try:
    for name, port, user in (("A", port_a, "alice"), ("B", port_b, "bob")):
        client = Client.connect(
            f"ws://127.0.0.1:{port}/ws", headers={"Cookie": login(port, user)}, timeout=10
        )
        client.subscribe("room:lobby")
        clients[name] = client
        print(f"local-cluster: {user} connected to node {name} (port {port})")

    failures = []
    text = f"from mlsockets emit {uuid.uuid4().hex[:8]}"
    data = {"room": "lobby", "text": text, "user_id": "ops", "name": "ops", "at": 0}
    subprocess.run(
        [sys.executable, "-m", "mlsockets", "emit", "chat.message", json.dumps(data),
         "--to", "room:lobby", "--redis", redis_url],
        check=True, timeout=30,
    )
    for name, client in clients.items():
        got = copies(client, text)
        print(f"local-cluster: node {name} client got the emit {got} time(s)")
        if got != 1:
            failures.append(f"node {name}: the emit arrived {got} times")

    text = f"from a handler on node A {uuid.uuid4().hex[:8]}"
    clients["A"].emit("chat.send", {"room": "lobby", "text": text}, ack=True)
    got_b, got_a = copies(clients["B"], text), copies(clients["A"], text, first=1.0)
    print(f"local-cluster: node B client got the view's broadcast {got_b} time(s), sender {got_a}")
    if (got_b, got_a) != (1, 0):
        failures.append(f"the view's broadcast: node B got it {got_b} times, the sender {got_a}")
finally:
    for client in clients.values():
        client.close()

if failures:
    sys.exit("local-cluster: FAILED: " + "; ".join(failures))
print("local-cluster: OK, every client got each broadcast exactly once")
PY
