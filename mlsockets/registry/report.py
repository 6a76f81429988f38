"""The cluster status report of ``mlsockets status`` and ``flask mlsockets status``.

Pure: it turns what a registry returned (:meth:`RedisRegistry.node_statuses` and
:meth:`RedisRegistry.online_users`) into JSON-friendly data and lines of text, so that both
command-line front ends print the same thing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from mlsockets.typing import NodeId

__all__ = ["status_report", "render_status"]

_COLUMNS = ("NODE", "PID", "HOST", "RELAY", "RECONNECTS", "CONNS", "CHANNELS", "VERSION", "UP")


def status_report(
    nodes: Mapping[NodeId, Mapping[str, object]],
    online_users: Sequence[str],
    *,
    redis: str,
    prefix: str,
) -> dict[str, object]:
    """The report: nodes with their status, totals, and how many relays are in each state.

    Args:
        nodes: node id -> the status the node last wrote.
        online_users: the users with a connection anywhere.
        redis: the Redis URL, with its password already redacted.
        prefix: the cluster's key prefix.
    """
    states: dict[str, int] = {}
    for status in nodes.values():
        state = str(status.get("relay_state", "unknown"))
        states[state] = states.get(state, 0) + 1
    return {
        "redis": redis,
        "prefix": prefix,
        "nodes": [{"node_id": node, **status} for node, status in nodes.items()],
        "totals": {
            "nodes": len(nodes),
            "connections": sum(_int(s.get("connections")) for s in nodes.values()),
            "channels": sum(_int(s.get("channels")) for s in nodes.values()),
            "online_users": len(online_users),
        },
        "relay_states": states,
    }


def render_status(report: Mapping[str, object]) -> list[str]:
    """The report as lines of text: a header, a table of nodes, and a totals line."""
    lines = [f"cluster {report['prefix']!r} on {report['redis']}"]
    nodes = report["nodes"]
    assert isinstance(nodes, list)
    rows: list[tuple[str, ...]] = [_COLUMNS]
    for s in nodes:
        started = s.get("started_at")
        uptime = _duration(_float(s.get("updated_at")) - _float(started)) if started else "-"
        rows.append(
            (
                str(s["node_id"]),
                *(
                    str(s.get(key, default))
                    for key, default in (
                        ("pid", "-"),
                        ("host", "-"),
                        ("relay_state", "unknown"),
                        ("relay_reconnects", "-"),
                        ("connections", "-"),
                        ("channels", "-"),
                        ("version", "-"),
                    )
                ),
                uptime,
            )
        )
    if nodes:
        widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
        for row in rows:
            cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
            lines.append("  ".join(cells).rstrip())
    else:
        lines.append("no live nodes")
    totals = report["totals"]
    states = report["relay_states"]
    assert isinstance(totals, dict) and isinstance(states, dict)
    relay = ", ".join(f"{n} {state}" for state, n in sorted(states.items())) or "-"
    lines.append(
        f"{totals['nodes']} nodes, {totals['connections']} connections, "
        f"{totals['online_users']} online users; relays: {relay}"
    )
    return lines


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _float(value: object) -> float:
    return float(value) if isinstance(value, int | float) else 0.0


def _duration(seconds: float) -> str:
    seconds = max(int(seconds), 0)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"
