#!/usr/bin/env bash
# cluster_fanout.sh: fan-out across gunicorn workers through Redis, beside single-process
# fan-out, in one run, with the shared load generator (../shared/tools/bench: loadgen fanout).
#
# Usage: bash benchmarks/cluster_fanout.sh [-r REPEATS] [-n SUBS] [-m BCASTS] [-l LATSUBS]
#                                         [-V "VARIANT ..."] [-p PORT] [--redis-port P]
#                                         [--no-pin] [--no-report]
#
# Variants (-V, default "single gunicorn2 lat-single lat-gunicorn2"), each with fresh
# processes (benchmarks/cluster_server.py), per repeat:
#   single     one process (mlsockets' standalone server), LocalBroadcaster, SUBS
#              subscribers (= bench.sh fan10k)
#   gunicorn2  one gunicorn, two mlsockets.gunicorn.GeventWebSocketWorker workers, each with
#              a RedisBroadcaster on one private Redis; the kernel spreads the SUBS
#              connections over the workers (each prints its peak, shown in the summary).
#              The publisher's messages are published with an Emitter (one PUBLISH, as a
#              Celery job or a view would): every delivery, in both workers, comes through
#              Redis and a relay greenlet
#   gunicorn2-hub   the same, but the publisher's worker emits with hub.emit (its own
#              members at once, the other worker's through Redis)
#   redis2     two standalone processes with RedisBroadcaster, SUBS/2 subscribers on each
#              (loadgen round-robin), hub.emit in the first (the previous session's setup)
#   lat-VARIANT   the same with LATSUBS subscribers (default 100), 200 broadcasts: the
#              time-to-last difference to lat-single is the latency Redis adds to a broadcast
# Servers and Redis are pinned to core 0, loadgen to core 1 (same server CPU budget for
# every variant; --no-pin turns that off). Redis: redis-server on --redis-port (default
# 16400, never 6379), no persistence, started and stopped by PID per run.
# Results: benchmarks/results/cluster/VARIANT.rN.{json,loadgen.txt}; a summary table on
# stdout, also written between the "cluster-fanout" markers of benchmarks/RESULTS.md
# (appended when absent; --no-report leaves the file alone). Target: gunicorn2 >= 0.6x single.
# Only one benchmark may run at a time on this machine (flock on ${TMPDIR:-/tmp}/mlsockets-bench.lock).
# LOADGEN: the load generator (default ~/.cache/mlsockets/bench/loadgen; built from
# ../shared/tools/bench/loadgen.c when missing).
#
# Reuse: the start_* functions each start one server setup and set URLS (comma-separated
# WebSocket URLs for loadgen) and MEASURE (comma-separated PIDs whose CPU loadgen sums);
# run_variant VARIANT REPEAT runs one loadgen measurement and writes its JSON.
set -u -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="$ROOT/.venv/bin/python"
GUNICORN="$ROOT/.venv/bin/gunicorn"
SRV="$ROOT/benchmarks/cluster_server.py"
LG="${LOADGEN:-${XDG_CACHE_HOME:-$HOME/.cache}/mlsockets/bench/loadgen}"
LG_SRC="${BENCH_SRC:-$ROOT/../shared/tools/bench}/loadgen.c"
OUT="$ROOT/benchmarks/results/cluster"
REPORT="$ROOT/benchmarks/RESULTS.md"
REPEATS=3 SUBS=10000 BCASTS=20 LATSUBS=100 PORT=18400 RPORT=16400 PIN=1 WRITE=1
VARIANTS="single gunicorn2 lat-single lat-gunicorn2"
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
    *) echo "cluster_fanout.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
for v in $VARIANTS; do
    case "${v#lat-}" in single|gunicorn2|gunicorn2-hub|redis2) ;;
    *) echo "cluster_fanout.sh: unknown variant $v" >&2; exit 2 ;;
    esac
done
[ "$RPORT" != 6379 ] || { echo "cluster_fanout.sh: refusing the machine's Redis port 6379" >&2; exit 2; }
if [ ! -x "$LG" ] && [ -f "$LG_SRC" ]; then
    mkdir -p "$(dirname "$LG")" && cc -O2 -o "$LG" "$LG_SRC" ||
        { echo "cluster_fanout.sh: cannot build $LG from $LG_SRC" >&2; exit 2; }
