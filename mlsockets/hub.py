"""The hub: composes the router, channels, presence, registry and broadcaster for one process.

It does no I/O. An adapter (the gevent transport) calls, per connection:

1. :meth:`Hub.connect` once the WebSocket is open (False: the connection was refused and the
   adapter closes it with the code in :attr:`Refusal`);
2. :meth:`Hub.receive` for every message;
3. :meth:`Hub.disconnect` once it closed;

and :meth:`Hub.close` once, at shutdown, after its connections closed.

Everything the hub sends goes through ``Connection.send`` (non-blocking, a complete encoded
message). An envelope for many receivers is encoded once per formatter, and the same
str/bytes object is handed to each (``send_many`` lets the adapter also serialize the frame
once). Errors map to the wire in one place: :func:`mlsockets.events.error_for` for events,
:class:`Refusal` close codes for connections.
"""

from __future__ import annotations

import atexit
import logging
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from mlsockets import metrics
from mlsockets.auth import Principal
from mlsockets.broadcast.base import (
    Broadcaster,
    BroadcastUnavailable,
    Channel,
    ConnectionTarget,
    Tag,
    Target,
    User,
    addressed,
)
from mlsockets.broadcast.local import LocalBroadcaster
from mlsockets.channels.authorizers import ChannelAuthorizers
from mlsockets.channels.membership import Membership
from mlsockets.channels.names import ChannelKind, InvalidChannel, parse_channel
from mlsockets.channels.presence import Member, Presence
from mlsockets.events import ErrorBudget, ErrorInfo, EventRouter, TokenBucket, error_for
from mlsockets.exceptions import Forbidden, InvalidState, MLSocketsError, Unauthorized
from mlsockets.formatters.base import Formatter
from mlsockets.formatters.envelope import (
    ClientEnvelope,
    EnvelopeError,
    error_envelope,
    event_envelope,
    parse_client,
    reply_envelope,
)
from mlsockets.registry.local import LocalRegistry
from mlsockets.scheduling import Scheduler
from mlsockets.typing import ChannelName, ConnectionId, Message, UserId

__all__ = ["ClusterPresence", "Connection", "HubOptions", "Hub", "PresenceHook", "Refusal"]

logger = logging.getLogger("mlsockets.hub")

GOING_AWAY = 1001
POLICY_VIOLATION = 1008
INTERNAL_ERROR = 1011


#: ``hook(channel, user_id, info)``: a cluster presence asks the hub to announce a member.
PresenceHook = Callable[[ChannelName, UserId, Mapping[str, object]], None]


class ClusterPresence(Protocol):
    """What the hub needs to make its registry and presence cluster-wide (implemented by
    :class:`mlsockets.registry.redis.RedisRegistry`; none in a single process).

    Presence is counted per node here: the hub calls :meth:`join` when a user's first local
    connection enters a presence channel, and :meth:`leave` when their last local one left it
    (after the grace period); the cluster answers whether that changed the cluster's member
    list, and only then is ``mls.joined`` / ``mls.left`` announced. None of these methods
    raises when the cluster's store is unreachable: ``join``/``leave`` then return True and
    ``members``/``count_user`` None, so the hub falls back to what it knows locally.

    Call protocol: the hub calls :meth:`attach` once, from its constructor, with its
    announcers (for members that joined or left through another node's failure or recovery:
    a dead node's members purged by this one, for instance) and ``on_refresh``, which sends
    every local member of a presence channel the current member list (``mls.presence``)
    after the cluster lost events; they may be called from the cluster's own thread (a
    greenlet in a gevent-patched process).
    """

    def attach(
        self, on_joined: PresenceHook, on_left: PresenceHook, on_refresh: Callable[[], None]
    ) -> None: ...

    def connection_added(self, conn_id: ConnectionId, user_id: UserId | None) -> None: ...

    def connection_removed(self, conn_id: ConnectionId, user_id: UserId | None) -> None: ...

    def count_user(self, user_id: UserId) -> int | None: ...

    def join(self, channel: ChannelName, user_id: UserId, info: Mapping[str, object]) -> bool: ...

    def leave(self, channel: ChannelName, user_id: UserId) -> bool: ...

    def members(self, channel: ChannelName) -> list[Member] | None: ...


