"""The HTTP publish API of a Flask app, at ``<MLSOCKETS_PATH>/api/publish`` (and ``/batch``).

Served when ``MLSOCKETS_PUBLISH_KEY`` or ``MLSOCKETS_PUBLISH_SECRET`` is set (see
docs/publish-api.md): a service sends ``POST /ws/api/publish`` with a JSON message and a key
or an HMAC signature, and the app's emit (:meth:`flask_mlsockets.AppState.emit`) delivers it,
through Redis or the host broadcaster to every node and worker when the app has one.

The API is WSGI middleware wrapped around ``app.wsgi_app``, in front of Flask's dispatch,
not a view. So nothing of the app runs for a publish request: no ``before_request`` or
``after_request`` hook, no session, no login manager, no CSRF protection (Flask-WTF's
``CSRFProtect`` would otherwise refuse a POST without a form token), and no WebSocket
admission (Origin, handshake rate limit, principal): the request is plain HTTP,
authenticated by the API itself. Middleware the app adds later (``ProxyFix``...) wraps it
like the rest of the app.
"""

from __future__ import annotations

import logging

from flask import Flask

from mlsockets.publish_api import PublishAPI, PublishOptions

from .settings import Settings
from .state import AppState

__all__ = ["install_publish_api", "publish_options", "publish_path"]

logger = logging.getLogger("mlsockets.flask")


def publish_path(settings: Settings) -> str:
    """``MLSOCKETS_PATH`` + ``/api/publish`` (``/api/publish`` when the path is ``/``)."""
    return settings.path.rstrip("/") + "/api/publish"


def publish_options(settings: Settings) -> PublishOptions | None:
    """The API's options from the settings; None when neither a key nor a secret is set.

    Raises:
        ConfigurationError: a key or secret shorter than 16 bytes.
    """
    if settings.publish_key is None and settings.publish_secret is None:
        return None
    return PublishOptions(
        key=settings.publish_key,
        secrets=(settings.publish_secret,) if settings.publish_secret is not None else (),
        window=settings.publish_window,
        max_body=settings.publish_max_body,
    )


def install_publish_api(app: Flask, state: AppState) -> PublishAPI | None:
    """Serve the publish API for ``app`` when its settings enable it; call once, from
    ``init_app``. Returns the API, or None when it is off.

    Raises:
        ConfigurationError: as :func:`publish_options`.
    """
    options = publish_options(state.settings)
    if options is None:
        return None
    api = PublishAPI(state.emit, options, path=publish_path(state.settings), app=app.wsgi_app)
    # Flask documents wrapping wsgi_app for middleware; setattr because mypy sees a method.
    setattr(app, "wsgi_app", api)  # noqa: B010
    logger.info(
        "HTTP publish API of app %r at %s (%s)",
        app.name,
        api.path,
        " and ".join(
            kind
            for kind, on in (("key", options.key is not None), ("signatures", options.secrets))
            if on
        ),
    )
    return api
