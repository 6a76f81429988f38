"""Handlers registered once on the extension, run in each app's own Flask contexts.

:class:`HandlerRegistry` holds what ``@sockets.on``, ``@sockets.on_connect`` and
``@sockets.on_disconnect`` registered, for every app the extension is initialised on (also
handlers registered after ``init_app``: apps read the registry at each call). Each app's hub
gets an :class:`AppRouter` and an :class:`AppAuthorizers`, which run those functions inside
that app's contexts (:class:`~flask_mlsockets.context.ContextRunner`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import marshmallow

from mlsockets.auth import Principal
from mlsockets.channels.authorizers import Authorizer, AuthResult, ChannelAuthorizers
from mlsockets.events import ErrorInfo, EventRouter, Handler, Hook, Outcome, SchemaArg, error_for
from mlsockets.exceptions import InvalidState
from mlsockets.formatters.envelope import ClientEnvelope

from .context import ContextRunner

__all__ = ["AppAuthorizers", "AppRouter", "HandlerRegistry", "Route"]

logger = logging.getLogger("mlsockets.flask")


@dataclass(frozen=True, slots=True)
class Route:
    """One event's handler and its schema (an instance, or None)."""

    handler: Handler
    schema: marshmallow.Schema | None

    def run(self, conn: Any, data: Any) -> object:
        if self.schema is not None:
            data = self.schema.load(data)
        return self.handler(conn, data)


class HandlerRegistry(EventRouter):
    """The extension's handlers and hooks, shared by all its apps; never given to a hub.

    It is an :class:`~mlsockets.events.EventRouter` so that registration is checked exactly as
    the core checks it (event names, duplicates, schemas) and ``autodiscover`` works as
    documented there; :attr:`routes` and the hook lists are what the apps' routers read.
    """

    def __init__(self) -> None:
        super().__init__()
        self.routes: dict[str, Route] = {}
        self.connect_hooks: list[Hook] = []
        self.disconnect_hooks: list[Hook] = []

    def add(self, event: str, handler: Handler, schema: SchemaArg = None) -> None:
        """See :meth:`EventRouter.add`; a schema class is instantiated once, here."""
        instance: marshmallow.Schema | None
        if schema is None or isinstance(schema, marshmallow.Schema):
            instance = schema
        elif isinstance(schema, type) and issubclass(schema, marshmallow.Schema):
            instance = schema()
        else:
            raise TypeError(
                f"schema must be a marshmallow Schema class or instance, not {schema!r}"
            )
        super().add(event, handler, instance)
        self.routes[event] = Route(handler, instance)

    def on_connect(self, hook: Any) -> Any:
        """Add ``hook(conn)``, run (in the app's contexts) when a connection opens."""
        self.connect_hooks.append(hook)
        return hook

    def on_disconnect(self, hook: Any) -> Any:
        """Add ``hook(conn)``, run (in the app's contexts) once a connection closed."""
        self.disconnect_hooks.append(hook)
        return hook


class AppRouter(EventRouter):
    """The router of one app's hub: the registry's functions, each call in fresh contexts.

    Same contract as :class:`~mlsockets.events.EventRouter` (the hub cannot tell the
    difference): :meth:`dispatch` never raises, connect hooks may refuse, disconnect hooks
    are logged and skipped when they fail. Registering on it directly is refused: register
    on the extension, which serves every app.
    """

    def __init__(self, registry: HandlerRegistry, runner: ContextRunner) -> None:
        super().__init__()
        self._registry = registry
        self._runner = runner

    def add(self, event: str, handler: Handler, schema: SchemaArg = None) -> None:
        raise InvalidState("register event handlers on the MLSockets extension (@sockets.on)")

    @property
    def events(self) -> tuple[str, ...]:
        return self._registry.events

    def __contains__(self, event: object) -> bool:
        return event in self._registry

    def run_connect(self, conn: Any) -> None:
        """Run the connect hooks in one fresh context; Unauthorized / Forbidden refuse."""
        if self._registry.connect_hooks:
            self._runner.call(conn, "on_connect", self._connect_hooks_of, conn)

    def _connect_hooks_of(self, conn: Any) -> None:
        for hook in list(self._registry.connect_hooks):
            hook(conn)

    def run_disconnect(self, conn: Any) -> None:
        """Run every disconnect hook in one fresh context; failures are logged."""
        if not self._registry.disconnect_hooks:
            return
        try:
            self._runner.call(conn, "on_disconnect", self._disconnect_hooks_of, conn)
        except Exception:  # the context itself failed (a teardown function)
            logger.exception("disconnect hooks of connection %s failed", getattr(conn, "id", "?"))

    def _disconnect_hooks_of(self, conn: Any) -> None:
        for hook in list(self._registry.disconnect_hooks):
            try:
                hook(conn)
            except Exception:
                logger.exception("disconnect hook %r failed", hook)

    def dispatch(self, conn: Any, envelope: ClientEnvelope) -> Outcome:
        """Validate and run the event's handler inside fresh contexts; see EventRouter."""
        event = envelope.event
        route = self._registry.routes.get(event)
        if route is None:
            return Outcome(error=ErrorInfo("unknown_event", f"unknown event {event!r}"))
        try:
            result = self._runner.call(conn, event, route.run, conn, envelope.data)
        except Exception as exc:
            return Outcome(error=error_for(exc, event=event))
        return Outcome(data=result)


class AppAuthorizers(ChannelAuthorizers):
    """The channel authorizers of one app's hub: the extension's, run in an app context.

    Authorizers get the principal and the pattern's parameters (no connection), so they run
    in an app context (``current_app``, ``g``, database sessions) but not a request context.
    """

    def __init__(self, shared: ChannelAuthorizers, runner: ContextRunner) -> None:
        super().__init__()
        self._shared = shared
        self._runner = runner

    def add(self, pattern: str, fn: Authorizer, priority: int = 0) -> None:
        raise InvalidState(
            "register channel authorizers on the MLSockets extension (@sockets.channel)"
        )

    def authorize(self, principal: Principal, channel: str) -> AuthResult:
        return self._runner.app_call(self._shared.authorize, principal, channel)

    def __len__(self) -> int:
        return len(self._shared)

    def __bool__(self) -> bool:  # never replaced by a default because it is empty
        return True
