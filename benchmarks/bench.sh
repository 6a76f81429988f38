#!/usr/bin/env bash
# make bench: mlsockets vs. gevent-websocket on the shared load-generator harness
# (../shared/tools/bench: run.sh + the C epoll loadgen), same scenarios and repeats for
# both, then benchmarks/ratios.py writes benchmarks/RESULTS.md (ratios vs. targets).
#
# Usage: bash benchmarks/bench.sh [-r REPEATS] [-s SCENARIOS] [-d SECS] [--idle-n N]
#                                 [-p PORT] [--no-pin]
#   options are passed to the harness run.sh for both servers; defaults = the harness's
#   (all scenarios: connect,echo32,echo4k,echo32p,lat32,fan1k,fan10k; 3 repeats; 5 s windows)
#   e.g. a quick check:  bash benchmarks/bench.sh -r 1 -s echo32,echo4k -d 2
#
# The harness is run from a writable copy, made on first use (or when incomplete):
#   BENCH_DIR  (default ${XDG_CACHE_HOME:-$HOME/.cache}/mlsockets/bench), copied from
#   BENCH_SRC  (default <repo>/../shared/tools/bench), with its own venv (requirements.txt:
#              gevent-websocket etc.), loadgen built with cc -O2, node_modules if npm works.
# Raw results: benchmarks/results/{mlsockets,gevent-websocket}/ (gitignored, wiped per run);
# BENCH_RESULTS / BENCH_REPORT move them and the report (e.g. a quick run without touching
# benchmarks/RESULTS.md).
# Only one benchmark may run at a time on this machine (flock on ${TMPDIR:-/tmp}/mlsockets-bench.lock).
# Exit status: 0 if every run of both servers finished without load-generator errors.
set -u -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH_DIR="${BENCH_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/mlsockets/bench}"
BENCH_SRC="${BENCH_SRC:-$(cd "$ROOT/.." && pwd)/shared/tools/bench}"
PY="$ROOT/.venv/bin/python"
RESULTS="${BENCH_RESULTS:-$ROOT/benchmarks/results}"
REPORT="${BENCH_REPORT:-$ROOT/benchmarks/RESULTS.md}"

usage() { sed -n '2,/^set -u/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'; }
die() { echo "bench: $*" >&2; exit 2; }

# the exact command line, for the report
quote() { if [[ "$1" =~ ^[A-Za-z0-9_./,=:+-]+$ ]]; then echo "$1"; else echo "'${1//\'/\'\\\'\'}'"; fi; }
COMMAND="bash benchmarks/bench.sh"
for a in "$@"; do COMMAND+=" $(quote "$a")"; done

REPEATS=3 SCEN="connect,echo32,echo4k,echo32p,lat32,fan1k,fan10k" PORT=18100
PASS=()
while [ $# -gt 0 ]; do
    case "$1" in
    -r) [ $# -ge 2 ] || die "-r needs a value"; REPEATS="$2"; shift 2 ;;
    -s) [ $# -ge 2 ] || die "-s needs a value"; SCEN="$2"; shift 2 ;;
    -p) [ $# -ge 2 ] || die "-p needs a value"; PORT="$2"; shift 2 ;;
    -d|--idle-n) [ $# -ge 2 ] || die "$1 needs a value"; PASS+=("$1" "$2"); shift 2 ;;
    --no-pin) PASS+=("$1"); shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown option $1" ;;
    esac
done
[[ "$REPEATS" =~ ^[1-9][0-9]*$ ]] || die "-r must be a positive integer"
[[ "$PORT" =~ ^[0-9]+$ ]] || die "-p must be a port number"
cd "$ROOT" || die "cannot cd to $ROOT"
[ -x "$PY" ] || die "$PY not found: run 'make bench' (it builds .venv) or make the venv first"

