#!/usr/bin/env bash
# cluster_fanout.sh: fan-out across processes through Redis, beside single-process fan-out,
# in one run, with the shared load generator (../shared/tools/bench: loadgen fanout).
#
# Usage: bash benchmarks/cluster_fanout.sh [-r REPEATS] [-n SUBS] [-m BCASTS] [-l LATSUBS]
#                                         [-p PORT] [--redis-port P] [--no-pin] [--no-report]
#
# Variants, each with fresh processes (benchmarks/cluster_server.py), per repeat:
#   single   one process, LocalBroadcaster, SUBS subscribers (= bench.sh fan10k)
#   redis2   two processes with RedisBroadcaster on one private Redis, SUBS/2 subscribers on
#            each (loadgen round-robin), the publisher on the first: every broadcast is
#            delivered locally by the first process and through Redis by the second
#   lat-single / lat-redis2   the same with LATSUBS subscribers (default 100): the
#            time-to-last difference is the latency the Redis hop adds to a broadcast
# Servers and Redis are pinned to core 0, loadgen to core 1 (same server CPU budget for
# every variant; --no-pin turns that off). Redis: redis-server on --redis-port (default
# 16400, never 6379), no persistence, started and stopped by PID per run.
# Results: benchmarks/results/cluster/VARIANT.rN.{json,loadgen.txt}; a summary table on
# stdout, also written between the "cluster-fanout" markers of benchmarks/RESULTS.md
# (appended when absent; --no-report leaves the file alone). Target: redis2 >= 0.6x single.
# Only one benchmark may run at a time on this machine (flock on ${TMPDIR:-/tmp}/mlsockets-bench.lock).
# LOADGEN: the load generator (default ~/.cache/mlsockets/bench/loadgen, built by bench.sh).
set -u -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="$ROOT/.venv/bin/python"
SRV="$ROOT/benchmarks/cluster_server.py"
LG="${LOADGEN:-${XDG_CACHE_HOME:-$HOME/.cache}/mlsockets/bench/loadgen}"
OUT="$ROOT/benchmarks/results/cluster"
REPORT="$ROOT/benchmarks/RESULTS.md"
REPEATS=3 SUBS=10000 BCASTS=20 LATSUBS=100 PORT=18400 RPORT=16400 PIN=1 WRITE=1
while [ $# -gt 0 ]; do
    case "$1" in
    -r) REPEATS="$2"; shift 2 ;;
    -n) SUBS="$2"; shift 2 ;;
    -m) BCASTS="$2"; shift 2 ;;
    -l) LATSUBS="$2"; shift 2 ;;
    -p) PORT="$2"; shift 2 ;;
    --redis-port) RPORT="$2"; shift 2 ;;
    --no-pin) PIN=0; shift ;;
    --no-report) WRITE=0; shift ;;
    -h|--help) sed -n '2,/^set -u/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "cluster_fanout.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
