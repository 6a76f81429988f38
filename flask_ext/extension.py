"""The extension object: ``sockets = MLSockets(); sockets.init_app(app)``.

Flask's extension etiquette (STYLE.md, principle 9): the object never stores an app; each
app's state lives in ``app.extensions["mlsockets"]``; configuration is ``MLSOCKETS_*``, set
with ``setdefault``; several apps per process and the app factory work. Handlers, hooks and
channel authorizers are registered on the extension (usually at import time, before
``init_app``) and shared by every app it is initialised on; each app runs them in its own
contexts, with its own hub per process.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from flask import Flask, current_app

from mlsockets.auth import HandshakeRequest, Principal
from mlsockets.broadcast.base import Target
from mlsockets.channels.authorizers import Authorizer, ChannelAuthorizers
from mlsockets.events import Handler, SchemaArg
from mlsockets.exceptions import ConfigurationError
from mlsockets.hub import Connection, Hub
from mlsockets.typing import UserId

from .broadcasting import sender_id
from .cli import cli_group
from .handshake import client_view, handshake_view, legacy_refusal_hook
from .metrics import register_metrics_route
from .publishing import install_publish_api
from .routing import HandlerRegistry
from .settings import Settings, check_options, set_defaults
from .state import EXTENSION_KEY, AppState, cluster_for, get_state
from .testing import SocketTestClient, make_test_client

__all__ = ["MLSockets"]

logger = logging.getLogger("mlsockets.flask")

H = TypeVar("H", bound=Handler)
K = TypeVar("K", bound=Callable[[Any], object])
A = TypeVar("A", bound=Authorizer)
Authenticate = Callable[[HandshakeRequest], Principal | None]
AuthenticateT = TypeVar("AuthenticateT", bound=Authenticate)
UserInfo = Callable[[Any], Mapping[str, object]]
UserInfoT = TypeVar("UserInfoT", bound=UserInfo)

#: The endpoint of the main handshake route, and of the browser client's script.
ENDPOINT = "mlsockets"
CLIENT_ENDPOINT = "mlsockets_client"


@dataclass(frozen=True, slots=True)
class _ExtraRoute:
    path: str
    endpoint: str
    allow_anonymous: bool | None


class MLSockets:
    """WebSockets for Flask apps.

    Args:
        app: initialise on this app now (or call :meth:`init_app` later, once per app).
        **options: defaults for the ``MLSOCKETS_*`` config keys, by lower-case name
            (``path="/socket"``, ``allow_anonymous=True``...); the app's config wins.

    Raises:
        TypeError: an unknown option.
    """

    def __init__(self, app: Flask | None = None, **options: object) -> None:
        check_options(options)
        self._options = dict(options)
        #: Event handlers and connect / disconnect hooks, shared by every app.
        self.registry = HandlerRegistry()
        #: Channel authorizers, shared by every app.
        self.authorizers = ChannelAuthorizers()
        self._authenticate: Authenticate | None = None
        self._user_info: UserInfo | None = None
        self._routes: list[_ExtraRoute] = []
        self._apps = 0  # how many apps were initialised (no reference to any of them)
        if app is not None:
            self.init_app(app)

    # -- set-up -------------------------------------------------------------------------

    def init_app(self, app: Flask, **options: object) -> None:
        """Set the config defaults, register the handshake route(s), create the app's state.

        ``options`` override the constructor's for this app (the app's config still wins).

        Raises:
            ConfigurationError: an invalid ``MLSOCKETS_*`` value, the extension already
                initialised on ``app``, or ``MLSOCKETS_REDIS_URL`` set without the cluster layer.
            TypeError: an unknown option.
        """
        check_options(options)
        if EXTENSION_KEY in app.extensions:
            raise ConfigurationError(f"MLSockets is already initialised on app {app.name!r}")
        followed = set_defaults(app.config, {**self._options, **options})
        settings = Settings.from_config(app.config)
        cluster = cluster_for(settings, app.instance_path)
        state = AppState(self, app, settings, cluster)
        state.follow_reloads(followed)  # SIGHUP on `mlsockets serve`: origins, handshake rate
        routes = [_ExtraRoute(settings.path, ENDPOINT, None), *self._routes]
        for route in routes:
            state.add_endpoint(route.endpoint, route.path, route.allow_anonymous)
            view = handshake_view(state, route.endpoint)
            # Werkzeug routes a request with "Upgrade: websocket" to websocket rules only;
            # the plain rule answers other requests with 426.
            for websocket in (True, False):
                app.add_url_rule(
                    route.path,
                    endpoint=route.endpoint,
                    view_func=view,
                    methods=["GET"],
                    websocket=websocket,
                )
        if settings.serve_client:
            app.add_url_rule(
                settings.path.rstrip("/") + "/mlsockets.js",
                endpoint=CLIENT_ENDPOINT,
                view_func=client_view,
                methods=["GET"],
            )
        if settings.metrics_path is not None:  # Prometheus metrics (flask_mlsockets.metrics)
            register_metrics_route(app, settings.metrics_path)
        app.after_request(legacy_refusal_hook(state))
        _install_app_protocol(app, state)
        install_publish_api(app, state)  # <path>/api/publish, when a key or secret is set
        app.extensions[EXTENSION_KEY] = state
        app.cli.add_command(cli_group)  # `flask mlsockets status | emit | check`
        self._apps += 1

    def add_route(
        self, path: str, *, allow_anonymous: bool | None = None, endpoint: str | None = None
    ) -> None:
        """Another handshake endpoint into the same hub, e.g. a public one for anonymous users.

        Call it before :meth:`init_app`. ``allow_anonymous`` None follows
        ``MLSOCKETS_ALLOW_ANONYMOUS``.

        Raises:
            ConfigurationError: called after ``init_app``, or ``path`` is not absolute.
        """
        if self._apps:
            raise ConfigurationError("add_route() must be called before init_app()")
        if not path.startswith("/"):
            raise ConfigurationError(f"a route path must start with '/', not {path!r}")
        name = endpoint or f"{ENDPOINT}_{len(self._routes) + 1}"
        self._routes.append(_ExtraRoute(path, name, allow_anonymous))

    # -- registration (decorators) --------------------------------------------------------

    def on(self, event: str, schema: SchemaArg = None) -> Callable[[H], H]:
        """Register ``handler(conn, data)`` for ``event`` (decorator).

        ``data`` is ``schema.load(data)`` when a marshmallow schema (class or instance) is
        given; the return value is the ack. The handler runs in a fresh app context and a
        request context rebuilt from the handshake (module :mod:`flask_mlsockets.context`).
        """
        return self.registry.on(event, schema)

    def on_connect(self, hook: K) -> K:
        """Register ``hook(conn)``, run when a connection opens; raising ``Unauthorized`` or
        ``Forbidden`` refuses it (closed with 1008)."""
        self.registry.on_connect(hook)
        return hook

    def on_disconnect(self, hook: K) -> K:
        """Register ``hook(conn)``, run once a connection closed."""
        self.registry.on_disconnect(hook)
        return hook

    def channel(self, pattern: str, priority: int = 0) -> Callable[[A], A]:
        """Register a channel authorizer ``fn(principal, **params)`` (decorator).

        See :mod:`mlsockets.channels.authorizers`: e.g. ``@sockets.channel("private-user.{id}")``
        with ``def own(principal, id): return principal.user_id == id``. It runs in an app
        context.
        """
        return self.authorizers.channel(pattern, priority)

    def autodiscover(self, *module_names: str) -> list[str]:
        """Import modules and register their functions marked with ``mlsockets.events.on``."""
        return self.registry.autodiscover(*module_names)

    def authenticate(self, fn: AuthenticateT) -> AuthenticateT:
        """Replace the authentication rule (decorator).

        ``fn(handshake)`` gets the :class:`~mlsockets.auth.HandshakeRequest` and runs in the
        handshake's request context (``request``, ``session``, ``current_user`` work). It
        returns a :class:`~mlsockets.auth.Principal`, or None for nobody (401 unless anonymous
        connections are allowed), or raises ``Unauthorized`` / ``Forbidden``. A
        :class:`~mlsockets.tokens.TokenAuthenticator` can be passed directly.
        """
        self._authenticate = fn
        return fn

    def user_info(self, fn: UserInfoT) -> UserInfoT:
        """Set ``fn(user) -> mapping``: the public info of a Flask-Login user (decorator);
        it becomes ``Principal.info``, shown to presence channel members."""
        self._user_info = fn
        return fn

    # -- who is connecting ----------------------------------------------------------------

    def principal_for(self, handshake: HandshakeRequest) -> Principal | None:
        """The authentication rule; call it inside the handshake's request context.

        The :meth:`authenticate` hook when there is one; else, when Flask-Login is installed
        and initialised on the app and ``current_user`` is authenticated, that user
        (:meth:`principal_of`); else None (anonymous).
        """
        if self._authenticate is not None:
            principal = self._authenticate(handshake)
            if principal is not None and not isinstance(principal, Principal):
                raise TypeError(f"the authenticate hook returned {principal!r}, not a Principal")
            return principal
        user = _login_user()
        return None if user is None else self.principal_of(user)

    def principal_of(self, user: Any) -> Principal:
        """The principal of a Flask-Login user: ``str(user.get_id())`` and :meth:`user_info`."""
        info = self._user_info(user) if self._user_info is not None else {}
        return Principal(user_id=UserId(str(user.get_id())), info=info)

    # -- using it -------------------------------------------------------------------------

    def state(self, app: Flask | None = None) -> AppState:
        """The state of ``app`` (default: ``current_app``) for this extension."""
        state = get_state(app if app is not None else current_app)
        if state.extension is not self:
            raise RuntimeError("the app was initialised with another MLSockets instance")
        return state

    def hub(self, app: Flask | None = None) -> Hub:
        """The hub of ``app`` (default: ``current_app``) in this process."""
        return self.state(app).hub()

    def emit(
        self,
        event: str,
        data: object = None,
        to: str | Target | None = None,
        skip_sender: bool = False,
        *,
        app: Flask | None = None,
    ) -> int:
        """As :meth:`flask_mlsockets.broadcaster.emit`, for ``app`` or ``current_app``."""
        skip = sender_id() if skip_sender else None
        return self.state(app).emit(event, data, to=to, skip=skip)

    def join(
        self,
        conn: Connection,
        channel: str,
        *,
        info: Mapping[str, object] | None = None,
        app: Flask | None = None,
    ) -> None:
        """Put ``conn`` in ``channel`` from server code (a room): no authorization.

        For a ``presence-`` channel, ``info`` is the member's public info (default: the
        hub's default: ``{}``), as for a client's subscribe.
        """
        self.hub(app).join(conn, channel, info=info)

    def leave(self, conn: Connection, channel: str, *, app: Flask | None = None) -> None:
        """Take ``conn`` out of ``channel``."""
        self.hub(app).leave(conn, channel)

    def test_client(
        self,
        app: Flask,
        user: object = None,
        *,
        format: str = "json",
        session: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> SocketTestClient:
        """An in-memory WebSocket client of ``app``, for tests (see :mod:`.testing`).

        Args:
            user: None (anonymous), a user id, a Principal, or a Flask-Login user object;
                accepted without the handshake checks.
            format: ``"json"`` or ``"msgpack"``.
            session: what ``session`` holds in handlers (Flask-Login's keys are added).
            headers: run the real handshake with these headers instead (``user`` and
                ``session`` must then be None), e.g. ``{"Cookie": "session=..."}``.

        Raises:
            InvalidHandshake: with ``headers``, the app refused (``status`` is its HTTP status).
            ConnectionClosedError: a connect hook or a hub limit refused the connection.
        """
        return make_test_client(
            self,
            app,
            self.state(app),
            user,
            format=format,
            session_data=session,
            headers=headers,
        )


def _login_user() -> Any | None:
    """Flask-Login's authenticated ``current_user``, if Flask-Login is on the app; else None."""
    if getattr(current_app, "login_manager", None) is None:
        return None
    try:
        flask_login = importlib.import_module("flask_login")
    except ImportError:
        return None
    user = flask_login.current_user
    if user is None or not user.is_authenticated:
        return None
    getter = getattr(user, "_get_current_object", None)  # the LocalProxy's target
    return getter() if getter is not None else user


def _install_app_protocol(app: Flask, state: AppState) -> None:
    """gevent-websocket's subprotocol hook (see :mod:`flask_mlsockets.legacy`)."""
    if getattr(app, "app_protocol", None) is not None:
        logger.info("app %r has its own app_protocol hook; leaving it in place", app.name)
        return
    preferred = state.preferred_formatter.subprotocol
    paths = state.paths

    def app_protocol(path: str) -> str | None:
        return preferred if path in paths else None

    setattr(app, "app_protocol", app_protocol)  # noqa: B010 - not a Flask attribute
