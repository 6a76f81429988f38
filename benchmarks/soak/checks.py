"""What each scenario must show: a list of failures (empty: it passed).

Shared by ``make soak`` (benchmarks/soak/run.py, full scale, strict rate bound) and the quick
tests in tests/reliability/ (reduced scale, loose rate bound: a loaded 2-core machine).
"""

from __future__ import annotations

from typing import Any

#: Memory a scenario may add to the server beyond what its connections legitimately hold.
RSS_SLACK_KB = 64 * 1024


def slow(r: dict[str, Any], *, min_ratio: float) -> list[str]:
    """Slow consumers: rates, bounded queue and memory, every stalled client closed with 1008."""
    bad = []
    if r["ratio"] < min_ratio:
        bad.append(f"delivery rate with stalled clients {r['ratio']:.2f} of baseline < {min_ratio}")
    bound = r["max_queue"] + r["size"] + 14  # the limit is checked before one more frame
    if r["peak_out_size"] > bound:
        bad.append(f"an outbound queue reached {r['peak_out_size']} bytes > {bound}")
    for run in r["runs"]:
        where = f"repeat {run['repeat']} {run['kind']}"
        if run["loadgen_exit"] != 0 or run["incomplete"]:
            bad.append(f"{where}: load generator failed: {run['loadgen_errors']}")
        if run["kind"] == "stalled":
            if run["slow_closed"] != r["stalled"]:
                bad.append(f"{where}: {run['slow_closed']}/{r['stalled']} closed with 1008")
            if run["stalled_seen_closed"] != run["stalled_opened"]:
                bad.append(f"{where}: stalled clients not disconnected: {run}")
        elif run["slow_closed"]:
            bad.append(f"{where}: {run['slow_closed']} reading clients dropped as slow")
    if r["warnings"] < r["stalled"] * r["repeats"]:
        bad.append(f"only {r['warnings']} slow-consumer WARNING lines in the server log")
    grown = r["peak_rss_kb"] - r["rss_before_kb"]
    allowed = r["stalled"] * r["max_queue"] // 1024 + RSS_SLACK_KB
    if grown > allowed:
        bad.append(f"server RSS grew {grown} KiB > {allowed} KiB")
    return bad


#: How each attack's clients may end, per client kind. A client still sending when the
#: server fails its connection may see a reset instead of the Close frame: the server closes
#: with the client's data unread, so TCP sends RST, which can discard the Close in flight
#: (the server's own record of the code is checked too, in ``SERVER_CODES``).
EXPECTED = {
    "oversized": {"announced_1GiB": {"close 1009"}, "real_2MiB": {"close 1009", "reset"}},
    "fragmented_forever": {"clients": {"close 1009", "reset"}, "empty_fragments": {"echoed"}},
    "ping_flood": {"clients": {"dropped by server"}},
    "compression_bomb": {"clients": {"close 1009"}},
    "invalid_utf8": {"clients": {"close 1007"}},
    "subscribe_storm": {"clients": {"close 1008 rate limit exceeded"}},
    "slowloris": {"ended_by_server": {"eof"}},
}
#: The close code (prefix of "code reason") the server must record for every attacking client
#: (of the kinds of ``EXPECTED`` that end with a close).
SERVER_CODES = {
    "oversized": "1009",
    "fragmented_forever": "1009",
    "ping_flood": "1008 slow consumer",
    "compression_bomb": "1009",
    "invalid_utf8": "1007",
    "subscribe_storm": "1008",
}
_NOT_CLOSED = {"echoed"}


def abuse(results: dict[str, Any]) -> list[str]:
    """Abuse: probes answered, limits held, memory bounded, fds and greenlets back."""
    bad = []
    for name, r in results.items():
        if name.startswith("_"):
            continue
        if "error" in r["outcome"]:
            bad.append(f"{name}: the attack itself failed: {r['outcome']['error']}")
        attackers = 0
        for kind, expected in EXPECTED.get(name, {}).items():
            seen = r["outcome"].get(kind, {})
            if not expected & _NOT_CLOSED:
                attackers += sum(seen.values())
            if not seen or set(seen) - expected:
                bad.append(f"{name}: {kind} ended {seen}, expected only {sorted(expected)}")
        if name in SERVER_CODES:
            code = SERVER_CODES[name]
            recorded = sum(n for k, n in r["server_close_codes"].items() if k.startswith(code))
            if recorded != attackers:
                bad.append(f"{name}: server recorded {code} for {recorded}/{attackers} clients")
        if name == "handshake_flood":
            limited = r["outcome"].get("limited", {})
            if not limited.get("http 429") or set(limited) - {"http 101", "http 429"}:
                bad.append(f"{name}: rate-limited endpoint answered {limited}")
            if set(r["outcome"].get("echo", {})) != {"http 101"}:
                bad.append(f"{name}: echo endpoint answered {r['outcome'].get('echo')}")
        probe = r["probe"]
        if probe["failed"] or not probe["ok"] or not probe["new_handshakes"]:
            bad.append(f"{name}: the well-behaved client was not served: {probe}")
        if r["peak_rss_kb"] - r["rss_before_kb"] > RSS_SLACK_KB:
            bad.append(f"{name}: RSS grew {r['peak_rss_kb'] - r['rss_before_kb']} KiB")
        fds, greenlets = r["fds"], r["greenlets"]
        if fds[1] > fds[0] + 3 or greenlets[1] > greenlets[0] + 3:
            bad.append(f"{name}: not back to baseline: fds {fds}, greenlets {greenlets}")
        if r["idle_workers_after"] > 64:  # _Workers.max_idle
            bad.append(f"{name}: {r['idle_workers_after']} idle workers kept")
        if r["websockets_open_after"] or r["hub_channels_after"]:
            bad.append(f"{name}: left {r['websockets_open_after']} WebSockets open, "
                       f"{r['hub_channels_after']} hub channels")  # fmt: skip
    if results.get("_server_tracebacks"):
        bad.append(f"{results['_server_tracebacks']} tracebacks in the server log")
    return bad