class Connection(Protocol):
    """What the hub needs of a client connection (the transport implements it)."""

    @property
    def id(self) -> ConnectionId: ...

    @property
    def principal(self) -> Principal: ...

    @property
    def formatter(self) -> Formatter: ...

    def send(self, message: Message) -> None:
        """Queue one complete encoded message; never blocks."""

    def close(self, code: int, reason: str) -> None:
        """Start closing the connection with ``code``."""


@dataclass(frozen=True, slots=True)
class HubOptions:
    """Limits and behaviour of a hub.

    Attributes:
        heartbeat: the application-level heartbeat announced in ``mls.welcome`` (None: off):
            clients send ``mls.ping`` at this interval (the hub answers ``mls.pong``) to
            notice a dead server, which a browser cannot do with RFC 6455 pings. The
            transport's own pings (``ServerOptions.ping_interval``) are independent.
        rate: sustained messages per second allowed per connection.
        burst: messages allowed in a burst above ``rate``.
        rate_strikes: consecutive rate-limited messages tolerated (each gets
            ``rate_limited``) before the connection is closed with 1008.
        max_bad_envelopes: malformed envelopes tolerated within ``bad_window`` seconds
            before the connection is closed with 1008.
        max_connections_per_user: None for no limit.
        max_channels_per_connection: subscriptions one connection may hold.
        presence_grace: seconds a user stays present after their last connection left, so
            a quick reconnect does not flap ``mls.left`` / ``mls.joined`` (needs a scheduler).
    """

    heartbeat: float | None = 20.0
    rate: float = 100.0
    burst: int = 200
    rate_strikes: int = 20
    max_bad_envelopes: int = 10
    bad_window: float = 60.0
    max_connections_per_user: int | None = None
    max_channels_per_connection: int = 256
    presence_grace: float = 0.0


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why :meth:`Hub.connect` refused: close the connection with ``code`` and ``reason``."""

    code: int
    reason: str


@dataclass(slots=True)
class _Session:
    conn: Connection
    bucket: TokenBucket
    budget: ErrorBudget
    strikes: int = 0
    presence: dict[ChannelName, UserId] = field(default_factory=dict)
    closing: bool = False  # the hub closed it: its later messages are ignored
    opened: float = field(default_factory=time.monotonic)  # for the log line at its close


SendMany = Callable[[Iterable[Connection], Message], None]


def _send_each(connections: Iterable[Connection], message: Message) -> None:
    """Hand ``message`` to every connection. A connection class may offer a class-level
    ``send_bulk(connections, message)`` to do it in one go (the gevent transport then also
    serializes the frame once); classes without one get ``send`` per connection."""
    by_class: dict[type, list[Connection]] = {}
    for conn in connections:
        by_class.setdefault(type(conn), []).append(conn)
    for cls, group in by_class.items():
        bulk = getattr(cls, "send_bulk", None)
        if bulk is not None:
            bulk(group, message)
        else:
            for conn in group:
                conn.send(message)


class Hub:
    """One process's view of every connection, channel and event handler.

    Args:
        router: event handlers and connect/disconnect hooks.
        authorizers: channel authorizers.
        broadcaster: carries emits (default: this process only).
        cluster: cluster-wide registry and presence; default: the broadcaster's ``cluster``
            attribute when it has one (``RedisBroadcaster.from_url`` builds one), else none.
        scheduler: timers for the presence grace period.
        clock: monotonic seconds, for rate limits.
        send_many: delivers one encoded message to many connections.
    """

    def __init__(
        self,
        router: EventRouter | None = None,
        authorizers: ChannelAuthorizers | None = None,
        *,
        broadcaster: Broadcaster | None = None,
        cluster: ClusterPresence | None = None,
        scheduler: Scheduler | None = None,
        clock: Callable[[], float] = time.monotonic,
        options: HubOptions | None = None,
        send_many: SendMany = _send_each,
    ) -> None:
        # "is None", not "or": an empty ChannelAuthorizers has len() 0 and is falsy, and the
        # application registers its authorizers on that very object after creating the hub.
        self.router = router if router is not None else EventRouter()
        self.authorizers = authorizers if authorizers is not None else ChannelAuthorizers()
        self.options = options or HubOptions()
        self.registry: LocalRegistry[Connection] = LocalRegistry()
        self.membership = Membership()
        self.presence = Presence(
            scheduler if self.options.presence_grace > 0 else None,
            grace=self.options.presence_grace,
            on_left=self._presence_left,
        )
        self.broadcaster: Broadcaster = (
            broadcaster if broadcaster is not None else LocalBroadcaster()
        )
        self.broadcaster.attach(self._deliver)
        self._clock = clock
        self._send_many = send_many
        self._sessions: dict[ConnectionId, _Session] = {}
        # Connections whose connect hooks are running: they may join rooms already.
        self._connecting: set[ConnectionId] = set()
        # Presence channels their connect hooks joined: channel -> member info.
        self._pending_presence: dict[ConnectionId, dict[ChannelName, dict[str, object]]] = {}
        self._closed = False
        self.last_refusal: Refusal | None = None
        #: The cluster-wide registry and presence, or None (this process only).
        self.cluster: ClusterPresence | None = (
            cluster if cluster is not None else getattr(self.broadcaster, "cluster", None)
        )
        if self.cluster is not None:
            self.cluster.attach(self._cluster_joined, self._announce_left, self._refresh_presence)

    # -- life cycle ----------------------------------------------------------------------

    def connect(self, conn: Connection) -> bool:
        """Register ``conn``, run the connect hooks and send ``mls.welcome``.

        Returns False when a limit or a connect hook refused it; :attr:`last_refusal` then
        says how to close it (the adapter closes; the hub has forgotten the connection).
        """
        if self._closed:
            self.last_refusal = Refusal(GOING_AWAY, "server shutting down")
            return False
        principal = conn.principal
        limit = self.options.max_connections_per_user
        if limit is not None and principal.user_id is not None:
            count = self.cluster.count_user(principal.user_id) if self.cluster else None
            if count is None:
                count = self.registry.count_user(principal.user_id)
            if count >= limit:
                self.last_refusal = Refusal(POLICY_VIOLATION, "too many connections")
                return False
        refusal: Refusal | None = None
        self._connecting.add(conn.id)
        try:
            self.router.run_connect(conn)
        except (Unauthorized, Forbidden) as exc:
            refusal = Refusal(POLICY_VIOLATION, exc.message)
        except Exception as exc:  # a bug in a hook: logged by error_for, never shown
            error_for(exc)
            refusal = Refusal(INTERNAL_ERROR, "internal error")
        finally:
            self._connecting.discard(conn.id)
        pending = self._pending_presence.pop(conn.id, {})
        if refusal is not None:
            # Forget the rooms a hook joined before the connection was refused.
            for channel in self.membership.leave_all(conn.id):
                if not self.membership.count(channel):
                    self.broadcaster.channel_removed(channel)
            logger.info("connection %s refused: %s (%d)", conn.id, refusal.reason, refusal.code)
            self.last_refusal = refusal
            return False
        opts = self.options
        self.registry.add(conn)
        self._sessions[conn.id] = _Session(
            conn,
            TokenBucket(opts.rate, opts.burst, self._clock),
            ErrorBudget(opts.max_bad_envelopes, opts.bad_window, self._clock),
        )
        welcome = {
            "connection_id": conn.id,
            "heartbeat": opts.heartbeat,
            "user_id": principal.user_id,
        }
        self._send(conn, event_envelope("mls.welcome", welcome))
        logger.info("connection %s open (user %s)", conn.id, principal.user_id)
        if self.cluster is not None:  # after the welcome: this may yield to a relay delivery
            self.cluster.connection_added(conn.id, principal.user_id)
        session = self._sessions.get(conn.id)
        for channel, info in pending.items():  # presence rooms a connect hook joined
            if session is None or not self.membership.is_member(channel, conn.id):
                continue  # left again (by the hook, or gone while the cluster answered)
            self._enter_presence(session, channel, info)
        return True

    def disconnect(self, conn: Connection) -> None:
        """Forget ``conn``: leave its channels (``mls.left`` where due), run the hooks."""
        session = self._sessions.pop(conn.id, None)
        if session is None:
            return
        logger.info(
            "connection %s closed (user %s, code %s, %.1f s)",
            conn.id,
            conn.principal.user_id,
            getattr(conn, "close_code", None),  # the transport's close code, when it has one
            time.monotonic() - session.opened,
        )
        for channel in self.membership.leave_all(conn.id):
            self._channel_left(conn, channel, session)
        self.registry.remove(conn)
        if self.cluster is not None:
            self.cluster.connection_removed(conn.id, conn.principal.user_id)
        self.router.run_disconnect(conn)

    def close(self) -> None:
        """Shut the hub down; the server (or the adapter) calls it once it closed its
        connections. Safe to call twice.

        Cancels every pending presence grace timer, so none fires into a hub whose server
        is gone (members in their grace period are forgotten here without ``mls.left``:
        this process has no client left to tell). Then closes the broadcaster when it has a
        ``close()``: a :class:`~mlsockets.broadcast.redis.RedisBroadcaster` deregisters this
        node, and the other processes announce ``mls.left`` for the members only this node
        had (its grace-period ones included) at once instead of after the node's TTL.

        Afterwards :meth:`connect` refuses with 1001, and a connection that still
        disconnects leaves presence without a timer and without an announcement.
        """
        if self._closed:
            return
        self._closed = True
        self.presence.close()
        close = getattr(self.broadcaster, "close", None)
        if callable(close):
            close()

    def close_at_exit(self) -> None:
        """Have :meth:`close` run when the interpreter exits (after ``mlsockets serve`` or a
        gunicorn worker returned, their connections closed). Keeps only a weak reference:
        a hub that was garbage-collected meanwhile is not kept alive for it."""
        atexit.register(_close_at_exit, weakref.ref(self))

    # -- incoming ------------------------------------------------------------------------

    def receive(self, conn: Connection, message: Message) -> None:
        """Handle one message from ``conn``: decode, route, answer."""
        session = self._sessions.get(conn.id)
        if session is None or session.closing:
            return
        if session.bucket.allow():
            session.strikes = 0  # strikes count consecutive refusals: a burst now and then is fine
        else:
            session.strikes += 1
            if session.strikes > self.options.rate_strikes:
                self._close(session, "rate limit exceeded")
                return
            # Answer the envelope's id when it has one, so that the client's ack fails now
            # rather than timing out (the message is not handled, only parsed).
            msg_id, event = _peek(conn.formatter, message)
            metrics.error_reply("rate_limited")  # metrics: error replies by code
            self._send(
                conn, error_envelope(msg_id, "rate_limited", "too many messages", event=event)
            )
            return
        try:
            envelope = parse_client(conn.formatter.decode(message))
        except EnvelopeError as exc:
            # A well-formed id is answered as a reply, so the client's ack fails at once.
            self._bad_input(session, str(exc), exc.id, exc.event)
            return
        except ValueError as exc:
            self._bad_input(session, str(exc))
            return
        event = envelope.event
        if event.startswith("mls."):
            self._system_event(session, envelope)
            return
        started = time.perf_counter()
        outcome = self.router.dispatch(conn, envelope)
        if event in self.router:  # metrics: handler latency (routed events: bounded labels)
            metrics.event_handled(event, time.perf_counter() - started)
        if outcome.error is not None:
            self._reply_error(conn, envelope, outcome.error)
        elif envelope.id is not None:
            try:
                self._send(conn, reply_envelope(envelope.id, outcome.data), strict=True)
            except (TypeError, ValueError) as exc:  # the handler returned something unencodable
                self._reply_error(conn, envelope, error_for(exc, event=event))

    def _bad_input(
        self, session: _Session, reason: str, msg_id: int | None = None, event: str | None = None
    ) -> None:
        if not session.budget.record():
            self._close(session, "too many malformed messages")
            return
        conn = session.conn
        metrics.error_reply("bad_envelope")  # metrics: error replies by code
        self._send(conn, error_envelope(msg_id, "bad_envelope", reason, event=event))

    def _system_event(self, session: _Session, envelope: ClientEnvelope) -> None:
        conn = session.conn
        event = envelope.event
        data: object
        try:
            if event == "mls.subscribe":
                data = self._subscribe(session, _channel_arg(envelope.data))
            elif event == "mls.unsubscribe":
                data = self._unsubscribe(session, _channel_arg(envelope.data))
            elif event == "mls.ping":
                if envelope.id is None:
                    self._send(conn, event_envelope("mls.pong", envelope.data))
                    return
                data = envelope.data  # with an id, the pong is the reply
            else:
                self._reply_error(
                    conn, envelope, ErrorInfo("unknown_event", f"unknown event {event!r}")
                )
                return
        except InvalidChannel as exc:
            self._reply_error(conn, envelope, ErrorInfo("invalid_channel", str(exc)))
            return
        except MLSocketsError as exc:
            self._reply_error(conn, envelope, error_for(exc))
            return
        except Exception as exc:  # an authorizer failed: the router's mapping logs it
            self._reply_error(conn, envelope, error_for(exc))
            return
        if envelope.id is not None:
            self._send(conn, reply_envelope(envelope.id, data))

    # -- channels ------------------------------------------------------------------------

    def _subscribe(self, session: _Session, name: str) -> dict[str, Any]:
        conn = session.conn
        kind, channel = parse_channel(name)
        if channel in self.membership.channels_of(conn.id):
            return self._subscribed_reply(channel, kind)
        if len(self.membership.channels_of(conn.id)) >= self.options.max_channels_per_connection:
            raise Forbidden("too many subscriptions")
        principal = conn.principal
        if kind is ChannelKind.PRESENCE and principal.user_id is None:
            raise Unauthorized("presence channels need a signed-in user")
        result = self.authorizers.authorize(principal, channel)
        if not result.allowed:
            raise Forbidden(result.reason or f"not allowed to subscribe to {channel}")
        self._join(conn, channel)
        if kind is ChannelKind.PRESENCE:
            self._enter_presence(session, channel, result.member_info or {})
        return self._subscribed_reply(channel, kind)

    def _enter_presence(
        self, session: _Session, channel: ChannelName, info: Mapping[str, object]
    ) -> None:
        """Presence bookkeeping of a connection that just joined ``channel`` (a client
        subscribe or a server-side join): member, ``mls.joined`` to the others (when this
        made the user a member of the cluster), the member list to the connection."""
        conn = session.conn
        user_id = conn.principal.user_id
        assert user_id is not None  # checked by the callers
        info = dict(info)
        session.presence[channel] = user_id
        joined = self.presence.add(channel, user_id, conn.id, info)
        if joined and self.cluster is not None:  # the user may be present on another node
            joined = self.cluster.join(channel, user_id, info)
        if joined:
            member = {"user_id": user_id, "info": info}
            self._emit_system(
                "mls.joined", {"channel": channel, "member": member}, channel, skip=conn.id
            )
        members = self._members(channel)
        self._send(conn, event_envelope("mls.presence", {"channel": channel, "members": members}))

    def _subscribed_reply(self, channel: ChannelName, kind: ChannelKind) -> dict[str, Any]:
        reply: dict[str, Any] = {"channel": channel}
        if kind is ChannelKind.PRESENCE:
            reply["members"] = self._members(channel)
        return reply

    def _members(self, channel: ChannelName) -> list[dict[str, Any]]:
        members = self.cluster.members(channel) if self.cluster is not None else None
        if members is None:
            members = self.presence.members(channel)
        return [{"user_id": uid, "info": dict(info)} for uid, info in members]

    def _unsubscribe(self, session: _Session, name: str) -> dict[str, Any]:
        _, channel = parse_channel(name)
        conn = session.conn
        if channel not in self.membership.channels_of(conn.id):
            raise _NotSubscribed(channel)
        self.membership.leave(channel, conn.id)
        self._channel_left(conn, channel, session)
        return {"channel": channel}

    def _join(self, conn: Connection, channel: ChannelName) -> None:
        if self.membership.join(channel, conn.id):
            self.broadcaster.channel_added(channel)

    def _channel_left(self, conn: Connection, channel: ChannelName, session: _Session) -> None:
        user_id = session.presence.pop(channel, None)
        if user_id is not None and not self._closed:  # closed: presence is forgotten
            info = self.presence.info(channel, user_id)
            if self.presence.remove(channel, user_id, conn.id):
                self._presence_left(channel, user_id, info)
        if not self.membership.count(channel):
            self.broadcaster.channel_removed(channel)

    def _presence_left(
        self, channel: ChannelName, user_id: UserId, info: Mapping[str, object]
    ) -> None:
        if self.cluster is not None and not self.cluster.leave(channel, user_id):
            return  # still present through another node
        self._announce_left(channel, user_id, info)

    def _announce_left(
        self, channel: ChannelName, user_id: UserId, info: Mapping[str, object]
    ) -> None:
        member = {"user_id": user_id, "info": dict(info)}
        self._emit_system("mls.left", {"channel": channel, "member": member}, channel)

    def _cluster_joined(
        self, channel: ChannelName, user_id: UserId, info: Mapping[str, object]
    ) -> None:
        member = {"user_id": user_id, "info": dict(info)}
        self._emit_system("mls.joined", {"channel": channel, "member": member}, channel)

    def _refresh_presence(self) -> None:
        """Send each local member of every presence channel the current member list."""
        for channel in self.presence.channels():
            data = {"channel": channel, "members": self._members(channel)}
            self._deliver(Channel(channel), event_envelope("mls.presence", data), None)

    def _emit_system(
        self, event: str, data: object, channel: ChannelName, skip: ConnectionId | None = None
    ) -> None:
        """Emit a system event; one the other processes cannot get is logged, not raised
        (it happens inside a subscribe or a disconnect, which must not fail for it)."""
        try:
            self.emit(event, data, to=channel, skip=skip)
        except BroadcastUnavailable as exc:
            logger.warning("%s for %s reached this process only: %s", event, channel, exc)

    def join(
        self, conn: Connection, channel: str, *, info: Mapping[str, object] | None = None
    ) -> None:
        """Put ``conn`` in ``channel`` from server code (a room): no authorization.

        Works from a connect hook too (the room is forgotten if the connection is refused);
        a connection the hub does not know, or already in the channel, is ignored.

        A presence channel gets the same bookkeeping as a client's ``mls.subscribe``: the
        user becomes a member with ``info`` (default ``{}``; an authorizer's member info
        plays this part for a subscribe), the other members get ``mls.joined`` when that
        made the user a member (of the cluster, with one), and ``conn`` gets
        ``mls.presence`` with the member list. From a connect hook, that happens right after
        the ``mls.welcome``.

        Raises:
            InvalidChannel: ``channel`` is not a valid channel name.
            InvalidState: a presence channel for an anonymous connection (presence is per
                user).
        """
        kind, name = parse_channel(channel)
        connecting = conn.id in self._connecting
        if not (conn.id in self._sessions or connecting):
            return
        if self.membership.is_member(name, conn.id):
            return
        if kind is ChannelKind.PRESENCE and conn.principal.user_id is None:
            raise InvalidState(f"{name}: presence channels need a signed-in user")
        self._join(conn, name)
        if kind is not ChannelKind.PRESENCE:
            return
        if connecting:  # the members are told once the welcome went out (connect())
            self._pending_presence.setdefault(conn.id, {})[name] = dict(info or {})
        else:
            self._enter_presence(self._sessions[conn.id], name, info or {})

    def leave(self, conn: Connection, channel: str) -> None:
        """Take ``conn`` out of ``channel`` (server code)."""
        _, name = parse_channel(channel)
        if not self.membership.is_member(name, conn.id):
            return
        self.membership.leave(name, conn.id)
        session = self._sessions.get(conn.id)
        if session is not None:
            self._channel_left(conn, name, session)
        elif not self.membership.count(name):  # left from a connect hook
            self.broadcaster.channel_removed(name)

    # -- outgoing ------------------------------------------------------------------------

    def emit(
        self,
        event: str,
        data: object = None,
        *,
        to: str | Target | None = None,
        skip: ConnectionId | None = None,
    ) -> int:
        """Send an event to ``to``: a channel name, a Target, or None for everyone.

        ``skip`` excludes one connection (the sender). Returns the local receivers.

        Raises:
            BroadcastUnavailable: with a relaying broadcaster, the other processes could not
                be reached (the local receivers got the event).
        """
        target, envelope = addressed(event, data, to)
        return self.broadcaster.publish(target, envelope, skip)

    def _resolve(self, target: Target) -> Iterable[Connection]:
        registry = self.registry
        if isinstance(target, Channel):
            members = self.membership.members(ChannelName(target.name))
            return [c for cid in members if (c := registry.get(cid)) is not None]
        if isinstance(target, User):
            return registry.by_user(UserId(target.user_id))
        if isinstance(target, ConnectionTarget):
            conn = registry.get(ConnectionId(target.connection_id))
            return [conn] if conn is not None else []
        if isinstance(target, Tag):
            return registry.by_tag(target.tag)
        return list(registry)

    def _deliver(
        self, target: Target, envelope: Mapping[str, object], skip: ConnectionId | None
    ) -> int:
        """Local delivery: encode once per formatter, hand the same bytes to each receiver."""
        by_format: dict[str, list[Connection]] = {}
        formatters: dict[str, Formatter] = {}
        for conn in self._resolve(target):
            if conn.id == skip:
                continue
            fmt = conn.formatter
            group = by_format.get(fmt.name)
            if group is None:
                group = by_format[fmt.name] = []
                formatters[fmt.name] = fmt
            group.append(conn)
        count = 0
        for name, conns in by_format.items():
            try:
                payload = formatters[name].encode(envelope)
            except (TypeError, ValueError):
                # Data this format cannot carry (NaN, bytes for JSON...): a bug in the emitter.
                logger.exception("cannot encode %r as %s", envelope.get("event"), name)
                continue
            self._send_many(conns, payload)
            count += len(conns)
        return count

    def _send(self, conn: Connection, envelope: Mapping[str, object], strict: bool = False) -> None:
        """Encode for ``conn`` and send; with ``strict``, encoding errors propagate."""
        try:
            payload = conn.formatter.encode(envelope)
        except (TypeError, ValueError):
            if strict:
                raise
            logger.exception("cannot encode %r for connection %s", envelope.get("event"), conn.id)
            return
        conn.send(payload)

    def _reply_error(
        self, conn: Connection, envelope: ClientEnvelope | None, error: ErrorInfo
    ) -> None:
        msg_id = envelope.id if envelope is not None else None
        event = envelope.event if envelope is not None and msg_id is None else None
        metrics.error_reply(error.code)  # metrics: error replies by code
        self._send(
            conn, error_envelope(msg_id, error.code, error.message, error.fields, event=event)
        )

    def _close(self, session: _Session, reason: str) -> None:
        session.closing = True
        logger.warning("closing connection %s: %s", session.conn.id, reason)
        session.conn.close(POLICY_VIOLATION, reason)

    def __len__(self) -> int:
        return len(self._sessions)


class _NotSubscribed(MLSocketsError):
    code = "not_subscribed"

    def __init__(self, channel: str) -> None:
        super().__init__(f"not subscribed to {channel}")
        self.message = f"not subscribed to {channel}"


def _close_at_exit(ref: weakref.ref[Hub]) -> None:
    hub = ref()
    if hub is None:
        return
    try:
        hub.close()
    except Exception:  # at exit, a failure must not hide the others' output
        logger.exception("closing the hub at exit failed")


def _peek(formatter: Formatter, message: Message) -> tuple[int | None, str | None]:
    """The id and event of a message, where they can be read (None otherwise)."""
    try:
        envelope = parse_client(formatter.decode(message))
    except EnvelopeError as exc:
        return exc.id, exc.event
    except ValueError:
        return None, None
    return envelope.id, envelope.event


def _channel_arg(data: object) -> str:
    if isinstance(data, Mapping):
        channel = data.get("channel")
        if isinstance(channel, str):
            return channel
    raise InvalidChannel('expected {"channel": "<name>"}')