fi
[ -x "$LG" ] || { echo "cluster_fanout.sh: no load generator at $LG (run make bench once)" >&2; exit 2; }
[ -x "$PY" ] || { echo "cluster_fanout.sh: $PY not found (make the venv first)" >&2; exit 2; }
command -v redis-server >/dev/null || { echo "cluster_fanout.sh: redis-server not found" >&2; exit 2; }
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if command -v flock >/dev/null 2>&1; then  # one benchmark at a time (as bench.sh)
    LOCK="${TMPDIR:-/tmp}/mlsockets-bench.lock"
    exec 9>"$LOCK"
    flock -n 9 || { echo "cluster_fanout.sh: another benchmark holds $LOCK" >&2; exit 2; }
fi
# Prefixes, not a function: a backgrounded function is a subshell, and $! its PID.
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

wait_listen() { # pid log port
    local i
    for i in $(seq 300); do
        kill -0 "$1" 2>/dev/null || { echo "cluster_fanout.sh: process $1 exited, see $2" >&2; return 1; }
        grep -q "^LISTENING" "$2" 2>/dev/null && return 0
        [ "$i" -gt 5 ] && (exec 3<>"/dev/tcp/127.0.0.1/$3") 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}
wait_ready() { # pid log count: COUNT "READY pid=N" lines (gunicorn workers with their hub)
    local i
    for i in $(seq 300); do
        kill -0 "$1" 2>/dev/null || { echo "cluster_fanout.sh: process $1 exited, see $2" >&2; return 1; }
        [ "$(grep -c '^READY pid=' "$2" 2>/dev/null)" -ge "$3" ] && return 0
        sleep 0.1
    done
    echo "cluster_fanout.sh: fewer than $3 workers ready, see $2" >&2
    return 1
}
start_redis() { # log
    "${CORE0[@]}" redis-server --port "$RPORT" --bind 127.0.0.1 --save "" --appendonly no \
        --daemonize no --loglevel warning >"$1" 2>&1 &
    RP=$!
    PIDS+=("$RP")
    wait_listen "$RP" "$1" "$RPORT"
}
start_srv() { # port log [redis-url [publish]]
    local extra=()
    [ $# -ge 3 ] && extra=(--redis "$3" --publish "${4:-hub}")
    "${CORE0[@]}" "$PY" "$SRV" "${extra[@]}" "$1" >"$2" 2>&1 &
    LASTPID=$!
    PIDS+=("$LASTPID")
    wait_listen "$LASTPID" "$2" "$1"
}
start_gunicorn() { # port log redis-url workers publish
    BENCH_REDIS_URL="$3" BENCH_PUBLISH="$5" MLSOCKETS_COMPRESSION=0 MLSOCKETS_PING_INTERVAL=0 \
        PYTHONPATH="$ROOT/benchmarks" "${CORE0[@]}" "$GUNICORN" \
        -k mlsockets.gunicorn.GeventWebSocketWorker -w "$4" --worker-connections 20000 \
        --graceful-timeout 5 --log-level warning -b "127.0.0.1:$1" \
        'cluster_server:gunicorn_app()' >"$2" 2>&1 &
    LASTPID=$!
    PIDS+=("$LASTPID")
    wait_ready "$LASTPID" "$2" "$4" && wait_listen "$LASTPID" "$2" "$1"
}

# The server setups. Each sets URLS and MEASURE, or returns 1.
setup_single() { # port logbase
    start_srv "$1" "$2.server.log" || return 1
    URLS="ws://127.0.0.1:$1/fanout" MEASURE="$LASTPID"
}
setup_gunicorn2() { # port logbase [publish]
    start_redis "$2.redis.log" || return 1
    start_gunicorn "$1" "$2.server.log" "redis://127.0.0.1:$RPORT/0" 2 "${3:-emitter}" || return 1
    local workers
    workers=$(sed -n 's/^READY pid=\([0-9]*\).*/\1/p' "$2.server.log" | paste -sd, -)
    URLS="ws://127.0.0.1:$1/fanout" MEASURE="$LASTPID,$workers,$RP"
}
setup_gunicorn2-hub() { setup_gunicorn2 "$1" "$2" hub; }
setup_redis2() { # port logbase
    local url="redis://127.0.0.1:$RPORT/0" a
    start_redis "$2.redis.log" || return 1
    start_srv "$1" "$2.serverA.log" "$url" || return 1
    a=$LASTPID
    start_srv "$(($1 + 1))" "$2.serverB.log" "$url" || return 1
    URLS="ws://127.0.0.1:$1/fanout,ws://127.0.0.1:$(($1 + 1))/fanout"
    MEASURE="$a,$LASTPID,$RP"
}

FAILS=0
run_variant() { # variant repeat
    local v="$1" r="$2" n="$SUBS" m="$BCASTS" gap=100 base rc line peaks
    case "$v" in lat-*) n="$LATSUBS" m=200 gap=5 ;; esac
    PORT=$((PORT + 2))
    base="$OUT/$v.r$r"
    if ! "setup_${v#lat-}" "$PORT" "$base"; then
        FAILS=$((FAILS + 1)); stop_all; return
    fi
    "${CORE1[@]}" "$LG" fanout "$URLS" -n "$n" -m "$m" -s 32 --gap "$gap" --pid "$MEASURE" \
        --max-time 300 >"$base.loadgen.txt" 2>&1
    rc=$?
    stop_all
    line=$(grep '^RESULT ' "$base.loadgen.txt" | tail -1)
    if [ -z "$line" ] || [ "$rc" != 0 ]; then
        echo "cluster_fanout.sh: $v run $r failed (rc=$rc, see $base.loadgen.txt)" >&2
        FAILS=$((FAILS + 1))
    fi
    # How the connections were spread over the processes (each prints its peak on exit).
    peaks=$(cat "$base".server*.log 2>/dev/null | sed -n 's/^PEAK pid=[0-9]* connections=\([0-9]*\)/\1/p' | paste -sd, -)
    [ -n "$line" ] && echo "{\"variant\":\"$v\",\"repeat\":$r,\"rc\":$rc,\"peaks\":[${peaks}],\"lg\":${line#RESULT }}" >"$base.json"
    printf '  %-16s run %d: %s [connections per process: %s]\n' "$v" "$r" \
        "$(grep -E '^fanout: .* broadcasts' "$base.loadgen.txt" | tail -1 | cut -c1-175)" "${peaks:-?}"
    sleep 1
}