[ "$RPORT" != 6379 ] || { echo "cluster_fanout.sh: refusing the machine's Redis port 6379" >&2; exit 2; }
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
        for i in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
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
start_redis() { # log
    "${CORE0[@]}" redis-server --port "$RPORT" --bind 127.0.0.1 --save "" --appendonly no \
        --daemonize no --loglevel warning >"$1" 2>&1 &
    RP=$!
    PIDS+=("$RP")
    wait_listen "$RP" "$1" "$RPORT"
}
start_srv() { # port log [redis-url]
    if [ $# -ge 3 ]; then "${CORE0[@]}" "$PY" "$SRV" --redis "$3" "$1" >"$2" 2>&1 &
    else "${CORE0[@]}" "$PY" "$SRV" "$1" >"$2" 2>&1 &
    fi
    LASTPID=$!
    PIDS+=("$LASTPID")
    wait_listen "$LASTPID" "$2" "$1"
}

mkdir -p "$OUT"
rm -f "$OUT"/*.json "$OUT"/*.txt "$OUT"/*.log
FAILS=0
STARTED="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "# cluster_fanout.sh: $SUBS subscribers x $BCASTS broadcasts, latency with $LATSUBS;" \
    "repeats $REPEATS; redis port $RPORT; results in $OUT"
for r in $(seq "$REPEATS"); do
    for v in single redis2 lat-single lat-redis2; do
        PORT=$((PORT + 2))
        n="$SUBS" m="$BCASTS" gap=100
        case "$v" in lat-*) n="$LATSUBS" m=200 gap=5 ;; esac
        url="redis://127.0.0.1:$RPORT/0" ok=1 pids=""
        lgo="$OUT/$v.r$r.loadgen.txt"
        case "$v" in
        *single)
            start_srv "$PORT" "$OUT/$v.r$r.server.log" || ok=0
            urls="ws://127.0.0.1:$PORT/fanout" pids="$LASTPID" ;;
        *redis2)
            start_redis "$OUT/$v.r$r.redis.log" || ok=0
            start_srv "$PORT" "$OUT/$v.r$r.serverA.log" "$url" || ok=0
            A=$LASTPID
            start_srv "$((PORT + 1))" "$OUT/$v.r$r.serverB.log" "$url" || ok=0
            urls="ws://127.0.0.1:$PORT/fanout,ws://127.0.0.1:$((PORT + 1))/fanout"
            pids="$A,$LASTPID,$RP" ;;
        esac
        if [ $ok = 0 ]; then FAILS=$((FAILS + 1)); stop_all; continue; fi
        "${CORE1[@]}" "$LG" fanout "$urls" -n "$n" -m "$m" -s 32 --gap "$gap" --pid "$pids" \
            --max-time 300 >"$lgo" 2>&1
        rc=$?
        stop_all
        line=$(grep '^RESULT ' "$lgo" | tail -1)
        if [ -z "$line" ] || [ "$rc" != 0 ]; then
            echo "cluster_fanout.sh: $v run $r failed (rc=$rc, see $lgo)" >&2; FAILS=$((FAILS + 1))
        fi
        [ -n "$line" ] && echo "{\"variant\":\"$v\",\"repeat\":$r,\"rc\":$rc,\"lg\":${line#RESULT }}" >"$OUT/$v.r$r.json"
        printf '  %-10s run %d: %s\n' "$v" "$r" "$(grep -E '^fanout: .* broadcasts' "$lgo" | tail -1 | cut -c1-160)"
        sleep 1
    done
done

SUMMARY="$("$PY" - "$OUT" "$REPEATS" "$SUBS" "$BCASTS" "$LATSUBS" "$STARTED" <<'EOF'
import glob, json, statistics, sys
out, repeats, subs, bcasts, latsubs, started = sys.argv[1:]
runs = {}
for path in sorted(glob.glob(f"{out}/*.json")):
    r = json.load(open(path))
    runs.setdefault(r["variant"], []).append(r["lg"])
def med(v, key):
    vals = [x[key] for x in runs.get(v, []) if x.get(key) is not None]
    return statistics.median(vals) if vals else float("nan")
rows = []
for v in ("single", "redis2", "lat-single", "lat-redis2"):
    rows.append((v, len(runs.get(v, [])), med(v, "deliv_per_s"), med(v, "last_p50_us"),
                 med(v, "last_p99_us"), med(v, "first_p50_us")))
s, c = med("single", "deliv_per_s"), med("redis2", "deliv_per_s")
ratio = c / s if s == s and s else float("nan")
add50 = med("lat-redis2", "last_p50_us") - med("lat-single", "last_p50_us")
add99 = med("lat-redis2", "last_p99_us") - med("lat-single", "last_p99_us")
print(f"Started {started}; {repeats} repeat(s); `bash benchmarks/cluster_fanout.sh`; medians over the repeats.")
print(f"Fan-out: {subs} subscribers, {bcasts} broadcasts of 32 B; latency: {latsubs} subscribers, 200 broadcasts.")
load = open("/proc/loadavg").read().split()[:3]
print("Servers and Redis pinned to core 0, the load generator to core 1;"
      f" load average at the end {'/'.join(load)} (1/5/15 min) on {__import__('os').cpu_count()} CPUs"
      " (other work on the machine makes single runs noisy: compare within one run).\n")
print("| variant | runs | deliveries/s | time-to-last p50 | p99 | time-to-first p50 |")
print("|---|--:|--:|--:|--:|--:|")
for v, n, d, p50, p99, f50 in rows:
    print(f"| {v} | {n} | {d:,.0f} | {p50 / 1000:.2f} ms | {p99 / 1000:.2f} ms | {f50 / 1000:.2f} ms |")
met = "yes" if ratio >= 0.6 else "**NO**"
print(f"\n**redis2 / single deliveries/s: {ratio:.2f}x** (target >= 0.6x: {met}).")
print(f"Latency the Redis hop adds to a broadcast ({latsubs} subscribers, half of them behind"
      f" Redis): p50 {add50 / 1000:+.2f} ms, p99 {add99 / 1000:+.2f} ms.")
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
