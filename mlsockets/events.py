"""The event router: handlers by event name, marshmallow validation, acks and errors.

Register handlers on an :class:`EventRouter` (``@router.on("chat.send", schema=Msg)``), or
mark them anywhere with the module-level :func:`on` and let
:meth:`EventRouter.autodiscover` import the modules. The hub decodes a message, parses the
envelope and calls :meth:`EventRouter.dispatch`, which validates ``data``, runs
``handler(conn, data)`` and returns an :class:`Outcome`: the handler's return value (the
ack ``data``) or an :class:`ErrorInfo`.

Exceptions map to error codes in one place, :func:`error_for` (the hub uses it too):

========================================  ==================================================
``marshmallow.ValidationError``           ``invalid`` with ``fields`` (marshmallow's messages)
:class:`mlsockets.ValidationError`        ``invalid`` with its message and ``fields``
:class:`~mlsockets.Unauthorized`          ``unauthorized`` with its message
:class:`~mlsockets.Forbidden`             ``forbidden`` with its message
``TooManyRequests``                       ``rate_limited`` with its message
:class:`.EnvelopeError`                   ``bad_envelope`` with its message
an ``MLSocketsError`` with a ``code``     that code (one of :data:`ERROR_CODES`) and message
anything else                             ``internal``, no detail; traceback logged (ERROR)
========================================  ==================================================

:class:`TokenBucket` and :class:`ErrorBudget` are the per-connection counters the hub uses
to answer ``rate_limited`` and to close abusive connections (1008). Time comes from an
injected clock. Nothing here does I/O.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias, TypeVar, cast

import marshmallow

from mlsockets.exceptions import (
    ConfigurationError,
    Forbidden,
    MLSocketsError,
    TooManyRequests,
    Unauthorized,
    ValidationError,
)
from mlsockets.formatters.envelope import MAX_EVENT_LENGTH, ClientEnvelope, EnvelopeError

__all__ = [
    "ERROR_CODES",
    "ErrorBudget",
    "ErrorInfo",
    "EventRouter",
    "Handler",
    "Hook",
    "Outcome",
    "RateLimiter",
    "TokenBucket",
    "error_for",
    "on",
]

logger = logging.getLogger("mlsockets.events")

#: A handler: ``handler(conn, data) -> ack data``; ``conn`` is the hub's ``Connection``.
Handler: TypeAlias = Callable[[Any, Any], object]
#: A connect / disconnect hook: ``hook(conn)``.
Hook: TypeAlias = Callable[[Any], object]
SchemaArg: TypeAlias = marshmallow.Schema | type[marshmallow.Schema] | None

H = TypeVar("H", bound=Handler)
K = TypeVar("K", bound=Hook)

SYSTEM_PREFIX = "mls."
INTERNAL = "internal"
#: Every error code a client can receive (docs/design-app.md).
ERROR_CODES = frozenset(
    {
        "bad_envelope",
        "unknown_event",
        "invalid",
        "unauthorized",
        "forbidden",
        "rate_limited",
        INTERNAL,
        "invalid_channel",
        "not_subscribed",
    }
)

_MARKS = "__mlsockets_events__"


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """An error as the client receives it (see :func:`~.envelope.error_envelope`).

    Attributes:
        code: one of :data:`ERROR_CODES`.
        message: a client-safe explanation.
        fields: per-field messages for ``invalid``, else None.
    """

    code: str
    message: str
    fields: Mapping[str, object] | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """What :meth:`EventRouter.dispatch` did: ``data`` to ack on success, or an ``error``."""

    data: object = None
    error: ErrorInfo | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def error_for(exc: Exception, *, event: str | None = None) -> ErrorInfo:
    """Map an exception from a handler, hook, schema or authorizer to the client's error.

    This is the only place that decides what a client learns about a failure. Exceptions
    that are not client errors become ``internal`` with no detail, and their traceback is
    logged at ERROR on ``mlsockets.events`` (``event`` names the event in the log); call it
    once per failure.
    """
    if isinstance(exc, marshmallow.ValidationError):
        # As marshmallow's normalized_messages() (untyped): {field: messages}.
        messages = exc.messages
        if exc.field_name == marshmallow.exceptions.SCHEMA and isinstance(messages, dict):
            return ErrorInfo("invalid", "invalid data", messages)
        return ErrorInfo("invalid", "invalid data", {exc.field_name: messages})
    if isinstance(exc, ValidationError):
        return ErrorInfo("invalid", exc.message, exc.fields or None)
    if isinstance(exc, Unauthorized):
        return ErrorInfo("unauthorized", exc.message)
    if isinstance(exc, Forbidden):
        return ErrorInfo("forbidden", exc.message)
    if isinstance(exc, TooManyRequests):
        return ErrorInfo("rate_limited", exc.message)
    if isinstance(exc, EnvelopeError):
        return ErrorInfo("bad_envelope", exc.message)
    code = getattr(exc, "code", None)
    if isinstance(exc, MLSocketsError) and code in ERROR_CODES and code != INTERNAL:
        message = getattr(exc, "message", None)
        extra = getattr(exc, "fields", None)
        return ErrorInfo(
            cast(str, code),
            message if isinstance(message, str) else str(exc),
            extra if isinstance(extra, Mapping) and extra else None,
        )
    where = f" in event {event!r}" if event is not None else ""
    logger.exception("unhandled %s%s", type(exc).__name__, where, exc_info=exc)
    return ErrorInfo(INTERNAL, "internal error")


def _check_event_name(event: str) -> None:
    if not isinstance(event, str) or not event or len(event) > MAX_EVENT_LENGTH:
        raise ValueError(f"an event name is a string of 1 to {MAX_EVENT_LENGTH} characters")
    if event.startswith(SYSTEM_PREFIX):
        raise ValueError(f"{event!r}: events starting with {SYSTEM_PREFIX!r} are reserved")


def _schema_instance(schema: SchemaArg) -> marshmallow.Schema | None:
    if schema is None or isinstance(schema, marshmallow.Schema):
        return schema
    if isinstance(schema, type) and issubclass(schema, marshmallow.Schema):
        return schema()
    raise TypeError(f"schema must be a marshmallow Schema class or instance, not {schema!r}")


@dataclass(frozen=True, slots=True)
class _Mark:
    event: str
    schema: SchemaArg


@dataclass(frozen=True, slots=True)
class _Route:
    handler: Handler
    schema: marshmallow.Schema | None


def on(event: str, schema: SchemaArg = None) -> Callable[[H], H]:
    """Mark a function as the handler of ``event``, for :meth:`EventRouter.autodiscover`.

    Only marks: nothing is registered until a router autodiscovers the function's module.
    Marks stack (one function can handle several events).

    Raises:
        ValueError: ``event`` is empty, too long or starts with ``mls.``.
    """
    _check_event_name(event)

    def mark(fn: H) -> H:
        marks: tuple[_Mark, ...] = getattr(fn, _MARKS, ())
        setattr(fn, _MARKS, (*marks, _Mark(event, schema)))
        return fn

    return mark


class EventRouter:
    """Event handlers by name, plus connect / disconnect hooks.

    Register everything at start-up, before connections arrive; then the hub calls
    :meth:`run_connect` when a connection opens, :meth:`dispatch` for each client envelope
    that is not a system event, and :meth:`run_disconnect` once it closed.
    """

    def __init__(self) -> None:
        self._routes: dict[str, _Route] = {}
        self._connect_hooks: list[Hook] = []
        self._disconnect_hooks: list[Hook] = []

    # -- registration --------------------------------------------------------------------

    def add(self, event: str, handler: Handler, schema: SchemaArg = None) -> None:
        """Register ``handler(conn, data)`` for ``event``.

        Args:
            event: 1..128 characters, not starting with ``mls.`` (reserved).
            handler: called with the connection and the data (``schema.load(data)`` when a
                schema is given); its return value is the ack ``data``.
            schema: a marshmallow ``Schema`` class (instantiated once, here) or instance.

        Raises:
            ValueError: invalid or reserved event name, or ``event`` already has a handler.
            TypeError: ``handler`` is not callable, or ``schema`` is not a Schema.
        """
        _check_event_name(event)
        if event in self._routes:
            raise ValueError(f"event {event!r} already has a handler")
        if not callable(handler):
            raise TypeError(f"handler for {event!r} is not callable: {handler!r}")
        self._routes[event] = _Route(handler, _schema_instance(schema))

    def on(self, event: str, schema: SchemaArg = None) -> Callable[[H], H]:
        """Decorator form of :meth:`add`; returns the function unchanged."""

        def register(fn: H) -> H:
            self.add(event, fn, schema)
            return fn

        return register

    def autodiscover(self, *module_names: str) -> list[str]:
        """Import modules and register the functions in them marked with :func:`on`.

        A function already registered for the same event is skipped, so a module can
        re-export another's handlers and autodiscovering twice is harmless.

        Returns:
            The events registered, in order.

        Raises:
            ConfigurationError: a module cannot be imported (the message names it).
            ValueError: a marked event already has a different handler.
        """
        registered: list[str] = []
        for name in module_names:
            try:
                module = importlib.import_module(name)
            except Exception as exc:
                raise ConfigurationError(f"cannot import event module {name!r}: {exc}") from exc
            for value in list(vars(module).values()):
                if not inspect.isfunction(value):
                    continue
                for mark in value.__dict__.get(_MARKS, ()):
                    route = self._routes.get(mark.event)
                    if route is not None and route.handler is value:
                        continue
                    self.add(mark.event, value, mark.schema)
                    registered.append(mark.event)
        logger.debug("autodiscovered %d events in %s", len(registered), ", ".join(module_names))
        return registered

    def on_connect(self, hook: K) -> K:
        """Add ``hook(conn)``, run when a connection opens (decorator; returns ``hook``).

        Hooks run in registration order. One raising ``Unauthorized`` / ``Forbidden``
        refuses the connection (see :meth:`run_connect`).
        """
        self._connect_hooks.append(hook)
        return hook

    def on_disconnect(self, hook: K) -> K:
        """Add ``hook(conn)``, run once a connection closed (decorator; returns ``hook``)."""
        self._disconnect_hooks.append(hook)
        return hook

    @property
    def events(self) -> tuple[str, ...]:
        """The registered event names, in registration order."""
        return tuple(self._routes)

    def __contains__(self, event: object) -> bool:
        return event in self._routes

    # -- running -------------------------------------------------------------------------

    def run_connect(self, conn: Any) -> None:
        """Run the connect hooks, in order, stopping at the first that raises.

        Raises:
            Unauthorized, Forbidden: a hook refused the connection; refuse it with the
                exception's (client-safe) message. The disconnect hooks must not run then.
            Exception: any other exception from a hook propagates unchanged: treat it as an
                internal error (:func:`error_for` logs it) and refuse the connection.
        """
        for hook in self._connect_hooks:
            hook(conn)

    def run_disconnect(self, conn: Any) -> None:
        """Run every disconnect hook, in order; one that raises is logged and skipped."""
        for hook in self._disconnect_hooks:
            try:
                hook(conn)
            except Exception:
                logger.exception("disconnect hook %r failed", hook)

    def dispatch(self, conn: Any, envelope: ClientEnvelope) -> Outcome:
        """Validate ``envelope.data``, run the event's handler and return the outcome.

        Never raises (``Exception`` subclasses): an unknown event (``mls.*`` included: the
        hub handles system events before calling this) gives ``unknown_event``, any failure
        the error :func:`error_for` maps it to. Send ``Outcome.data`` as the ack when
        ``envelope.id`` is not None; send the error as a reply to ``envelope.id``, or as
        ``mls.error`` naming ``envelope.event`` when there is no id.
        """
        route = self._routes.get(envelope.event)
        if route is None:
            return Outcome(error=ErrorInfo("unknown_event", f"unknown event {envelope.event!r}"))
        try:
            data: Any = envelope.data
            if route.schema is not None:
                data = route.schema.load(data)
            result = route.handler(conn, data)
        except Exception as exc:
            return Outcome(error=error_for(exc, event=envelope.event))
        return Outcome(data=result)


class TokenBucket:
    """Rate limit: ``burst`` messages at once, refilled at ``rate`` per second.

    Call :meth:`allow` once per message; False means answer ``rate_limited`` (and close the
    connection with 1008 if it keeps going). Starts full.

    Args:
        rate: tokens added per second (> 0).
        burst: bucket size (>= 1).
        clock: monotonic seconds.
    """

    __slots__ = ("rate", "burst", "_clock", "_tokens", "_last")

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if not rate > 0:
            raise ValueError(f"rate must be > 0, not {rate!r}")
        if burst < 1:
            raise ValueError(f"burst must be >= 1, not {burst!r}")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._last = clock()

    def allow(self) -> bool:
        """Take one token; False (and take nothing) when the bucket is empty."""
        now = self._clock()
        elapsed = max(0.0, now - self._last)
        self._last = now
        self._tokens = min(float(self.burst), self._tokens + elapsed * self.rate)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


#: The name docs/design-app.md uses for the per-connection message rate limiter.
RateLimiter = TokenBucket


class ErrorBudget:
    """Tolerates ``limit`` bad inputs (malformed envelopes) within a sliding ``window``.

    Call :meth:`record` for each bad input; once it returns False, close the connection
    with 1008. Memory is bounded by ``limit``.

    Args:
        limit: bad inputs allowed within ``window`` (>= 0).
        window: seconds (> 0).
        clock: monotonic seconds.
    """

    __slots__ = ("limit", "window", "_clock", "_times")

    def __init__(
        self, limit: int, window: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if limit < 0:
            raise ValueError(f"limit must be >= 0, not {limit!r}")
        if not window > 0:
            raise ValueError(f"window must be > 0, not {window!r}")
        self.limit = limit
        self.window = window
        self._clock = clock
        # The last limit + 1 bad inputs are enough to know whether the limit is exceeded.
        self._times: deque[float] = deque(maxlen=limit + 1)

    def record(self) -> bool:
        """Count one bad input; False once more than ``limit`` fall within the window."""
        now = self._clock()
        times = self._times
        times.append(now)
        horizon = now - self.window
        while times[0] <= horizon:
            times.popleft()
        return len(times) <= self.limit
