#!/usr/bin/env python3
"""Write benchmarks/RESULTS.md: mlsockets vs. gevent-websocket, ratios against the targets.

Usage (benchmarks/bench.sh calls it after both harness runs):

  python3 benchmarks/ratios.py --mlsockets DIR --reference DIR [--out FILE]
      [--summarize PATH/summarize.py] [--command "..."] [--info KEY=VALUE ...]
      [--scenarios LIST] [--repeats N]

Each DIR holds the SCENARIO.rN.json files (plus .server.log / .loadgen.txt) written by the
harness's run.sh. Every value is the median over the repeats; "spread" is (max - min) / median
of that metric over the repeats, as in the harness's summarize.py. Stdlib only.
"""

from __future__ import annotations

import argparse
import datetime as dt
import glob
import json
import os
import platform
import re
import statistics
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

Run = dict[str, Any]
Runs = dict[str, list[Run]]

ML = "mlsockets"
REF = "gevent-websocket"


@dataclass(frozen=True)
class Target:
    kind: Literal["ratio", "max"]  # ratio: advantage >= value; max: mlsockets value <= value
    value: float
    text: str

    def met(self, ml: float | None, advantage: float | None) -> bool | None:
        if self.kind == "ratio":
            return None if advantage is None else advantage >= self.value
        return None if ml is None else ml <= self.value


@dataclass(frozen=True)
class Metric:
    scenario: str
    label: str
    value: Callable[[Run], float | None]
    unit: Literal["count", "bytes", "us"]
    higher_is_better: bool = True
    target: Target | None = None
    latency: tuple[str, str] | None = None  # lg keys of the p50 / p99 shown beside it


def lg(key: str) -> Callable[[Run], float | None]:
    def get(run: Run) -> float | None:
        v = run.get("lg", {}).get(key)
        return float(v) if isinstance(v, int | float) and v >= 0 else None

    return get


def rss_per_idle_conn(run: Run) -> float | None:
    """Bytes of server RSS per idle connection, as run.sh / summarize.py define it."""
    n, before, after = run.get("idle_open"), run.get("rss_before_kb"), run.get("rss_after_kb")
    if not n or not before or not after:
        return None
    return float((after - before) * 1024.0 / n)


METRICS: list[Metric] = [
    Metric(
        "connect",
        "handshakes/s",
        lg("hs_per_s"),
        "count",
        target=Target("ratio", 2, ">= 2x"),
        latency=("hs_p50_us", "hs_p99_us"),
    ),
    Metric(
        "connect",
        "RSS per idle conn (B)",
        rss_per_idle_conn,
        "bytes",
        higher_is_better=False,
        target=Target("max", 10240, "<= 10,240 B (absolute)"),
    ),
    Metric(
        "echo32",
        "msg/s",
        lg("msg_per_s"),
        "count",
        target=Target("ratio", 2, ">= 2x"),
        latency=("rtt_p50_us", "rtt_p99_us"),
    ),
    Metric(
        "echo4k",
        "msg/s",
        lg("msg_per_s"),
        "count",
        target=Target("ratio", 50, ">= 50x"),
        latency=("rtt_p50_us", "rtt_p99_us"),
    ),
    Metric(
        "echo32p",
        "msg/s",
        lg("msg_per_s"),
        "count",
        target=Target("ratio", 3, ">= 3x"),
        latency=("rtt_p50_us", "rtt_p99_us"),
    ),
    Metric("lat32", "msg/s", lg("msg_per_s"), "count", latency=("rtt_p50_us", "rtt_p99_us")),
    Metric("lat32", "RTT p50", lg("rtt_p50_us"), "us", higher_is_better=False),
    Metric(
        "fan1k", "deliveries/s", lg("deliv_per_s"), "count", latency=("last_p50_us", "last_p99_us")
    ),
    Metric(
        "fan10k",
        "deliveries/s",
        lg("deliv_per_s"),
        "count",
        target=Target("ratio", 1.2, ">= 1.2x"),
        latency=("last_p50_us", "last_p99_us"),
    ),
]
SCENARIO_ORDER = ["connect", "echo32", "echo4k", "echo32p", "lat32", "fan1k", "fan10k"]
LATENCY_NAME = {"hs": "handshake", "rtt": "round trip", "last": "publish to last subscriber"}


