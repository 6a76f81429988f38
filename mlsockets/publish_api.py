"""The HTTP publish API: services in any language send events to WebSocket clients.

A plain WSGI application (no Flask, no gevent) in front of an injected ``publish`` callable,
the hub's or the Flask app's ``emit``. docs/publish-api.md is the protocol's reference::

    POST <path>/api/publish        {"event": "order.shipped", "data": {...}, "channel": "room:1"}
                                   (or "user", "connection", "tag"; none: everyone; "skip")
        200 {"ok": true, "received": N}
    POST <path>/api/publish/batch  {"messages": [{...}, ...]}
        200 {"ok": true, "received": N, "results": [{"ok": true, "received": n}, ...]}

Authentication, one of:

- a shared key: ``Authorization: Bearer <key>``;
- an HMAC-SHA256 signature: ``X-MLSockets-Timestamp: <Unix seconds>`` and
  ``X-MLSockets-Signature: sha256=<hex HMAC(secret, timestamp + "." + body)>``, accepted
  while the timestamp is within ``window`` seconds of the server's clock (either way), by any
  of several secrets (rotation).

Every refusal is a JSON error body shaped like the WebSocket error replies,
``{"error": {"code": ..., "message": ..., "fields"?: {...}}}``, mapped in one place
(:class:`_Refusal`): 401 ``unauthorized`` (with ``WWW-Authenticate``), 400 ``bad_request``
(unreadable body, not JSON) or ``invalid`` (field errors), 404 ``not_found``, 405
``method_not_allowed`` (with ``Allow``), 413 ``too_large``, 415 ``unsupported_media_type``,
503 ``unavailable`` (the broadcaster cannot reach the other processes), 500 ``internal``.

The checks run cheapest first, so an unauthenticated client cannot make the server read a
body: method, credentials in the headers (the key, or the timestamp's window), content type,
``Content-Length``, then the body (at most ``max_body + 1`` bytes are ever read, chunked or
not), the signature over it, the JSON, the schema, and only then the publish.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import IO, Any, NamedTuple, NoReturn, Protocol

import marshmallow
from marshmallow import fields, validate

from mlsockets.broadcast.base import (
    BroadcastUnavailable,
    ClusterUnavailable,
    ConnectionTarget,
    Tag,
    Target,
    User,
)
from mlsockets.channels.names import InvalidChannel, parse_channel
from mlsockets.events import SYSTEM_PREFIX
from mlsockets.exceptions import ConfigurationError
from mlsockets.formatters.envelope import MAX_EVENT_LENGTH
from mlsockets.tokens import MIN_SECRET_BYTES
from mlsockets.typing import ConnectionId

__all__ = [
    "BATCH_SUFFIX",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "Publish",
    "PublishAPI",
    "PublishOptions",
    "sign",
]

logger = logging.getLogger("mlsockets.publish")

TIMESTAMP_HEADER = "X-MLSockets-Timestamp"
SIGNATURE_HEADER = "X-MLSockets-Signature"
#: The batch endpoint is the publish endpoint's path plus this.
BATCH_SUFFIX = "/batch"

_TIMESTAMP_ENVIRON = "HTTP_X_MLSOCKETS_TIMESTAMP"
_SIGNATURE_ENVIRON = "HTTP_X_MLSOCKETS_SIGNATURE"
# At most 12 digits: Unix seconds until the year 33658; more is noise, not a clock.
_TIMESTAMP_RE = re.compile(r"[0-9]{1,12}")
_SIGNATURE_RE = re.compile(r"sha256=([0-9a-fA-F]{64})")
_MAX_ID = 64  # connection ids are 16 characters (mlsockets.wsgi.new_connection_id)
_MAX_NAME = 256  # user ids and tags
_READ_SIZE = 65536
_TARGET_KEYS = ("channel", "user", "connection", "tag")

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
Secret = str | bytes


class Publish(Protocol):
    """``publish(event, data, *, to=..., skip=...) -> local receivers``: ``Hub.emit``, the
    Flask extension's ``AppState.emit`` or an ``Emitter.emit``.

    Raises:
        BroadcastUnavailable: the local receivers got it, the other processes could not be
            reached (answered with 503).
    """

    def __call__(
        self,
        event: str,
        data: object = None,
        *,
        to: str | Target | None = None,
        skip: ConnectionId | None = None,
    ) -> int: ...


def sign(secret: Secret, timestamp: str | int, body: bytes) -> str:
    """The ``X-MLSockets-Signature`` value of a request: ``"sha256=" + hex HMAC-SHA256``
    keyed by ``secret`` (a ``str`` is encoded as UTF-8) over ``timestamp + "." + body``."""
    key = secret.encode("utf-8") if isinstance(secret, str) else secret
    message = str(timestamp).encode("ascii") + b"." + body
    return "sha256=" + hmac.new(key, message, hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class PublishOptions:
    """Credentials and limits of a :class:`PublishAPI`; checked at construction.

    Attributes:
        key: the shared key clients send as ``Authorization: Bearer <key>`` (None: no key).
        secrets: HMAC secrets for signed requests; any of them verifies (rotation: add the
            new one, move the services over, remove the old one). A single secret may be
            given as a str or bytes.
        window: seconds a signed request's timestamp may differ from the server's clock,
            in either direction (the replay window).
        max_body: largest request body in bytes (413 above).
        max_batch: most messages in one batch request (400 above).

    Raises:
        ConfigurationError: neither a key nor a secret, one shorter than 16 bytes, or a
            limit out of range.
    """

    key: Secret | None = field(default=None, repr=False)
    secrets: Sequence[Secret] = field(default=(), repr=False)
    window: float = 300.0
    max_body: int = 1 << 20
    max_batch: int = 100

    def __post_init__(self) -> None:
        if isinstance(self.secrets, str | bytes):  # one secret, not a list of characters
            object.__setattr__(self, "secrets", (self.secrets,))
        else:
            object.__setattr__(self, "secrets", tuple(self.secrets))
        if self.key is None and not self.secrets:
            raise ConfigurationError("the publish API needs a key or at least one secret")
        for name, value in [("key", self.key), *(("secret", s) for s in self.secrets)]:
            if value is not None and len(_bytes(value)) < MIN_SECRET_BYTES:
                raise ConfigurationError(
                    f"a publish {name} must be at least {MIN_SECRET_BYTES} bytes; "
                    "use secrets.token_urlsafe(32)"
                )
        if not self.window > 0:  # also refuses NaN
            raise ConfigurationError(f"the publish window must be > 0 seconds, not {self.window}")
        if isinstance(self.max_body, bool) or not self.max_body >= 1:
            raise ConfigurationError(f"max_body must be >= 1 byte, not {self.max_body!r}")
        if isinstance(self.max_batch, bool) or not self.max_batch >= 1:
            raise ConfigurationError(f"max_batch must be >= 1, not {self.max_batch!r}")


def _bytes(secret: Secret) -> bytes:
    return secret.encode("utf-8") if isinstance(secret, str) else secret


class _Signed(NamedTuple):
    """A signed request's timestamp (as sent) and the signature's lower-case hex digest."""

    timestamp: str
    digest: str


class _Refusal(Exception):
    """An error answer: the one place where publish failures become HTTP."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        fields: Mapping[str, object] | None = None,
        headers: Sequence[tuple[str, str]] = (),
        extra: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.headers = list(headers)
        self.body: dict[str, object] = {**_error(code, message, fields), **(extra or {})}