mkdir -p "$OUT"
rm -f "$OUT"/*.json "$OUT"/*.txt "$OUT"/*.log
STARTED="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
LOAD_START="$(cut -d' ' -f1-3 /proc/loadavg)"
echo "# cluster_fanout.sh: $SUBS subscribers x $BCASTS broadcasts, latency with $LATSUBS;" \
    "variants $VARIANTS; repeats $REPEATS; redis port $RPORT; results in $OUT"
for r in $(seq "$REPEATS"); do
    for v in $VARIANTS; do run_variant "$v" "$r"; done
done

SUMMARY="$("$PY" - "$OUT" "$REPEATS" "$SUBS" "$BCASTS" "$LATSUBS" "$STARTED" "$ARGS" "$LOAD_START" <<'EOF'
import glob, json, os, statistics, sys
out, repeats, subs, bcasts, latsubs, started, args, load_start = sys.argv[1:]
runs, peaks = {}, {}
for path in sorted(glob.glob(f"{out}/*.json")):
    r = json.load(open(path))
    runs.setdefault(r["variant"], []).append(r["lg"])
    peaks.setdefault(r["variant"], []).append(r.get("peaks") or [])
def med(v, key):
    vals = [x[key] for x in runs.get(v, []) if x.get(key) is not None]
    return statistics.median(vals) if vals else float("nan")
def spread(v, key):
    vals = [x[key] for x in runs.get(v, []) if x.get(key) is not None]
    return f"{min(vals):,.0f}-{max(vals):,.0f}" if len(vals) > 1 else "-"
order = ["single", "gunicorn2", "gunicorn2-hub", "redis2"]
variants = [v for base in order for v in (base, "lat-" + base) if v in runs]
variants = [v for v in variants if not v.startswith("lat-")] + [v for v in variants if v.startswith("lat-")]
cmd = "bash benchmarks/cluster_fanout.sh" + (f" {args}" if args else "")
print(f"Started {started}; {repeats} repeat(s); `{cmd}`; medians over the repeats.")
print(f"Fan-out: {subs} subscribers, {bcasts} broadcasts of 32 B; latency: {latsubs} subscribers, 200 broadcasts.")
load = open("/proc/loadavg").read().split()[:3]
print("Servers and Redis pinned to core 0, the load generator to core 1;"
      f" load average at the start {load_start.replace(' ', '/')}, at the end {'/'.join(load)}"
      f" (1/5/15 min) on {os.cpu_count()} CPUs shared with other work: compare within one run.\n")
print("Variants: `single` = one mlsockets process, in-process broadcaster; `gunicorn2` = one gunicorn with"
      " two `mlsockets.gunicorn.GeventWebSocketWorker` workers on one private Redis, the kernel spreading"
      " the connections, each broadcast published by an `Emitter` (one PUBLISH, as a job or a view in a"
      " process without WebSockets would): every delivery of both workers goes through Redis and a relay"
      " greenlet; `gunicorn2-hub` = the same, published with `hub.emit` in the publisher's worker (its own"
      " members at once, the other worker's through Redis); `lat-*` = the same with few subscribers, for"
      " latency. Deliveries/s = subscribers / time to the last one, median over the broadcasts.\n")
print("| variant | runs | deliveries/s | range | time-to-last p50 | p99 | time-to-first p50 | connections per process |")
print("|---|--:|--:|--:|--:|--:|--:|---|")
for v in variants:
    ps = "; ".join("/".join(str(n) for n in p) for p in peaks.get(v, []) if len(p) > 1) or "-"
    print(f"| {v} | {len(runs[v])} | {med(v, 'deliv_per_s'):,.0f} | {spread(v, 'deliv_per_s')} |"
          f" {med(v, 'last_p50_us') / 1000:.2f} ms | {med(v, 'last_p99_us') / 1000:.2f} ms |"
          f" {med(v, 'first_p50_us') / 1000:.2f} ms | {ps} |")
print()
s = med("single", "deliv_per_s")
for v in order[1:]:
    if v in runs and s == s and s:
        ratio = med(v, "deliv_per_s") / s
        target = f" (target >= 0.6x: {'yes' if ratio >= 0.6 else '**NO**'})" if v == "gunicorn2" else ""
        print(f"- **{v} / single deliveries/s: {ratio:.2f}x**{target}.")
    if "lat-" + v in runs and "lat-single" in runs:
        add50 = med("lat-" + v, "last_p50_us") - med("lat-single", "last_p50_us")
        add99 = med("lat-" + v, "last_p99_us") - med("lat-single", "last_p99_us")
        print(f"- Latency Redis adds to a broadcast ({latsubs} subscribers, lat-{v} - lat-single,"
              f" time to the last subscriber): p50 {add50 / 1000:+.2f} ms, p99 {add99 / 1000:+.2f} ms.")
EOF
)"
echo
echo "$SUMMARY"
if [ "$WRITE" = 1 ]; then
    "$PY" - "$REPORT" "$SUMMARY" <<'EOF'
import re, sys
from pathlib import Path
path, summary = Path(sys.argv[1]), sys.argv[2]
section = ("<!-- cluster-fanout: written by benchmarks/cluster_fanout.sh -->\n"
           "## Cluster fan-out through Redis\n\n" + summary + "\n<!-- /cluster-fanout -->\n")
text = path.read_text() if path.exists() else ""
pattern = re.compile(r"<!-- cluster-fanout:.*?<!-- /cluster-fanout -->\n", re.S)
text = pattern.sub(lambda m: section, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section
path.write_text(text)
EOF
fi
[ "$FAILS" = 0 ]