# ---- loading and statistics ----------------------------------------------------------------


def load(directory: Path) -> Runs:
    runs: Runs = {}
    for name in sorted(glob.glob(str(directory / "*.r*.json"))):
        try:
            with open(name) as fh:
                run = json.load(fh)
        except (OSError, ValueError) as exc:
            print(f"ratios: skipping {name}: {exc}", file=sys.stderr)
            continue
        if isinstance(run, dict) and "scenario" in run and isinstance(run.get("lg"), dict):
            runs.setdefault(str(run["scenario"]), []).append(run)
    for scenario_runs in runs.values():
        scenario_runs.sort(key=lambda r: int(r.get("repeat", 0)))
    return runs


def values(runs: Sequence[Run], get: Callable[[Run], float | None]) -> list[float]:
    return [v for v in (get(r) for r in runs) if v is not None]


def median(xs: Sequence[float]) -> float | None:
    return statistics.median(xs) if xs else None


def spread_pct(xs: Sequence[float]) -> float | None:
    if len(xs) < 2:
        return None
    m = statistics.median(xs)
    return 100.0 * (max(xs) - min(xs)) / m if m else None


def error_count(runs: Sequence[Run]) -> int:
    """Failed handshakes + unanswered messages + incomplete broadcasts (as summarize.py)."""
    total = 0
    for run in runs:
        res = run["lg"]
        total += sum(int(v) for k, v in res.get("errors", {}).items() if k != "close_frames")
        total += int(res.get("unanswered", 0) or 0) + int(res.get("incomplete", 0) or 0)
    return total


# ---- formatting ----------------------------------------------------------------------------


def fmt_value(x: float | None, unit: str) -> str:
    if x is None:
        return "n/a"
    if unit == "us":
        return fmt_us(x)
    if unit == "count" and x < 100:
        return f"{x:,.1f}"
    return f"{x:,.0f}"


def fmt_us(x: float | None) -> str:
    if x is None:
        return "n/a"
    if x < 1000:
        return f"{x:,.1f} µs"
    return f"{x / 1000:,.2f} ms" if x < 100_000 else f"{x / 1000:,.0f} ms"