def _error(
    code: str, message: str, fields: Mapping[str, object] | None = None
) -> dict[str, object]:
    """An error body, shaped like the WebSocket error replies (docs/design-app.md)."""
    error: dict[str, object] = {"code": code, "message": message}
    if fields:
        error["fields"] = dict(fields)
    return {"error": error}


def _check_event(value: str) -> None:
    if value.startswith(SYSTEM_PREFIX):
        raise marshmallow.ValidationError(f"events starting with {SYSTEM_PREFIX!r} are reserved")


def _check_channel(value: str) -> None:
    try:
        parse_channel(value)
    except InvalidChannel as exc:
        raise marshmallow.ValidationError(exc.message) from None


class MessageSchema(marshmallow.Schema):
    """One message: ``event``, optional ``data``, at most one target, optional ``skip``."""

    event = fields.String(
        required=True, validate=[validate.Length(min=1, max=MAX_EVENT_LENGTH), _check_event]
    )
    data = fields.Raw(load_default=None, allow_none=True)
    channel = fields.String(validate=_check_channel)
    user = fields.String(validate=validate.Length(min=1, max=_MAX_NAME))
    connection = fields.String(validate=validate.Length(min=1, max=_MAX_ID))
    tag = fields.String(validate=validate.Length(min=1, max=_MAX_NAME))
    skip = fields.String(validate=validate.Length(min=1, max=_MAX_ID))

    @marshmallow.validates_schema
    def _one_target(self, data: dict[str, Any], **kwargs: Any) -> None:
        given = [key for key in _TARGET_KEYS if key in data]
        if len(given) > 1:
            message = f"give at most one of {', '.join(_TARGET_KEYS)}"
            raise marshmallow.ValidationError({key: [message] for key in given})


