"""Relay messages: what travels between the nodes of a cluster, and where it travels.

A *relay message* carries one envelope from the node (or emitter) that published it to every
other node, which hands it to its hub's local delivery. It is encoded once per publish, as
compact JSON in a versioned object::

    {"v": 1, "origin": "web-1-4242-a1b2c3", "target": ["channel", "room:lobby"],
     "envelope": {"event": "chat.message", "channel": "room:lobby", "data": {...}},
     "skip": "k3Jd9w..."}

- ``v``: :data:`RELAY_VERSION`. A node drops (and logs once per origin) a message with a
  version it does not know, so a rolling upgrade never delivers half-understood messages.
- ``origin``: the node id of the publisher; a node ignores its own messages (it delivered
  them locally when it published).
- ``target``: ``["channel", name]``, ``["user", user_id]``, ``["connection", id]``,
  ``["tag", tag]`` or ``["everyone", null]``.
- ``envelope``: the server -> client envelope, as the hub builds it (a JSON object with an
  ``event``); every receiving node encodes it once per formatter for its connections.
- ``skip``: a connection id to leave out (the sender of a chat message), or null.

Two encodings of the same object, decided per message by :func:`encode`: compact UTF-8 JSON
(every message JSON can carry), else MessagePack (data only msgpack clients can receive,
such as ``bytes``; needs msgpack installed, ``pip install mlsockets[msgpack]``). A reader
tells them apart by the first byte: a msgpack map starts with 0x80-0x8F, 0xDE or 0xDF,
which never starts JSON. Each receiving node delivers such an envelope as its own hub would
in one process: its msgpack clients get the bytes, and its JSON clients get nothing (the hub
logs an ERROR "cannot encode ... as json" for them).

Where a relay message travels (:class:`RelayChannels`): a message for a channel goes to the
Redis channel ``<prefix>:c:<name>``, which only nodes with local members of that channel
subscribe to; a message for a user, a connection, a tag or everyone goes to the broadcast
channel ``<prefix>:all``, which every node subscribes to, and each node resolves it against
its own connections (so a send to a user needs no lookup of where the user is connected).

:class:`ReconnectBackoff` paces the relay's reconnection attempts. Pure: no I/O, no clock.
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from mlsockets.broadcast.base import Channel, ConnectionTarget, Everyone, Tag, Target, User
from mlsockets.exceptions import ConfigurationError
from mlsockets.formatters.msgpack import MsgpackFormatter
from mlsockets.typing import ConnectionId, NodeId

__all__ = [
    "RELAY_VERSION",
    "RelayMessage",
    "RelayError",
    "UnsupportedVersion",
    "RelayChannels",
    "ReconnectBackoff",
    "encode",
    "decode",
    "RelayInbox",
    "target_to_wire",
    "target_from_wire",
]

logger = logging.getLogger("mlsockets.broadcast")

#: The version of the relay message format this code writes and reads.
RELAY_VERSION = 1

_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _finite_float(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):  # 1e999: encode() refuses it, so decode() does too
        raise ValueError(f"number out of range: {literal[:40]}")
    return value


def _refuse_constant(literal: str) -> object:
    raise ValueError(f"{literal} is not JSON")  # NaN, Infinity, -Infinity


_DECODER = json.JSONDecoder(parse_float=_finite_float, parse_constant=_refuse_constant)
_KEYS = frozenset({"v", "origin", "target", "envelope", "skip"})
# msgpack is imported by the formatter's module only, and only when a message needs it. The
# nesting bound is generous: the emitting server's data is trusted, a peer's is not.
_MSGPACK = MsgpackFormatter(max_depth=512)
# The first byte of a msgpack map (fixmap, map 16, map 32): never the start of JSON.
_MSGPACK_MAP = frozenset(range(0x80, 0x90)) | {0xDE, 0xDF}


class RelayError(ValueError):
    """A relay message cannot be decoded (malformed, or not a relay message at all)."""


class UnsupportedVersion(RelayError):
    """A relay message has a version this node does not read (a newer node published it).

    Attributes:
        version: the message's version.
        origin: the node that published it, when that could be read (else None).
    """

    def __init__(self, version: object, origin: str | None) -> None:
        super().__init__(f"relay message version {version!r} (this node reads {RELAY_VERSION})")
        self.version = version
        self.origin = origin


@dataclass(frozen=True, slots=True)
class RelayMessage:
    """One envelope on its way to the other nodes.

    Attributes:
        origin: the node id of the publisher (an :class:`~mlsockets.broadcast.emitter.Emitter`
            has one too).
        target: who receives it.
        envelope: the server -> client envelope, a JSON-compatible mapping.
        skip: a connection to leave out, or None.
    """

    origin: NodeId
    target: Target
    envelope: Mapping[str, object]
    skip: ConnectionId | None = None


def target_to_wire(target: Target) -> list[str | None]:
    """``Channel("x")`` -> ``["channel", "x"]`` and so on (see the module docstring)."""
    if isinstance(target, Channel):
        return ["channel", target.name]
    if isinstance(target, User):
        return ["user", target.user_id]
    if isinstance(target, ConnectionTarget):
        return ["connection", target.connection_id]
    if isinstance(target, Tag):
        return ["tag", target.tag]
    if isinstance(target, Everyone):
        return ["everyone", None]
    raise TypeError(f"not a broadcast target: {target!r}")


_TARGETS: dict[str, Callable[[str], Target]] = {
    "channel": Channel,
    "user": User,
    "connection": ConnectionTarget,
    "tag": Tag,
}


def target_from_wire(value: object) -> Target:
    """The inverse of :func:`target_to_wire`; raises :class:`RelayError` for anything else."""
    if not isinstance(value, list) or len(value) != 2 or not isinstance(value[0], str):
        raise RelayError(f"malformed relay target: {value!r:.80}")
    kind, arg = value
    if kind == "everyone" and arg is None:
        return Everyone()
    make = _TARGETS.get(kind)
    if make is None or not isinstance(arg, str):
        raise RelayError(f"malformed relay target: {value!r:.80}")
    return make(arg)


def encode(message: RelayMessage) -> bytes:
    """The wire form of ``message``: UTF-8 JSON, or MessagePack for an envelope that JSON
    cannot carry but msgpack can (``bytes``, NaN...), decided per message.

    Raises:
        TypeError, ValueError: the envelope holds something neither can carry (a set, a
            datetime...), or only msgpack can and msgpack is not installed (the message
            says what to install): it fails here, before anyone received it.
    """
    obj = {
        "v": RELAY_VERSION,
        "origin": message.origin,
        "target": target_to_wire(message.target),
        "envelope": message.envelope,
        "skip": message.skip,
    }
    try:
        return _ENCODER.encode(obj).encode()
    except (TypeError, ValueError) as exc:
        json_error = exc
    try:
        return _MSGPACK.encode(obj)
    except ConfigurationError as exc:  # msgpack is not installed
        raise TypeError(f"{json_error}, and a msgpack relay message needs msgpack: {exc}") from None
    except (TypeError, ValueError) as exc:
        kind = TypeError if isinstance(exc, TypeError) else ValueError
        raise kind(
            f"cannot relay this envelope as JSON ({json_error}) nor msgpack ({exc})"
        ) from None


def decode(data: bytes | str) -> RelayMessage:
    """Parse a relay message (JSON or msgpack, see the module docstring).

    Raises:
        UnsupportedVersion: a version other than :data:`RELAY_VERSION`.
        RelayError: anything that is not a well-formed relay message, or a msgpack one on a
            node without msgpack installed.
    """
    if isinstance(data, bytes) and data and data[0] in _MSGPACK_MAP:
        obj: Any = _unpack(data)
    else:
        obj = _parse_json(data)
    return _from_wire(obj)


def _unpack(data: bytes) -> Any:
    try:
        return _MSGPACK.decode(data)
    except ConfigurationError as exc:
        raise RelayError(f"a msgpack relay message, but this node cannot read it: {exc}") from None
    except ValueError as exc:  # the formatter's errors name the problem, never crash
        raise RelayError(f"undecodable relay message: {exc}") from None


def _parse_json(data: bytes | str) -> Any:
    try:
        text = data.decode() if isinstance(data, bytes) else data
        obj = _DECODER.decode(text)
        # A \ud800 escape decodes to a lone surrogate that UTF-8 cannot carry: every node
        # would fail to send the envelope to its clients. Refused here, once, instead.
        if "\\u" in text or not isinstance(data, bytes):
            _ENCODER.encode(obj).encode()
    except RecursionError:  # nesting deeper than the interpreter's recursion limit
        raise RelayError("undecodable relay message: nested too deeply") from None
    except ValueError as exc:  # JSON syntax, UTF-8, NaN / Infinity, numbers out of range
        raise RelayError(f"undecodable relay message: {exc}") from None
    return obj


def _from_wire(obj: Any) -> RelayMessage:
    if not isinstance(obj, dict):
        raise RelayError("a relay message is a JSON object (or a msgpack map)")
    origin = obj.get("origin")
    version = obj.get("v")
    if version != RELAY_VERSION or isinstance(version, bool):
        raise UnsupportedVersion(version, origin if isinstance(origin, str) else None)
    if obj.keys() != _KEYS:
        # repr(): a msgpack map may have bytes keys, which do not sort with str ones.
        keys = sorted(map(repr, obj))
        raise RelayError(f"relay message keys {', '.join(keys)[:200]} (expected {sorted(_KEYS)})")
    envelope = obj["envelope"]
    skip = obj["skip"]
    if not isinstance(origin, str) or not origin:
        raise RelayError("relay message without an origin")
    if not isinstance(envelope, dict) or not isinstance(envelope.get("event"), str):
        raise RelayError("relay message without an event envelope")
    if skip is not None and not isinstance(skip, str):
        raise RelayError("relay message skip is not a connection id")
    return RelayMessage(
        NodeId(origin),
        target_from_wire(obj["target"]),
        envelope,
        None if skip is None else ConnectionId(skip),
    )


class RelayInbox:
    """Opens the relay messages that reach one node, whatever carried them (Redis, a Unix
    socket): decodes them, logs the ones to drop, and recognises the node's own.

    Call :meth:`open` with each message's bytes; deliver what it returns.
    """

    def __init__(self, node_id: NodeId) -> None:
        self.node_id = node_id
        self._warned_versions: set[tuple[str | None, object]] = set()

    def open(self, data: bytes) -> RelayMessage | None:
        """The relay message in ``data``, or None when this node published it.

        Raises:
            RelayError: ``data`` is to be dropped (malformed, or a version this node does not
                read); it was logged at WARNING (a version once per origin and version).
        """
        try:
            message = decode(data)
        except UnsupportedVersion as exc:
            key = (exc.origin, exc.version)
            if key not in self._warned_versions:  # once per origin and version
                self._warned_versions.add(key)
                logger.warning("dropping relay messages from %s: %s", exc.origin or "?", exc)
            raise
        except RelayError as exc:
            logger.warning("dropping a malformed relay message: %s", exc)
            raise
        return None if message.origin == self.node_id else message


@dataclass(frozen=True, slots=True)
class RelayChannels:
    """The names of the Redis pub/sub channels of one cluster (one ``prefix``).

    Several applications may share a Redis server with different prefixes. A prefix may not
    contain ``|`` (reserved as a separator in the registry's keys).
    """

    prefix: str = "mls"

    def __post_init__(self) -> None:
        if not self.prefix or "|" in self.prefix:
            raise ConfigurationError(f"invalid Redis key prefix {self.prefix!r}")

    @property
    def broadcast(self) -> str:
        """The channel every node subscribes to: users, connections, tags, everyone."""
        return f"{self.prefix}:all"

    def channel(self, name: str) -> str:
        """The Redis channel of the mlsockets channel ``name``."""
        return f"{self.prefix}:c:{name}"

    def for_target(self, target: Target) -> str:
        """Where a relay message for ``target`` is published."""
        if isinstance(target, Channel):
            return self.channel(target.name)
        return self.broadcast


@dataclass(frozen=True, slots=True)
class ReconnectBackoff:
    """Delays between reconnection attempts: capped exponential growth, full jitter.

    Each delay is drawn uniformly in ``[0, min(maximum, initial * factor ** failures)]``,
    so processes that lost Redis together do not come back in lockstep.

    Attributes:
        initial: the cap of the first delay, in seconds.
        maximum: the largest cap, in seconds. While the relay is down, publishes to other
            nodes raise, so this bounds how long that lasts after Redis is back.
        factor: growth of the cap per failed attempt.
    """

    initial: float = 0.1
    maximum: float = 5.0
    factor: float = 2.0

    def __post_init__(self) -> None:
        if not 0 <= self.initial <= self.maximum or self.factor < 1:
            raise ConfigurationError(
                "ReconnectBackoff needs 0 <= initial <= maximum and factor >= 1"
            )

    def cap(self, failures: int) -> float:
        """The largest delay after ``failures`` consecutive failed attempts."""
        return min(self.maximum, self.initial * self.factor ** min(failures, 64))

    def delay(self, failures: int, rand: Callable[[], float] = random.random) -> float:
        """A delay drawn uniformly in ``[0, cap(failures)]``."""
        return self.cap(failures) * rand()