def fmt_pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.0f}%"


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]], right: int = 2) -> str:
    align = ["---" if i < right else "--:" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


# ---- the report ----------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def mem_total() -> str:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return f"{int(line.split()[1]) / 1024 / 1024:.1f} GB RAM"
    except (OSError, ValueError):
        pass
    return "RAM unknown"


@dataclass
class Row:
    cells: list[str]
    met: bool | None
    has_target: bool


def ratio_row(metric: Metric, ml_runs: Sequence[Run], ref_runs: Sequence[Run]) -> Row:
    ml_v, ref_v = values(ml_runs, metric.value), values(ref_runs, metric.value)
    ml_m, ref_m = median(ml_v), median(ref_v)
    advantage: float | None = None
    if ml_m is not None and ref_m is not None and ml_m > 0 and ref_m > 0:
        advantage = ml_m / ref_m if metric.higher_is_better else ref_m / ml_m
    met = metric.target.met(ml_m, advantage) if metric.target else None
    if metric.target is None:
        met_s = "(info)"
    elif met is None:
        met_s = "n/a"
    else:
        met_s = "yes" if met else "**NO**"

    def lat(runs: Sequence[Run]) -> str:
        if metric.latency is None:
            return "-"
        p50, p99 = (median(values(runs, lg(k))) for k in metric.latency)
        return f"{fmt_us(p50)} / {fmt_us(p99)}"

    def steal(runs: Sequence[Run]) -> str:
        return fmt_pct(median(values(runs, lg("machine_steal_pct"))))

    cells = [
        metric.scenario,
        metric.label + ("" if metric.higher_is_better else " (lower is better)"),
        fmt_value(ml_m, metric.unit),
        fmt_value(ref_m, metric.unit),
        "n/a" if advantage is None else f"{advantage:,.2f}x",
        metric.target.text if metric.target else "-",
        met_s,
        f"{fmt_pct(spread_pct(ml_v))} / {fmt_pct(spread_pct(ref_v))}",
        lat(ml_runs),
        lat(ref_runs),
        f"{steal(ml_runs)} / {steal(ref_runs)}",
        f"{len(ml_v)} / {len(ref_v)}",
        f"{error_count(ml_runs)} / {error_count(ref_runs)}",
    ]
    return Row(cells, met, metric.target is not None)


ERROR_RE = re.compile(r"Traceback|Error|Exception|Segmentation|Killed|core dumped", re.I)


def health(
    name: str, directory: Path, runs: Runs, scenarios: Sequence[str], repeats: int
) -> list[str]:
    """Problems worth a look: missing runs, load-generator errors, noisy server logs."""
    notes: list[str] = []
    for sc in scenarios:
        got = {int(r.get("repeat", 0)) for r in runs.get(sc, [])}
        missing = [n for n in range(1, repeats + 1) if n not in got]
        if missing:
            why = "server start or loadgen failed"
            notes.append(f"{name} {sc}: no result for run(s) {missing} ({why})")
    for sc, sc_runs in runs.items():
        for run in sc_runs:
            res, tag = run["lg"], f"{name} {sc} run {run.get('repeat')}"
            errs = {k: v for k, v in res.get("errors", {}).items() if v and k != "close_frames"}
            for key in ("unanswered", "incomplete"):
                if res.get(key):
                    errs[key] = res[key]
            if run.get("rc", 0) != 0 or errs:
                notes.append(f"{tag}: loadgen exit {run.get('rc')}, errors {errs or 'none'}")
            if sc == "connect" and run.get("idle_open") != res.get("n"):
                opened = f"{run.get('idle_open')} of {res.get('n')}"
                notes.append(f"{tag}: {opened} idle connections open")
            if res.get("open_after_hold") not in (None, res.get("open")):
                notes.append(
                    f"{tag}: {res.get('open_after_hold')} of {res.get('open')} "
                    "still open after the hold"
                )
    for log in sorted(directory.glob("*.server.log")):
        try:
            text = log.read_text(errors="replace")
        except OSError:
            continue
        lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("LISTENING")]
        bad = [ln for ln in lines if ERROR_RE.search(ln)]
        if bad:
            notes.append(
                f"{name} {log.name}: {len(bad)} error line(s) in {len(lines)}, "
                f"first: `{bad[0][:160]}`"
            )
    return notes