def sigterm(r: dict[str, Any]) -> list[str]:
    """Shutdown: every client got 1001, every frame parsed, the process exited in time."""
    bad = []
    expected = r["clients"] + 1  # the publisher too
    if r["opened"] != expected or r["close_codes"] != {"1001": expected}:
        bad.append(f"{r['server']}: close codes {r['close_codes']} for {r['opened']} clients")
    for key in ("eof_without_close", "bad_frames", "bad_messages", "data_after_close"):
        if r[key]:
            bad.append(f"{r['server']}: {key} = {r[key]} ({r['errors']})")
    if r["exit_status"] != 0:
        bad.append(f"{r['server']}: exit status {r['exit_status']}")
    if r["exit_seconds"] > r["shutdown_grace"]:
        bad.append(f"{r['server']}: exited after {r['exit_seconds']} s > shutdown_grace")
    if r["tracebacks_in_log"]:
        bad.append(f"{r['server']}: {r['tracebacks_in_log']} tracebacks in the log")
    return bad


def reload(r: dict[str, Any]) -> list[str]:
    """HUP: a new worker, the old one's clients got 1001, every probe answered."""
    bad = []
    if r["new_worker"] == r["old_worker"] or not r["old_worker_gone"] or not r["master_running"]:
        bad.append(f"the worker was not replaced: {r}")
    if r["close_codes"] != {"1001": r["clients"]} or r["eof_without_close"] or r["bad_frames"]:
        bad.append(f"old worker's clients ended {r['close_codes']}, {r['eof_without_close']} EOF")
    probes = r["probes"]
    if probes["failed"] or not probes["ok_after_new_worker"]:
        bad.append(f"probes during the reload: {probes} {r['probe_errors']}")
    if r["tracebacks_in_log"]:
        bad.append(f"{r['tracebacks_in_log']} tracebacks in the log")
    return bad


def soak(r: dict[str, Any]) -> list[str]:
    """Soak: no errors, every connection still open, no growth trend."""
    bad = []
    lg = r["loadgen"]
    # The stop signal interrupts the broadcast in flight: one incomplete one is the stop.
    if r["loadgen_ended_early"] or (lg.get("incomplete") or 0) > 1:
        bad.append(f"a broadcast did not reach every subscriber: {lg}")
    if any((lg.get("errors") or {"missing": 1}).values()):
        bad.append(f"load generator errors: {lg}")
    if r["websockets_open_at_end"] != r["connections"] - 1:  # all but the stopped prober
        bad.append(f"{r['websockets_open_at_end']} WebSockets open at the end")
    if r["echo"]["failed"] or not r["echo"]["ok"]:
        bad.append(f"echo probe: {r['echo']} {r['echo_errors']}")
    if r["server_warnings"] or r["server_tracebacks"]:
        bad.append(f"server log: {r['server_warnings']} warnings, {r['server_tracebacks']} tb")
    minutes = max(r["minutes"], 1e-9)
    # A trend is growth that would matter if it went on: more than 5% of the RSS, or a
    # handful of fds or greenlets, per hour.
    rss = r["rss_kb_first_last"][0] if r["rss_kb_first_last"] else 0
    if r["rss_kb_per_min"] * 60 > 0.05 * rss and r["rss_kb_per_min"] * minutes > 1024:
        bad.append(f"RSS grows {r['rss_kb_per_min']} KiB/min")
    if r["fds_per_min"] * 60 > 5:
        bad.append(f"fds grow {r['fds_per_min']}/min")
    if r["greenlets_per_min"] * 60 > 5:
        bad.append(f"greenlets grow {r['greenlets_per_min']}/min")
    return bad
