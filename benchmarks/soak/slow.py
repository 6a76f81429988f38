"""Slow consumers: clients that stop reading among many receiving broadcasts.

One server (``mlsockets serve``, the soak app, ``max_queue`` lowered so that the scenario is
short); ``readers`` subscribers driven by the shared C load generator's fan-out mode measure
the delivery rate. Runs alternate in the same server, ``repeats`` times each:

* ``baseline``: the readers alone;
* ``stalled``: the same readers plus ``stalled`` connections (``swarm.py stall``: a tiny
  receive buffer, never read after the handshake) subscribed first.

Reported: the median deliveries/s of each kind and their ratio, the peak of any connection's
outbound queue (sampled in the server every 50 ms), the server's peak RSS, the close codes
the server recorded for the stalled connections (1008 "slow consumer"), whether the stalled
clients saw their connection closed, and the WARNING lines in the server's log.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.soak.procs import Processes, Sampler, median, swarm_result

SLOW = "1008 slow consumer"


def run(
    logdir: Path,
    *,
    readers: int = 999,
    stalled: int = 1,
    size: int = 16384,
    broadcasts: int = 600,
    repeats: int = 3,
    max_queue: int = 256 * 1024,
) -> dict[str, Any]:
    """Run the scenario; every figure in the returned dict (see the module docstring)."""
    env = {"MLSOCKETS_MAX_QUEUE": str(max_queue), "MLSOCKETS_COMPRESSION": "0"}
    rates: dict[str, list[float]] = {"baseline": [], "stalled": []}
    runs: list[dict[str, Any]] = []
    with Processes(logdir) as procs:
        server = procs.server(env=env)
        url = server.url("/fanout")
        rss_before = server.rss_kb()
        for repeat in range(repeats):
            for kind in ("baseline", "stalled"):
                stall = None
                if kind == "stalled":
                    stall = procs.swarm("stall", url, stalled, "--timeout", "600")
                before = server.stats()["close_codes"].get(SLOW, 0)
                with Sampler(server) as sampler:
                    result = procs.loadgen(
                        "fanout", url, "-n", str(readers), "-m", str(broadcasts),
                        "-s", str(size), "--gap", "0", "--pid", str(server.worker_pid),
                    )  # fmt: skip
                stats = server.stats()
                run: dict[str, Any] = {
                    "repeat": repeat,
                    "kind": kind,
                    "deliveries_per_s": result.get("deliv_per_s", 0.0),
                    "loadgen_exit": result["exit"],
                    "loadgen_errors": result.get("errors", {}),
                    "incomplete": result.get("incomplete", -1),
                    "peak_rss_kb": sampler.peak_rss_kb,
                    "slow_closed": stats["close_codes"].get(SLOW, 0) - before,
                }
                if stall is not None:
                    stall.send_signal(10)  # SIGUSR1: stop and check which were closed
                    seen = swarm_result(stall)
                    run["stalled_opened"] = seen.get("opened", 0)
                    run["stalled_seen_closed"] = seen.get("closed_by_server", 0)
                rates[kind].append(float(run["deliveries_per_s"]))
                runs.append(run)
        stats = server.stats()
        warnings = [line for line in server.stderr().splitlines() if "slow consumer" in line]
    base, slow = median(rates["baseline"]), median(rates["stalled"])
    return {
        "readers": readers,
        "stalled": stalled,
        "size": size,
        "broadcasts": broadcasts,
        "repeats": repeats,
        "max_queue": max_queue,
        "median_baseline": base,
        "median_stalled": slow,
        "ratio": slow / base if base else 0.0,
        "peak_out_size": stats["peak_out_size"],
        "rss_before_kb": rss_before,
        "peak_rss_kb": max(r["peak_rss_kb"] for r in runs),
        "close_codes": stats["close_codes"],
        "warnings": len(warnings),
        "warning_example": warnings[0] if warnings else "",
        "runs": runs,
    }