def compare_detail(summarize: Path | None, dirs: Sequence[Path]) -> str | None:
    if summarize is None or not summarize.is_file():
        return None
    try:
        out = subprocess.run(
            [sys.executable, str(summarize), "compare", *map(str, dirs)],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"(summarize.py compare failed: {exc})"
    return out.stdout.strip()


def report(args: argparse.Namespace) -> str:
    ml_dir, ref_dir = Path(args.mlsockets), Path(args.reference)
    ml, ref = load(ml_dir), load(ref_dir)
    seen = set(ml) | set(ref)
    scenarios: list[str] = (
        args.scenarios.split(",")
        if args.scenarios
        else [s for s in SCENARIO_ORDER if s in seen] + sorted(seen - set(SCENARIO_ORDER))
    )
    repeats: int = args.repeats or max(
        (int(r.get("repeat", 0)) for rs in [*ml.values(), *ref.values()] for r in rs), default=0
    )

    now = dt.datetime.now().astimezone()
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = os.cpu_count() or 0
    out: list[str] = [
        "# mlsockets vs. gevent-websocket: benchmark results",
        "",
        f"* date: {now:%Y-%m-%d %H:%M %Z} ({now.astimezone(dt.UTC):%Y-%m-%dT%H:%M:%SZ})",
        f"* machine: nproc {affinity} ({os.cpu_count()} CPUs), {cpu_model()}, {mem_total()}, "
        f"kernel {platform.release()}, Python {platform.python_version()}",
        f"* command: `{args.command}`" if args.command else "* command: (not given)",
    ]
    for item in args.info:
        key, _, val = item.partition("=")
        out.append(f"* {key}: {val}")
    out += [
        f"* scenarios: {', '.join(scenarios)}; {repeats} repeat(s) per scenario and server, "
        "each with a fresh server process (harness run.sh: server pinned to core 0, "
        "load generator to core 1)",
        "",
        "## Ratios against the targets",
        "",
        "Values are medians over the repeats. ratio = how many times better mlsockets is "
        "(throughput: mlsockets / gevent-websocket; memory and latency: gevent-websocket / "
        "mlsockets). spread = (max - min) / median over the repeats. p50 / p99 = handshake "
        "time (connect), round-trip time (echo, lat32) or publish-to-last-subscriber time "
        "(fan-out). steal% = machine-wide steal during the runs (median). errors = failed "
        "handshakes + unanswered messages + incomplete broadcasts, summed over the runs.",
        "",
    ]
    rows = [
        ratio_row(m, ml.get(m.scenario, []), ref.get(m.scenario, []))
        for m in METRICS
        if m.scenario in scenarios
    ]
    header = [
        "scenario",
        "metric",
        ML,
        REF,
        "ratio",
        "target",
        "met?",
        "spread (ml / gw)",
        "p50 / p99 mlsockets",
        "p50 / p99 gevent-websocket",
        "steal% (ml / gw)",
        "runs (ml / gw)",
        "errors (ml / gw)",
    ]
    out.append(md_table(header, [r.cells for r in rows]))
    targeted = [r for r in rows if r.has_target]
    met = sum(1 for r in targeted if r.met)
    out += ["", f"**Targets met: {met} of {len(targeted)}** (in the scenarios run)."]

    notes = health(ML, ml_dir, ml, scenarios, repeats)
    notes += health(REF, ref_dir, ref, scenarios, repeats)
    out += ["", "## Run health", ""]
    out += [f"* {n}" for n in notes] or [
        "* every run produced a result; no load-generator errors, no error lines in the server logs"
    ]
    detail = compare_detail(Path(args.summarize) if args.summarize else None, [ml_dir, ref_dir])
    if detail:
        out += [
            "",
            "## Full detail (harness `summarize.py compare`)",
            "",
            "Medians over the repeats; CPU% = /proc/PID/stat time over the window "
            "(100% = one core); peak RSS = the server's VmHWM.",
            "",
            detail,
        ]
    out += [
        "",
        f"Raw per-run JSON, loadgen output and server logs: `{display(ml_dir)}/`, "
        f"`{display(ref_dir)}/` (not committed).",
        "",
    ]
    return "\n".join(out)


def display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--mlsockets", required=True, help="run.sh results dir of mlsockets")
    parser.add_argument("--reference", required=True, help="run.sh results dir of gevent-websocket")
    parser.add_argument("--out", default="-", help="report file (default: stdout)")
    parser.add_argument("--summarize", help="the harness's summarize.py, for the detail tables")
    parser.add_argument("--command", default="", help="the command line that produced the runs")
    parser.add_argument("--info", action="append", default=[], help="KEY=VALUE header line")
    parser.add_argument("--scenarios", default="", help="scenarios expected (default: found)")
    parser.add_argument("--repeats", type=int, default=0, help="repeats expected (default: found)")
    args = parser.parse_args(argv)
    text = report(args)
    if args.out == "-":
        sys.stdout.write(text)
    else:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