# ---- the harness copy -------------------------------------------------------------
bench_venv_ok() {
    [ -x "$BENCH_DIR/.venv/bin/python" ] &&
        "$BENCH_DIR/.venv/bin/python" -c 'import gevent, geventwebsocket' 2>/dev/null
}
harness_ok() {
    local f
    for f in run.sh summarize.py loadgen.c requirements.txt servers/gevent_ws.py; do
        [ -f "$BENCH_DIR/$f" ] || return 1
    done
}
setup_harness() {
    if ! harness_ok; then
        [ -f "$BENCH_SRC/run.sh" ] || die "harness not found at $BENCH_SRC (set BENCH_SRC or BENCH_DIR)"
        echo "bench: copying $BENCH_SRC to $BENCH_DIR" >&2
        mkdir -p "$BENCH_DIR"
        cp -r "$BENCH_SRC/." "$BENCH_DIR/" || die "copy failed"
        chmod -R u+w "$BENCH_DIR" || die "chmod failed"
    fi
    local f
    for f in run.sh summarize.py loadgen.c servers/gevent_ws.py; do
        if [ -f "$BENCH_SRC/$f" ] && ! cmp -s "$BENCH_SRC/$f" "$BENCH_DIR/$f"; then
            echo "bench: warning: $BENCH_DIR/$f differs from $BENCH_SRC/$f" >&2
        fi
    done
    if ! bench_venv_ok; then
        echo "bench: creating the harness venv in $BENCH_DIR/.venv" >&2
        rm -rf "$BENCH_DIR/.venv"
        python3 -m venv "$BENCH_DIR/.venv" || die "venv creation failed"
        "$BENCH_DIR/.venv/bin/pip" install -q --disable-pip-version-check \
            -r "$BENCH_DIR/requirements.txt" || die "pip install -r requirements.txt failed"
        bench_venv_ok || die "the harness venv cannot import gevent/geventwebsocket"
    fi
    if [ ! -x "$BENCH_DIR/loadgen" ] || [ "$BENCH_DIR/loadgen.c" -nt "$BENCH_DIR/loadgen" ]; then
        echo "bench: building loadgen" >&2
        cc -O2 -o "$BENCH_DIR/loadgen" "$BENCH_DIR/loadgen.c" || die "cc loadgen.c failed"
    fi
    # node is only used by the harness's node-ws reference server and client: optional
    if [ ! -d "$BENCH_DIR/node_modules/ws" ] && command -v npm >/dev/null 2>&1; then
        (cd "$BENCH_DIR" && npm install --no-audit --no-fund >/dev/null 2>&1) ||
            echo "bench: npm install failed (node is optional here; continuing)" >&2
    fi
}
setup_harness

# ---- one benchmark at a time --------------------------------------------------------
if command -v flock >/dev/null 2>&1; then
    LOCK="${TMPDIR:-/tmp}/mlsockets-bench.lock"
    exec 9>>"$LOCK"
    flock -n 9 || die "another benchmark holds $LOCK; run one at a time"
fi

