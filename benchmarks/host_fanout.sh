#!/usr/bin/env bash
# host_fanout.sh: fan-out across two gunicorn workers through Unix sockets (one host, no
# Redis), beside the same through Redis and a single worker, in one run, with the shared load
# generator (../shared/tools/bench: loadgen fanout).
#
# Usage: bash benchmarks/host_fanout.sh [-r REPEATS] [-n SUBS] [-m BCASTS] [-l LATSUBS]
#                                      [-V "VARIANT ..."] [-p PORT] [--redis-port P]
#                                      [--no-pin] [--no-report]
#
# Every variant is `gunicorn -k mlsockets.gunicorn.GeventWebSocketWorker` serving the same
# small app (written to the results directory at run time: the harness's /fanout contract on
# the hub, the envelope's data sent as is); the publisher's worker emits with hub.emit, so its
# own members get each broadcast at once and the other worker's through the broadcaster.
#   single   -w 1, LocalBroadcaster, SUBS subscribers
#   unix2    -w 2, UnixBroadcaster (a private socket directory): the kernel spreads the SUBS
#            connections over the two workers (each prints its peak, shown in the summary)
#   redis2   -w 2, RedisBroadcaster on a private redis-server (--redis-port, default 16410,
#            never 6379); skipped with a note when redis-server is missing
#   lat-VARIANT  the same with LATSUBS subscribers (default 100) and 200 broadcasts: the
#            time-to-last difference to lat-single is the latency the hop adds
# Default variants: "single unix2 redis2 lat-single lat-unix2 lat-redis2".
# Servers (and Redis) pinned to core 0, loadgen to core 1 (--no-pin turns that off).
# Results: benchmarks/results/host/VARIANT.rN.{json,loadgen.txt,log}; a summary on stdout,
# also written between the "host-fanout" markers of benchmarks/RESULTS.md (appended when
# absent; --no-report leaves the file alone). One benchmark at a time (flock, waits).
# LOADGEN: the load generator (default ~/.cache/mlsockets/bench/loadgen).
set -u -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="$ROOT/.venv/bin/python"
GUNICORN="$ROOT/.venv/bin/gunicorn"
LG="${LOADGEN:-${XDG_CACHE_HOME:-$HOME/.cache}/mlsockets/bench/loadgen}"
OUT="$ROOT/benchmarks/results/host"
REPORT="$ROOT/benchmarks/RESULTS.md"
REPEATS=3 SUBS=10000 BCASTS=20 LATSUBS=100 PORT=18600 RPORT=16410 PIN=1 WRITE=1
VARIANTS="single unix2 redis2 lat-single lat-unix2 lat-redis2"
ARGS="$*"
while [ $# -gt 0 ]; do
    case "$1" in
    -r) REPEATS="$2"; shift 2 ;;
    -n) SUBS="$2"; shift 2 ;;
    -m) BCASTS="$2"; shift 2 ;;
    -l) LATSUBS="$2"; shift 2 ;;
    -V) VARIANTS="$2"; shift 2 ;;
    -p) PORT="$2"; shift 2 ;;
    --redis-port) RPORT="$2"; shift 2 ;;
    --no-pin) PIN=0; shift ;;
    --no-report) WRITE=0; shift ;;
    -h|--help) sed -n '2,/^set -u/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "host_fanout.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
for v in $VARIANTS; do
    case "${v#lat-}" in single|unix2|redis2) ;;
    *) echo "host_fanout.sh: unknown variant $v" >&2; exit 2 ;;
    esac
