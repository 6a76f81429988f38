"""What the cluster-wide registries share: the Redis one (:mod:`mlsockets.registry.redis`)
and the one-host one (:mod:`mlsockets.registry.unix`).

Both implement the hub's ``ClusterPresence`` protocol, name each serving process with a node
id, call the same hooks into the hub, and store members' public info and node statuses as JSON
text. Stdlib only: no redis, no I/O.
"""

from __future__ import annotations

import json
import os
import re
import socket
from collections.abc import Callable, Mapping

from mlsockets.typing import ChannelName, NodeId, UserId

__all__ = ["PresenceHook", "RefreshHook", "json_object", "new_node_id"]

#: ``hook(channel, user_id, info)``: the hub announces ``mls.joined`` / ``mls.left``.
PresenceHook = Callable[[ChannelName, UserId, Mapping[str, object]], None]
#: ``refresh()``: the hub re-sends ``mls.presence`` (the cluster's member list) to its members.
RefreshHook = Callable[[], None]


def new_node_id() -> NodeId:
    """``<host>-<pid>-<random>``: unique per process, readable in logs and ``CLIENT LIST``,
    and safe in a file name (the one-host registry names sockets after it)."""
    host = re.sub(r"[^A-Za-z0-9_-]", "", socket.gethostname().split(".")[0])[:20] or "node"
    return NodeId(f"{host}-{os.getpid()}-{os.urandom(3).hex()}")


def json_object(raw: bytes | str | None) -> Mapping[str, object]:
    """A stored JSON object (a member's info, a node's status); ``{}`` for nothing, bad JSON
    or anything but an object."""
    if not raw:
        return {}
    try:
        info = json.loads(raw)
    except ValueError:
        return {}
    return info if isinstance(info, dict) else {}
