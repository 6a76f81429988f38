"""The handshake: an ordinary Flask view at ``MLSOCKETS_PATH`` (ARCHITECTURE.md, "The handshake").

By the time the view runs, Flask has opened the session through ``app.session_interface`` and
run the ``before_request`` hooks (one returning a response refuses the handshake with it).
The view then runs :class:`~mlsockets.admission.Admission`: the Origin allow-list (403), the
per-address rate limit (429), authentication (401; the rule is
:meth:`flask_mlsockets.MLSockets.principal_for`), and picks a subprotocol (400 when the client
offered none of ours). Only then it accepts: the server sends the 101 after the view returned
and its request context was popped, and the connection joins the app's hub with a snapshot
of the request for its handlers (:mod:`flask_mlsockets.context`).
"""

from __future__ import annotations

import functools
import hashlib
import io
import logging
from collections.abc import Callable, Iterable
from http import HTTPStatus
from importlib import resources

from flask import Response, abort, current_app, request, send_file, session

from mlsockets.admission import Admission
from mlsockets.auth import (
    SCHEDULER_ENVIRON_KEY,
    UPGRADE_ENVIRON_KEY,
    HandshakeRequest,
    Principal,
    Upgrade,
)
from mlsockets.exceptions import Forbidden, TooManyRequests, Unauthorized
from mlsockets.wsgi import accept_into_hub

from .context import FlaskConnection, RequestSnapshot
from .legacy import LegacySocket, close_refused, run_inline
from .state import AppState

__all__ = [
    "client_script",
    "client_view",
    "handshake_view",
    "legacy_refusal_hook",
    "plain_response",
]

logger = logging.getLogger("mlsockets.flask")

LEGACY_WEBSOCKET_KEY = "wsgi.websocket"
#: Set in the environ of a handshake accepted under gevent-websocket.
LEGACY_ACCEPTED_KEY = "mlsockets.flask.accepted"


def plain_response(status: int, message: str, headers: Iterable[tuple[str, str]] = ()) -> Response:
    """A short ``text/plain`` answer, as for every refused handshake."""
    return current_app.response_class(
        message + "\n", status=status, headers=list(headers), mimetype="text/plain"
    )


def handshake_view(state: AppState, endpoint: str) -> Callable[[], Response]:
    """The view function of the handshake endpoint ``endpoint`` of ``state``'s app."""
    admission = state.admissions[endpoint]

    def view() -> Response:
        return _handshake(state, admission)

    view.__name__ = endpoint
    return view


def _handshake(state: AppState, admission: Admission) -> Response:
    environ = request.environ
    upgrade: Upgrade | None = environ.get(UPGRADE_ENVIRON_KEY)
    if upgrade is None:
        ws = environ.get(LEGACY_WEBSOCKET_KEY)
        if ws is None:
            return plain_response(
                426, "this endpoint speaks WebSocket only", [("Upgrade", "websocket")]
            )
        return _legacy_handshake(state, admission, ws)
    state.scheduler.offer(environ.get(SCHEDULER_ENVIRON_KEY))
    handshake = upgrade.request
    principal = _admit(admission, handshake)
    if isinstance(principal, Response):
        return principal
    formatter = state.choose(handshake.subprotocols)
    if formatter is None:
        offered = ", ".join(state.settings.subprotocols)
        return plain_response(400, f"offer a subprotocol: {offered}")
    snapshot = RequestSnapshot.take(environ, session)
    accept_into_hub(
        upgrade,
        state.hub(),
        principal,
        formatter,
        make_connection=functools.partial(FlaskConnection, snapshot=snapshot),
    )
    logger.debug("accepted %s for %r", formatter.subprotocol, principal.user_id)
    # Discarded by the server, which sends its own 101; after_request hooks see this one.
    return current_app.response_class(status=101)


def _admit(admission: Admission, handshake: HandshakeRequest) -> Principal | Response:
    """The principal, or the refusal to answer with. Other exceptions (a bug in a hook, an
    ``abort()``) propagate to Flask, which answers them like any view's."""
    try:
        return admission.admit(handshake)
    except (Unauthorized, Forbidden, TooManyRequests) as exc:
        status, message = admission.status_for(exc)
        logger.debug("handshake refused: %d %s", status, message)
        return plain_response(status, message, admission.headers_for(exc))


def _legacy_handshake(state: AppState, admission: Admission, ws: object) -> Response:
    """Under gevent-websocket (see :mod:`flask_mlsockets.legacy`): the 101 was sent already;
    refusals are closed by :func:`legacy_refusal_hook`, acceptances run inline."""
    environ = request.environ
    handshake = HandshakeRequest.from_environ(environ)
    principal = _admit(admission, handshake)
    if isinstance(principal, Response):
        return principal
    formatter = state.preferred_formatter
    if formatter.subprotocol not in handshake.subprotocols:
        return plain_response(400, f"offer the subprotocol {formatter.subprotocol}")
    conn = FlaskConnection(
        principal,
        formatter,
        LegacySocket(ws, formatter.subprotocol),
        snapshot=RequestSnapshot.take(environ, session),
    )
    assert isinstance(conn.ws, LegacySocket)
    environ[LEGACY_ACCEPTED_KEY] = True
    return current_app.response_class(run_inline(state.hub(), conn, conn.ws), status=200)


def legacy_refusal_hook(state: AppState) -> Callable[[Response], Response]:
    """An ``after_request`` function: under gevent-websocket, close the connection of a
    handshake endpoint that answered anything but an acceptance: a refusal, a
    ``before_request`` hook's response (an error, a redirect to a login page...)."""

    def close_if_refused(response: Response) -> Response:
        environ = request.environ
        if (
            request.endpoint in state.admissions
            and UPGRADE_ENVIRON_KEY not in environ
            and not environ.get(LEGACY_ACCEPTED_KEY)
        ):
            ws = environ.get(LEGACY_WEBSOCKET_KEY)
            if ws is not None:
                close_refused(ws, response.status_code, _phrase(response.status_code))
        return response

    return close_if_refused


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def client_script() -> bytes | None:
    """The browser client's source, ``mlsockets/static/mlsockets.js``; None when not shipped."""
    resource = resources.files("mlsockets").joinpath("static", "mlsockets.js")
    try:
        return resource.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None


def client_view() -> Response:
    """``<path>/mlsockets.js``: the browser client, with an ETag (404 when not shipped)."""
    data = client_script()
    if data is None:
        abort(404)
    return send_file(
        io.BytesIO(data),
        mimetype="text/javascript",
        download_name="mlsockets.js",
        etag=hashlib.sha256(data).hexdigest()[:32],
        max_age=0,  # revalidate (ETag, 304): never a stale client after an upgrade
        conditional=True,
    )