done
[ "$RPORT" != 6379 ] || { echo "host_fanout.sh: refusing the machine's Redis port 6379" >&2; exit 2; }
[ -x "$LG" ] || { echo "host_fanout.sh: no load generator at $LG (run make bench once)" >&2; exit 2; }
[ -x "$GUNICORN" ] || { echo "host_fanout.sh: $GUNICORN not found (make the venv first)" >&2; exit 2; }
HAVE_REDIS=1
command -v redis-server >/dev/null || HAVE_REDIS=0
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if command -v flock >/dev/null 2>&1; then  # one benchmark at a time (as bench.sh)
    LOCK="${TMPDIR:-/tmp}/mlsockets-bench.lock"
    exec 9>"$LOCK"
    flock -w 1800 9 || { echo "host_fanout.sh: another benchmark holds $LOCK" >&2; exit 2; }
fi
CORE0=() CORE1=()
[ "$PIN" = 1 ] && CORE0=(taskset -c 0) CORE1=(taskset -c 1)

PIDS=()
stop_all() {
    local p i
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do
        for i in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null
        wait "$p" 2>/dev/null
    done
    PIDS=()
}
trap stop_all EXIT
trap 'exit 130' INT TERM

mkdir -p "$OUT"
rm -rf "$OUT"/*.json "$OUT"/*.txt "$OUT"/*.log "$OUT"/sockets-*
# The app every variant serves (BENCH_BROADCAST: local, unix or redis).
cat >"$OUT/host_bench_app.py" <<'EOF'
"""Written by benchmarks/host_fanout.sh: the loadgen /fanout contract on one hub per worker."""
import logging
import os

from mlsockets import ANONYMOUS
from mlsockets.hub import Hub, HubOptions
from mlsockets.wsgi import HubConnection

logging.basicConfig(level=logging.WARNING)


class RawData:  # sends the envelope's data string as is (loadgen checks its own payload)
    name, subprotocol, binary = "raw", "", False

    def encode(self, obj):
        data = obj.get("data")
        return data if isinstance(data, str) else ""

    def decode(self, message):
        raise ValueError("not an envelope")


class BenchConnection(HubConnection):
    __slots__ = ()

    def send(self, message):
        if message:  # system messages (mls.welcome) encode to "" and are not sent
            super().send(message)


kind = os.environ["BENCH_BROADCAST"]
broadcaster = None
if kind == "unix":
    from mlsockets.broadcast.unix import UnixBroadcaster

    broadcaster = UnixBroadcaster.from_directory(os.environ["BENCH_DIR"], presence=False)
elif kind == "redis":
    from mlsockets.broadcast.redis import RedisBroadcaster

    broadcaster = RedisBroadcaster.from_url(
        os.environ["BENCH_REDIS_URL"], prefix="hostbench", presence=False, startup="fail"
    )
hub = Hub(
    broadcaster=broadcaster,
    options=HubOptions(heartbeat=None, rate=1e9, burst=1_000_000),
    send_many=HubConnection.send_bulk,
)
RAW = RawData()
state = {"open": 0, "peak": 0}
print(f"READY pid={os.getpid()}", flush=True)


def app(environ, start_response):
    upgrade = environ.get("mlsockets.upgrade")
    if upgrade is None or environ["PATH_INFO"] != "/fanout":
        start_response("404 Not Found", [("Content-Length", "0")])
        return []
    conn = BenchConnection(ANONYMOUS, RAW)
    role = {}

    def on_open(ws):
        conn.ws = ws
        state["open"] += 1
        state["peak"] = max(state["peak"], state["open"])
        hub.connect(conn)
        hub.join(conn, "fanout")

    def on_message(ws, message):
        if "pub" not in role:
            role["pub"] = message == "pub"
        elif role["pub"]:
            hub.emit("m", message, to="fanout", skip=conn.id)

    def on_close(ws):
        hub.disconnect(conn)
        state["open"] -= 1
        if state["open"] == 0:
            print(f"PEAK pid={os.getpid()} connections={state['peak']}", flush=True)
            state["peak"] = 0

    upgrade.accept(on_open=on_open, on_message=on_message, on_close=on_close)
    return []
EOF

wait_ready() { # pid log count port
    local i
    for i in $(seq 600); do
        kill -0 "$1" 2>/dev/null || { echo "host_fanout.sh: process $1 exited, see $2" >&2; return 1; }
        if [ "$(grep -c '^READY pid=' "$2" 2>/dev/null)" -ge "$3" ] &&
            (exec 3<>"/dev/tcp/127.0.0.1/$4") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "host_fanout.sh: fewer than $3 workers ready, see $2" >&2
    return 1
}
start_redis() { # log
    "${CORE0[@]}" redis-server --port "$RPORT" --bind 127.0.0.1 --save "" --appendonly no \
        --daemonize no --loglevel warning >"$1" 2>&1 &
    PIDS+=("$!")
    local i
    for i in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$RPORT") 2>/dev/null && return 0; sleep 0.1; done
    return 1
}
start_gunicorn() { # port log kind workers
    BENCH_BROADCAST="$3" BENCH_DIR="$OUT/sockets-$1" BENCH_REDIS_URL="redis://127.0.0.1:$RPORT/0" \
        MLSOCKETS_COMPRESSION=0 MLSOCKETS_PING_INTERVAL=0 PYTHONPATH="$OUT" \
        "${CORE0[@]}" "$GUNICORN" -k mlsockets.gunicorn.GeventWebSocketWorker -w "$4" \
        --worker-connections 20000 --graceful-timeout 5 --log-level warning \
        --no-control-socket -b "127.0.0.1:$1" host_bench_app:app >"$2" 2>&1 &
    LASTPID=$!
    PIDS+=("$LASTPID")
    wait_ready "$LASTPID" "$2" "$4" "$1"
}

FAILS=0
STARTED="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "# host_fanout.sh $ARGS: $SUBS subscribers x $BCASTS broadcasts, latency with $LATSUBS;" \
    "variants: $VARIANTS; repeats $REPEATS; results in $OUT"
for r in $(seq "$REPEATS"); do
    for v in $VARIANTS; do
        base="${v#lat-}"
        if [ "$base" = redis2 ] && [ "$HAVE_REDIS" = 0 ]; then
            echo "  $v: skipped (no redis-server)"; continue
        fi
        PORT=$((PORT + 1))
        n="$SUBS" m="$BCASTS" gap=100
        case "$v" in lat-*) n="$LATSUBS" m=200 gap=5 ;; esac
        log="$OUT/$v.r$r.log" lgo="$OUT/$v.r$r.loadgen.txt" ok=1
        case "$base" in
        single) start_gunicorn "$PORT" "$log" local 1 || ok=0 ;;
        unix2) start_gunicorn "$PORT" "$log" unix 2 || ok=0 ;;
        redis2) { start_redis "$OUT/$v.r$r.redis.log" && start_gunicorn "$PORT" "$log" redis 2; } || ok=0 ;;
        esac
        if [ $ok = 0 ]; then FAILS=$((FAILS + 1)); stop_all; continue; fi
        pids="$(grep -o '^READY pid=[0-9]*' "$log" | cut -d= -f2 | paste -sd,)"
        "${CORE1[@]}" "$LG" fanout "ws://127.0.0.1:$PORT/fanout" -n "$n" -m "$m" -s 32 \
            --gap "$gap" --pid "$pids" --max-time 300 >"$lgo" 2>&1
        rc=$?
        stop_all
        line=$(grep '^RESULT ' "$lgo" | tail -1)
        if [ -z "$line" ] || [ "$rc" != 0 ]; then
            echo "host_fanout.sh: $v run $r failed (rc=$rc, see $lgo)" >&2; FAILS=$((FAILS + 1))
        fi
        peaks="$(grep -o 'connections=[0-9]*' "$log" | cut -d= -f2 | paste -sd/)"
        [ -n "$line" ] && echo "{\"variant\":\"$v\",\"repeat\":$r,\"rc\":$rc,\"peaks\":\"$peaks\",\"lg\":${line#RESULT }}" >"$OUT/$v.r$r.json"
        printf '  %-12s run %d (per worker %s): %s\n' "$v" "$r" "${peaks:-?}" \
            "$(grep -E '^fanout: .* broadcasts' "$lgo" | tail -1 | cut -c1-140)"
        sleep 1
    done
done

SUMMARY="$("$PY" - "$OUT" "$REPEATS" "$SUBS" "$BCASTS" "$LATSUBS" "$STARTED" "$ARGS" <<'EOF'
import glob, json, os, statistics, sys
out, repeats, subs, bcasts, latsubs, started, args = sys.argv[1:]
runs = {}
for path in sorted(glob.glob(f"{out}/*.json")):
    r = json.load(open(path))
    runs.setdefault(r["variant"], []).append(r)
def med(v, key):
    vals = [x["lg"][key] for x in runs.get(v, []) if x["lg"].get(key) is not None]
    return statistics.median(vals) if vals else float("nan")
print(f"Started {started}; {repeats} repeat(s); `bash benchmarks/host_fanout.sh {args}`; medians"
      " over the repeats.")
print(f"Fan-out: {subs} subscribers, {bcasts} broadcasts of 32 B; latency: {latsubs} subscribers,"
      " 200 broadcasts. Every variant is gunicorn with mlsockets workers, the publisher's worker"
      " calling hub.emit.")
load = open("/proc/loadavg").read().split()[:3]
print("Servers (and Redis) pinned to core 0, the load generator to core 1; load average at the"
      f" end {'/'.join(load)} (1/5/15 min) on {os.cpu_count()} CPUs, shared with other work"
      " (compare within one run).\n")
print("| variant | runs | connections per worker | deliveries/s | time-to-last p50 | p99 |"
      " time-to-first p50 |")
print("|---|--:|--|--:|--:|--:|--:|")
for v in ("single", "unix2", "redis2", "lat-single", "lat-unix2", "lat-redis2"):
    if v not in runs:
        continue
    peaks = runs[v][-1].get("peaks") or "?"
    print(f"| {v} | {len(runs[v])} | {peaks} | {med(v, 'deliv_per_s'):,.0f} |"
          f" {med(v, 'last_p50_us') / 1000:.2f} ms | {med(v, 'last_p99_us') / 1000:.2f} ms |"
          f" {med(v, 'first_p50_us') / 1000:.2f} ms |")
s = med("single", "deliv_per_s")
print()
for v in ("unix2", "redis2"):
    if v in runs and s == s and s:
        print(f"- **{v} / single deliveries/s: {med(v, 'deliv_per_s') / s:.2f}x**")
for v in ("unix2", "redis2"):
    if f"lat-{v}" in runs and "lat-single" in runs:
        add50 = med(f"lat-{v}", "last_p50_us") - med("lat-single", "last_p50_us")
        add99 = med(f"lat-{v}", "last_p99_us") - med("lat-single", "last_p99_us")
        print(f"- latency the {v[:-1]} hop adds ({latsubs} subscribers): p50 {add50 / 1000:+.2f} ms,"
              f" p99 {add99 / 1000:+.2f} ms")
EOF
)"
echo
echo "$SUMMARY"
if [ "$WRITE" = 1 ]; then
    "$PY" - "$REPORT" "$SUMMARY" <<'EOF'
import re, sys
from pathlib import Path
path, summary = Path(sys.argv[1]), sys.argv[2]
section = ("<!-- host-fanout: written by benchmarks/host_fanout.sh -->\n"
           "## One host without Redis: fan-out through Unix sockets\n\n" + summary
           + "\n<!-- /host-fanout -->\n")
text = path.read_text() if path.exists() else ""
pattern = re.compile(r"<!-- host-fanout:.*?<!-- /host-fanout -->\n", re.S)
text = pattern.sub(lambda m: section, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section
path.write_text(text)
EOF
fi
[ "$FAILS" = 0 ]
