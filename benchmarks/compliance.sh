#!/usr/bin/env bash
# make compliance: the real Autobahn|Testsuite fuzzingclient, all cases (compression
# included), against benchmarks/server.py. Bar: 0 FAILED, 0 UNIMPLEMENTED.
# The suite's Python 2.7 venv is cached outside the repo (created on first use).
set -euo pipefail
cd "$(dirname "$0")/.."
AUTOBAHN="${AUTOBAHN_DIR:-$(cd .. && pwd)/shared/tools/autobahn}"
export AUTOBAHN_VENV="${AUTOBAHN_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/mlsockets/autobahn-venv}"
OUT="${AUTOBAHN_OUT:-benchmarks/autobahn-out}"
if [ ! -x "$AUTOBAHN/run.sh" ]; then
  echo "compliance: Autobahn harness not found at $AUTOBAHN (set AUTOBAHN_DIR)" >&2
  exit 1
fi
mkdir -p "$(dirname "$AUTOBAHN_VENV")"
"$AUTOBAHN/setup.sh" --suite-only > /dev/null
rm -rf "$OUT"
set +e
WS_PATH=/echo "$AUTOBAHN/serve_and_run.sh" -t 2400 "$OUT" "$@" -- .venv/bin/python benchmarks/server.py 0 --compression
rc=$?
set -e

# run.sh fails on FAILED cases; the bar also excludes UNIMPLEMENTED (compression refused).
python3 - "$OUT/summary.json" <<'PY' || rc=1
import json, sys
behavior = json.load(open(sys.argv[1]))["behavior"]
print("compliance: FAILED=%d UNIMPLEMENTED=%d" % (behavior["FAILED"], behavior["UNIMPLEMENTED"]))
sys.exit(1 if behavior["FAILED"] or behavior["UNIMPLEMENTED"] else 0)
PY
exit $rc