class BatchSchema(marshmallow.Schema):
    """A batch: ``{"messages": [message, ...]}`` (the count is checked before this runs)."""

    messages = fields.List(
        fields.Nested(MessageSchema), required=True, validate=validate.Length(min=1)
    )


_MESSAGE = MessageSchema()
_BATCH = BatchSchema()


class PublishAPI:
    """WSGI application answering ``POST {path}`` and ``POST {path}/batch``.

    Args:
        publish: where messages go, e.g. ``hub.emit`` (see :class:`Publish`).
        options: credentials and limits.
        path: the publish endpoint's ``PATH_INFO``.
        app: the WSGI app for every other path (default: a JSON 404).
        clock: Unix time, for the signature window.

    Thread safety: none needed; it keeps no state between requests.
    """

    def __init__(
        self,
        publish: Publish,
        options: PublishOptions,
        *,
        path: str = "/api/publish",
        app: WSGIApp | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not path.startswith("/"):
            raise ConfigurationError(f"the publish path must start with '/', not {path!r}")
        self.path = path
        self.batch_path = path + BATCH_SUFFIX
        self.options = options
        self.app = app
        self._publish = publish
        self._key_digest = (
            hashlib.sha256(_bytes(options.key)).digest() if options.key is not None else None
        )
        self._secrets = tuple(_bytes(s) for s in options.secrets)
        self._clock = clock
        challenges = []
        if options.key is not None:
            challenges.append('Bearer realm="mlsockets publish"')
        if options.secrets:
            challenges.append('MLSockets-HMAC-SHA256 realm="mlsockets publish"')
        # RFC 9110 section 11.6.1: a 401 carries at least one challenge.
        self._challenge = [("WWW-Authenticate", challenge) for challenge in challenges]

    def __repr__(self) -> str:
        # Never a credential: reprs end up in logs and tracebacks.
        key = self._key_digest is not None
        return f"<PublishAPI {self.path} key={key} secrets={len(self._secrets)}>"

    def handles(self, path: object) -> bool:
        """Whether ``path`` (a ``PATH_INFO``) is one of this API's endpoints."""
        return path == self.path or path == self.batch_path

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        path = environ.get("PATH_INFO")
        if not self.handles(path):
            if self.app is not None:
                return self.app(environ, start_response)
            return _respond(start_response, 404, _error("not_found", "not found"))
        try:
            status, body = self._handle(environ, batch=path == self.batch_path)
            headers: list[tuple[str, str]] = []
        except _Refusal as refusal:
            status, body, headers = refusal.status, refusal.body, refusal.headers
            if status in (400, 401, 413, 415):
                logger.info(
                    "publish refused (%d) for %s: %s",
                    status,
                    environ.get("REMOTE_ADDR") or "?",
                    refusal,
                )
        except Exception:
            logger.exception("publish request failed")
            status, body, headers = 500, _error("internal", "internal error"), []
        return _respond(start_response, status, body, headers)

    # -- the checks, in order -------------------------------------------------------------

    def _handle(self, environ: Mapping[str, Any], *, batch: bool) -> tuple[int, dict[str, Any]]:
        method = environ.get("REQUEST_METHOD", "GET")
        if method != "POST":
            raise _Refusal(
                405, "method_not_allowed", f"use POST, not {method}", headers=[("Allow", "POST")]
            )
        signed = self._credentials(environ)
        _check_content_type(environ.get("CONTENT_TYPE", ""))
        body = self._read_body(environ)
        if signed is not None:
            self._check_signature(signed, body)
        payload = _parse_json(body)
        if batch:
            return self._publish_batch(payload)
        message = _load(_MESSAGE, payload)
        try:
            received = self._send(message)
        except ClusterUnavailable as exc:
            raise _unavailable(exc) from None
        return 200, {"ok": True, "received": received}

    def _credentials(self, environ: Mapping[str, Any]) -> _Signed | None:
        """Check what the headers alone can prove: the key, or a signed request's timestamp.

        Returns None when the key was accepted; for a signed request, what is needed to
        check its signature once the body is read.
        """
        authorization = environ.get("HTTP_AUTHORIZATION")
        if authorization is not None and self._key_digest is not None:
            self._check_key(authorization, self._key_digest)
            return None
        timestamp = environ.get(_TIMESTAMP_ENVIRON)
        signature = environ.get(_SIGNATURE_ENVIRON)
        if self._secrets and (timestamp is not None or signature is not None):
            if timestamp is None or signature is None:
                self._unauthorized(
                    f"a signed request needs both {TIMESTAMP_HEADER} and {SIGNATURE_HEADER}"
                )
            return self._signed(timestamp.strip(), signature.strip())
        accepted = []
        if self._key_digest is not None:
            accepted.append("Authorization: Bearer <key>")
        if self._secrets:
            accepted.append(f"{TIMESTAMP_HEADER} and {SIGNATURE_HEADER}")
        self._unauthorized(f"missing credentials: send {' or '.join(accepted)}")

    def _check_key(self, authorization: str, key_digest: bytes) -> None:
        # RFC 6750 section 2.1; the scheme is case-insensitive.
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            self._unauthorized("malformed Authorization header: expected Bearer <key>")
        try:
            given = token.strip().encode("latin-1")  # WSGI decodes headers as latin-1
        except UnicodeEncodeError:
            self._unauthorized("invalid key")
        # Comparing digests also hides the key's length (compare_digest does not).
        if not hmac.compare_digest(hashlib.sha256(given).digest(), key_digest):
            self._unauthorized("invalid key")

    def _signed(self, timestamp: str, signature: str) -> _Signed:
        if not _TIMESTAMP_RE.fullmatch(timestamp):
            self._unauthorized(f"malformed {TIMESTAMP_HEADER}: expected Unix time in whole seconds")
        # Checked before the body is read (so a replay costs us no read), which tells a
        # forger the server's clock: no secret, every HTTP response's Date header says it.
        skew = self._clock() - int(timestamp)
        window = self.options.window
        if abs(skew) > window:
            direction = "old" if skew > 0 else "in the future"
            self._unauthorized(
                f"stale timestamp: {abs(skew):.0f} seconds {direction}, outside the "
                f"{window:g}-second window (check the client's clock)"
            )
        match = _SIGNATURE_RE.fullmatch(signature)
        if match is None:
            self._unauthorized(f"malformed {SIGNATURE_HEADER}: expected sha256=<64 hex digits>")
        return _Signed(timestamp, match.group(1).lower())

    def _check_signature(self, signed: _Signed, body: bytes) -> None:
        message = signed.timestamp.encode("ascii") + b"." + body
        expected = [hmac.new(key, message, hashlib.sha256).hexdigest() for key in self._secrets]
        # Every secret is tried (no early exit): the time taken says nothing about which.
        matches = [hmac.compare_digest(e, signed.digest) for e in expected]
        if not any(matches):
            self._unauthorized("invalid signature")

    def _unauthorized(self, message: str) -> NoReturn:
        raise _Refusal(401, "unauthorized", message, headers=self._challenge)

    def _read_body(self, environ: Mapping[str, Any]) -> bytes:
        """The body, never reading more than ``max_body + 1`` bytes.

        With a ``Content-Length`` over the limit nothing is read at all; without one
        (``Transfer-Encoding: chunked``) the read stops one byte past the limit.
        """
        limit = self.options.max_body
        stream: IO[bytes] = environ["wsgi.input"]
        length = environ.get("CONTENT_LENGTH") or ""
        if length:
            if not (length.isascii() and length.isdigit()):
                raise _Refusal(400, "bad_request", "invalid Content-Length", headers=_CLOSE)
            expected = int(length)
            if expected > limit:
                raise _too_large(limit)
            body = _read(stream, expected)
            if len(body) < expected:
                raise _Refusal(
                    400,
                    "bad_request",
                    "the body is shorter than its Content-Length",
                    headers=_CLOSE,
                )
            return body
        body = _read(stream, limit + 1)
        if len(body) > limit:
            raise _too_large(limit)
        return body

    # -- publishing -----------------------------------------------------------------------

    def _publish_batch(self, payload: object) -> tuple[int, dict[str, Any]]:
        limit = self.options.max_batch
        if isinstance(payload, dict):
            messages = payload.get("messages")
            # Counted before validating: a 1 MB body can hold 100,000 tiny messages.
            if isinstance(messages, list) and len(messages) > limit:
                raise _Refusal(
                    400,
                    "invalid",
                    "invalid publish request",
                    fields={"messages": [f"at most {limit} messages per batch"]},
                )
        batch = _load(_BATCH, payload)  # all or nothing: one bad message refuses the batch
        results: list[dict[str, Any]] = []
        failures: list[str] = []
        for message in batch["messages"]:
            try:
                received = self._send(message)
            except ClusterUnavailable as exc:
                refusal = _unavailable(exc)
                results.append({"ok": False, **refusal.body})
                failures.append(str(refusal))
            else:
                results.append({"ok": True, "received": received})
        total = sum(r.get("received", 0) for r in results)
        if failures:
            # Not a 200: a caller that only checks the status still sees the failure; the
            # results say which messages to send again.
            message = (
                f"{len(failures)} of {len(results)} messages could not be published to every "
                f"node: {failures[0]}"
            )
            error = _error("unavailable", message)
            return 503, {"ok": False, **error, "received": total, "results": results}
        return 200, {"ok": True, "received": total, "results": results}

    def _send(self, message: Mapping[str, Any]) -> int:
        to, described = _target(message)
        skip = message.get("skip")
        received = self._publish(
            message["event"],
            message["data"],
            to=to,
            skip=ConnectionId(skip) if skip is not None else None,
        )
        # One line per publish: never the payload, never a credential.
        logger.info(
            "published %r to %s: %d local receiver(s)", message["event"], described, received
        )
        return received


def _target(message: Mapping[str, Any]) -> tuple[str | Target | None, str]:
    if "channel" in message:
        return message["channel"], f"channel {message['channel']!r}"
    if "user" in message:
        return User(message["user"]), f"user {message['user']!r}"
    if "connection" in message:
        conn = message["connection"]
        return ConnectionTarget(conn), f"connection {conn!r}"
    if "tag" in message:
        return Tag(message["tag"]), f"tag {message['tag']!r}"
    return None, "everyone"


_CLOSE = [("Connection", "close")]


def _too_large(limit: int) -> _Refusal:
    # Connection: close, since what the client still sends is not worth reading.
    return _Refusal(413, "too_large", f"the body is larger than {limit} bytes", headers=_CLOSE)


def _unavailable(exc: ClusterUnavailable) -> _Refusal:
    delivered = exc.delivered if isinstance(exc, BroadcastUnavailable) else None
    reached = (
        f"; it reached {delivered} connection(s) of this node and no other"
        if delivered is not None
        else ""
    )
    logger.warning("publish failed: the broadcaster is unavailable: %s", exc)
    return _Refusal(
        503,
        "unavailable",
        f"the broadcaster is unavailable ({exc}){reached}; try again later",
        headers=[("Retry-After", "1")],
        extra={"delivered": delivered},
    )


def _check_content_type(value: str) -> None:
    media_type, _, params = value.partition(";")
    if media_type.strip().lower() != "application/json":
        raise _Refusal(
            415,
            "unsupported_media_type",
            f"send Content-Type: application/json, not {value or 'none'!r}",
        )
    for param in params.split(";"):
        name, _, charset = param.partition("=")
        if name.strip().lower() == "charset" and charset.strip(' "').lower() not in (
            "utf-8",
            "utf8",
        ):
            raise _Refusal(415, "unsupported_media_type", "JSON bodies must be UTF-8")


def _read(stream: IO[bytes], size: int) -> bytes:
    """Up to ``size`` bytes: stops at ``size`` or at the end of the body."""
    chunks: list[bytes] = []
    remaining = size
    try:
        while remaining > 0:
            chunk = stream.read(min(remaining, _READ_SIZE))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
    except (OSError, ValueError) as exc:  # a client gone, a malformed chunk
        raise _Refusal(
            400, "bad_request", f"the body could not be read: {exc}", headers=_CLOSE
        ) from None
    return b"".join(chunks)


def _parse_json(body: bytes) -> object:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise _Refusal(400, "bad_request", "the body is not UTF-8") from None
    if not text.strip():
        raise _Refusal(400, "bad_request", "the body is empty: send a JSON object")
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
        raise _Refusal(400, "bad_request", f"the body is not valid JSON: {exc}") from None


def _refuse_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")  # NaN, Infinity: no client could decode them


def _load(schema: marshmallow.Schema, payload: object) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise _Refusal(400, "invalid", "the body must be a JSON object")
    try:
        loaded: dict[str, Any] = schema.load(payload)
    except marshmallow.ValidationError as exc:
        raise _Refusal(
            400, "invalid", "invalid publish request", fields=_field_errors(exc.messages)
        ) from None
    return loaded


def _field_errors(messages: object) -> dict[str, object]:
    if isinstance(messages, dict):
        return {str(key): value for key, value in messages.items()}
    return {marshmallow.exceptions.SCHEMA: messages}


def _respond(
    start_response: Callable[..., Any],
    status: int,
    body: Mapping[str, object],
    headers: Iterable[tuple[str, str]] = (),
) -> list[bytes]:
    payload = json.dumps(body, separators=(",", ":")).encode("utf-8") + b"\n"
    start_response(
        f"{status} {HTTPStatus(status).phrase}",
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(payload))),
            ("Cache-Control", "no-store"),
            *headers,
        ],
    )
    return [payload]