# ---- the two servers, one after the other --------------------------------------------
IFS=, read -r -a SC_LIST <<<"$SCEN"
NRUNS=$(( ${#SC_LIST[@]} * REPEATS ))
FAILED=()
START=$(date +%s)
STARTED_AT="$(date -u +%Y-%m-%dT%H:%M:%SZ)"

# other load on the machine perturbs the numbers: note who is busy, sample the load average
busy_others() { # processes above 10% CPU over one second (top's second sample), not ours
    top -b -c -n 2 -d 1 -w 300 2>/dev/null | awk '
        /^top -/ { n++ } n == 2 && $1 ~ /^[0-9]+$/ && $9 + 0 >= 10 { c = $12; for (i = 13; i <= NF; i++) c = c " " $i; printf "%s%.0f%% %s", sep, $9, substr(c, 1, 60); sep = "; " }'
}
BUSY_START="$(busy_others)"
# other engineers edit mlsockets/ meanwhile: every server start loads the code as it is then
code_state() {
    find mlsockets benchmarks/server.py -type f -not -path '*/__pycache__/*' \
        \( -name '*.py' -o -name '*.pyi' -o -name '*.c' -o -name '*.so' \) -print0 |
        sort -z | xargs -0 sha256sum 2>/dev/null
}
CODE_START="$(code_state)"
mkdir -p "$RESULTS"
( while sleep 20; do cut -d' ' -f1 /proc/loadavg; done ) >"$RESULTS/loadavg.log" 2>/dev/null &
SAMPLER=$!
trap 'kill "$SAMPLER" 2>/dev/null' EXIT

run_one() { # name first-port SERVER_CMD...
    local name="$1" port="$2"; shift 2
    rm -rf "${RESULTS:?}/$name"
    mkdir -p "$RESULTS/$name"
    local t0=$SECONDS
    bash "$BENCH_DIR/run.sh" -n "$name" -r "$REPEATS" -s "$SCEN" -p "$port" -o "$RESULTS/$name" \
        "${PASS[@]}" -- "$@"
    local rc=$?
    echo "# $name: run.sh exit $rc after $((SECONDS - t0)) s"
    echo
    [ "$rc" = 0 ] || FAILED+=("$name (run.sh exit $rc)")
}

run_one mlsockets "$PORT" "$PY" "$ROOT/benchmarks/server.py"
CHANGED="$(diff <(echo "$CODE_START") <(code_state) | awk '/^[<>]/ { print $3 }' | sort -u | tr '\n' ' ')"
[ -z "$CHANGED" ] || echo "bench: warning: code changed during the mlsockets runs: $CHANGED" >&2
run_one gevent-websocket "$((PORT + NRUNS + 20))" \
    "$BENCH_DIR/.venv/bin/python" "$BENCH_DIR/servers/gevent_ws.py"

WALL=$(( $(date +%s) - START ))
kill "$SAMPLER" 2>/dev/null
LOADAVG="$(sort -n "$RESULTS/loadavg.log" | awk '{ v[NR] = $1 } END {
    if (NR) printf "min %s / median %s / max %s over %d samples (20 s apart)", v[1], v[int((NR + 1) / 2)], v[NR], NR
    else printf "no samples" }')"
BUSY_END="$(busy_others)"
VERSIONS="$("$PY" -c 'import gevent, mlsockets; print(f"mlsockets {mlsockets.__version__}, gevent {gevent.__version__}")' 2>/dev/null || echo '?')"
REF_VERSIONS="$("$BENCH_DIR/.venv/bin/python" -c 'from importlib.metadata import version as v
print("gevent-websocket", v("gevent-websocket") + ", gevent", v("gevent"))' 2>/dev/null || echo '?')"

python3 "$ROOT/benchmarks/ratios.py" \
    --mlsockets "$RESULTS/mlsockets" --reference "$RESULTS/gevent-websocket" \
    --summarize "$BENCH_DIR/summarize.py" --out "$REPORT" --command "$COMMAND" \
    --scenarios "$SCEN" --repeats "$REPEATS" \
    --info "started=$STARTED_AT" --info "wall time=${WALL} s ($((WALL / 60)) min $((WALL % 60)) s)" \
    --info "mlsockets server=.venv/bin/python benchmarks/server.py ($VERSIONS)" \
    --info "reference server=$BENCH_DIR/servers/gevent_ws.py ($REF_VERSIONS, no wsaccel)" \
    --info "harness=$BENCH_DIR (copy of $BENCH_SRC)" \
    --info "run.sh failures=${FAILED[*]:-none}" \
    --info "mlsockets code changed during its runs=${CHANGED:-no}" \
    --info "1-min load average during the run=$LOADAVG; the benchmark alone accounts for about 1-1.5 on these 2 cores" \
    --info "other processes above 10% CPU at start=${BUSY_START:-none}" \
    --info "other processes above 10% CPU at end=${BUSY_END:-none}" || die "ratios.py failed"
echo "bench: wrote $REPORT (wall time ${WALL} s)"
[ ${#FAILED[@]} = 0 ]
