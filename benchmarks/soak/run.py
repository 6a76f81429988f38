"""``make soak``: every reliability scenario at full scale, with its checks and figures.

    python -m benchmarks.soak.run [--minutes 10] [--only slow,abuse,shutdown,soak] [--out DIR]

Scenarios (modules in this directory): ``slow`` (1 and 10% stalled clients among 1,000
receiving broadcasts, 3 alternating repeats, rates within 10%), ``abuse`` (every attack at
10x the quick tests' scale), ``shutdown`` (SIGTERM with 5,000 clients on ``mlsockets serve``
and on gunicorn, gunicorn HUP reload with 1,000), ``soak`` (10,000 connections for
``--minutes``, default ``SOAK_MINUTES`` or 10). Each result is written as JSON to ``--out``
(default benchmarks/results/soak/) and summarized on stdout; exit status 1 if any check failed.
Everything runs on 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.soak import abuse, checks, shutdown, slow, soak
from benchmarks.soak.procs import ROOT


def _scenarios(minutes: float, logs: Path) -> dict[str, Any]:
    return {
        "slow": lambda: {
            "one_stalled": _checked(
                slow.run(logs / "slow1", readers=999, stalled=1, repeats=3),
                lambda r: checks.slow(r, min_ratio=0.9),
            ),
            "ten_percent_stalled": _checked(
                slow.run(logs / "slow10", readers=900, stalled=100, repeats=3),
                lambda r: checks.slow(r, min_ratio=0.9),
            ),
        },
        "abuse": lambda: _checked(abuse.run(logs / "abuse", scale=10), checks.abuse),
        "shutdown": lambda: {
            "sigterm_serve": _checked(shutdown.sigterm(logs / "sd-serve"), checks.sigterm),
            "sigterm_gunicorn": _checked(
                shutdown.sigterm(logs / "sd-gunicorn", gunicorn=True), checks.sigterm
            ),
            "hup_gunicorn": _checked(shutdown.reload(logs / "hup"), checks.reload),
        },
        "soak": lambda: _checked(soak.run(logs / "soak", minutes=minutes), checks.soak),
    }


def _checked(result: dict[str, Any], check: Any) -> dict[str, Any]:
    result["failures"] = check(result)
    return result


def _failures(result: Any) -> list[str]:
    if isinstance(result, dict):
        own = list(result.get("failures", []))
        return own + [f for v in result.values() if isinstance(v, dict) for f in _failures(v)]
    return []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=float(os.environ.get("SOAK_MINUTES", 10)))
    parser.add_argument("--only", default="slow,abuse,shutdown,soak")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "soak")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    scenarios = _scenarios(args.minutes, args.out / "logs")
    failed = False
    for name in args.only.split(","):
        started = time.monotonic()
        print(f"== {name} ...", flush=True)
        try:
            result = scenarios[name]()
        except Exception as exc:  # a scenario that could not run is a failure, reported
            result = {"failures": [f"could not run: {exc!r}"]}
        result["seconds"] = round(time.monotonic() - started, 1)
        (args.out / f"{name}.json").write_text(json.dumps(result, indent=1))
        failures = _failures(result)
        failed = failed or bool(failures)
        print(f"== {name}: {'FAILED' if failures else 'ok'} in {result['seconds']} s "
              f"({args.out / (name + '.json')})", flush=True)  # fmt: skip
        for failure in failures:
            print(f"   - {failure}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
