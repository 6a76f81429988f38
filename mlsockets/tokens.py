"""HMAC-signed tokens that authenticate service clients at the handshake.

A token is two base64url segments (RFC 4648 section 5, without padding) joined by a dot::

    base64url(JSON payload) "." base64url(HMAC-SHA256(secret, payload segment))

The payload is a JSON object ``{"sub": user id, "exp": expiry as Unix time, "info"?: object,
"tags"?: [str], "v": 1}``. The signature covers the *encoded* payload segment, so a verifier
checks it before decoding anything: bytes nobody signed are never parsed as JSON. Any service
that holds the secret can mint tokens in any language from this paragraph alone.

Call protocol: a service mints a token with :func:`make_token` (or
:meth:`TokenAuthenticator.make_token`) and connects with ``Authorization: Bearer <token>``;
the server verifies it with :func:`verify_token`, usually through a :class:`TokenAuthenticator`
given to :class:`mlsockets.admission.Admission` as its ``authenticate`` hook. Every refusal is
an :class:`~mlsockets.exceptions.Unauthorized` whose ``message`` is safe to send back:
"missing token", "malformed token", "invalid signature" or "token expired".

Use a secret dedicated to these tokens (32 random bytes: ``secrets.token_bytes(32)``); the
format signs with the raw secret, so sharing it with another HMAC scheme would let one
scheme's signatures be replayed as the other's.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import NoReturn

from mlsockets.auth import HandshakeRequest, Principal
from mlsockets.exceptions import ConfigurationError, Unauthorized
from mlsockets.typing import UserId

__all__ = [
    "TOKEN_VERSION",
    "MIN_SECRET_BYTES",
    "MAX_PAYLOAD_BYTES",
    "DEFAULT_LEEWAY",
    "Secret",
    "make_token",
    "verify_token",
    "TokenAuthenticator",
]

Secret = str | bytes

#: The payload's ``"v"``; a verifier refuses any other version.
TOKEN_VERSION = 1
#: A shorter secret can be brute-forced from one captured token.
MIN_SECRET_BYTES = 16
#: The largest decoded payload accepted; checked on the encoded length, before decoding.
MAX_PAYLOAD_BYTES = 4096
#: Seconds a token stays valid past ``exp``, for clock skew between the minter and the server.
DEFAULT_LEEWAY = 30.0

MISSING = "missing token"
MALFORMED = "malformed token"
EXPIRED = "token expired"
INVALID_SIGNATURE = "invalid signature"

_SIGNATURE_CHARS = 43  # 32 bytes of SHA-256, unpadded base64url
_MAX_PAYLOAD_CHARS = -(-MAX_PAYLOAD_BYTES * 4 // 3)  # ceil(4/3 n): unpadded base64url length
_MAX_TOKEN_CHARS = _MAX_PAYLOAD_CHARS + 1 + _SIGNATURE_CHARS
_TOKEN_RE = re.compile(r"([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]{43})")
_CLAIMS = frozenset({"v", "sub", "exp", "info", "tags"})


def make_token(
    secret: Secret,
    user_id: str,
    *,
    ttl: float = 3600.0,
    info: Mapping[str, object] | None = None,
    tags: Iterable[str] = (),
    now: float | None = None,
) -> str:
    """Mint a token for ``user_id``, valid for ``ttl`` seconds from ``now``.

    Args:
        secret: the signing secret (a ``str`` is encoded as UTF-8), at least 16 bytes.
        user_id: becomes :attr:`Principal.user_id`.
        ttl: lifetime in seconds; keep it short when the token travels in a URL.
        info: JSON-serializable public information, becomes :attr:`Principal.info`.
        tags: becomes :attr:`Principal.tags`.
        now: the issue time as Unix time; :func:`time.time` when None.

    Raises:
        ConfigurationError: the secret is shorter than 16 bytes.
        ValueError: empty ``user_id``, non-positive ``ttl``, or a payload over 4 KiB.
        TypeError: ``tags`` is a ``str`` or holds non-strings; ``info`` is not serializable.
    """
    issued = time.time() if now is None else now
    return _make(_key(secret), user_id, ttl=ttl, info=info, tags=tags, now=issued)


def verify_token(
    secret: Secret | Sequence[Secret],
    token: str | None,
    *,
    now: float | None = None,
    leeway: float = DEFAULT_LEEWAY,
) -> Principal:
    """Check a token's signature, format and expiry, and return its :class:`Principal`.

    Args:
        secret: the secret, or several (key rotation): a token signed by any of them passes.
        token: the token as received; None or "" is a missing token.
        now: the current Unix time; :func:`time.time` when None.
        leeway: seconds a token stays valid past its ``exp`` (clock skew).

    Raises:
        Unauthorized: with a client-safe message: "missing token", "malformed token",
            "invalid signature" or "token expired".
        ConfigurationError: no secret, a secret shorter than 16 bytes, or a negative leeway.
    """
    current = time.time() if now is None else now
    return _verify(_keys(secret), token, now=current, leeway=_leeway(leeway))


class TokenAuthenticator:
    """An ``authenticate`` hook for :class:`~mlsockets.admission.Admission`: request -> Principal.

    The token is taken from the first of these sources that carries one, and only from it
    (a bad header token is refused even when the query also has one):

    1. the ``header`` (default ``Authorization: Bearer <token>``; another scheme, such as
       Basic, is ignored; a custom header may hold the bare token or ``Bearer <token>``);
    2. the ``query_param`` (default ``?token=``): browsers cannot set headers on a WebSocket,
       but URLs end up in access logs, so mint such tokens with a short ``ttl``;
    3. the ``cookie``, when one is named.

    Pass None to disable a source. With several secrets, the first signs
    (:meth:`make_token`) and any verifies: to rotate, put the new secret first, keep the old
    one until the tokens it signed have expired, then remove it.

    Raises:
        ConfigurationError: at construction, for no secret, a secret shorter than 16 bytes,
            or a negative leeway.
    """

    def __init__(
        self,
        secrets: Secret | Sequence[Secret],
        *,
        header: str | None = "authorization",
        query_param: str | None = "token",
        cookie: str | None = None,
        clock: Callable[[], float] = time.time,
        leeway: float = DEFAULT_LEEWAY,
    ) -> None:
        self._keys = _keys(secrets)
        # HandshakeRequest lower-cases header names.
        self._header = header.lower() if header else None
        self._query_param = query_param
        self._cookie = cookie
        self._clock = clock
        self._leeway = _leeway(leeway)

    def __repr__(self) -> str:
        # Never the secrets: reprs end up in logs and tracebacks.
        return (
            f"TokenAuthenticator(<{len(self._keys)} secret(s)>, header={self._header!r}, "
            f"query_param={self._query_param!r}, cookie={self._cookie!r})"
        )

    def __call__(self, request: HandshakeRequest) -> Principal:
        """Authenticate a handshake request.

        Raises:
            Unauthorized: no token in any source, or the one found does not verify.
        """
        return _verify(self._keys, self._find(request), now=self._clock(), leeway=self._leeway)

    def make_token(
        self,
        user_id: str,
        *,
        ttl: float = 3600.0,
        info: Mapping[str, object] | None = None,
        tags: Iterable[str] = (),
    ) -> str:
        """Mint a token signed with the first secret, issued at the authenticator's clock.

        Same arguments and errors as the module-level :func:`make_token`.
        """
        return _make(self._keys[0], user_id, ttl=ttl, info=info, tags=tags, now=self._clock())

    def _find(self, request: HandshakeRequest) -> str | None:
        if self._header is not None:
            value = request.headers.get(self._header)
            if value:
                token = _bearer(value, bare_allowed=self._header != "authorization")
                if token is not None:
                    return token
        if self._query_param is not None:
            value = request.query.get(self._query_param)
            if value:
                return value
        if self._cookie is not None:
            return request.cookies.get(self._cookie) or None
        return None


def _bearer(value: str, *, bare_allowed: bool) -> str | None:
    """The token of ``Bearer <token>`` (RFC 6750 section 2.1; the scheme is case-insensitive)."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() == "bearer":
        return rest.strip() or None
    return value.strip() if bare_allowed else None


def _key(secret: Secret) -> bytes:
    key = secret.encode("utf-8") if isinstance(secret, str) else secret
    if len(key) < MIN_SECRET_BYTES:
        raise ConfigurationError(
            f"a token secret must be at least {MIN_SECRET_BYTES} bytes; use secrets.token_bytes(32)"
        )
    return key


def _keys(secrets: Secret | Sequence[Secret]) -> tuple[bytes, ...]:
    # A str or bytes is itself a Sequence: it is one secret, not a list of characters.
    keys = (_key(secrets),) if isinstance(secrets, str | bytes) else tuple(map(_key, secrets))
    if not keys:
        raise ConfigurationError("at least one token secret is required")
    return keys


def _leeway(leeway: float) -> float:
    if not leeway >= 0:  # also refuses NaN
        raise ConfigurationError(f"token leeway must be >= 0 seconds, got {leeway!r}")
    return float(leeway)


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    # The caller has checked the alphabet; a length of 4n+1 still raises binascii.Error.
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(key: bytes, body: str) -> str:
    return _b64encode(hmac.new(key, body.encode("ascii"), hashlib.sha256).digest())


def _make(
    key: bytes,
    user_id: str,
    *,
    ttl: float,
    info: Mapping[str, object] | None,
    tags: Iterable[str],
    now: float,
) -> str:
    if not isinstance(user_id, str) or not user_id:
        raise ValueError("user_id must be a non-empty str")
    if not (ttl > 0 and math.isfinite(ttl)):
        raise ValueError(f"ttl must be a positive number of seconds, got {ttl!r}")
    if isinstance(tags, str):
        # A str is iterable: "admin" would silently become the tags a, d, i, m, n.
        raise TypeError("tags must be an iterable of str, not a str")
    tag_set = frozenset(tags)
    if not all(isinstance(tag, str) for tag in tag_set):
        raise TypeError("tags must be strings")
    payload: dict[str, object] = {"v": TOKEN_VERSION, "sub": user_id, "exp": now + ttl}
    if info:
        payload["info"] = dict(info)
    if tag_set:
        payload["tags"] = sorted(tag_set)
    raw = json.dumps(
        payload, separators=(",", ":"), sort_keys=True, ensure_ascii=False, allow_nan=False
    ).encode("utf-8")
    if len(raw) > MAX_PAYLOAD_BYTES:
        # Refused here so that no one mints a token that every verifier would refuse.
        raise ValueError(
            f"token payload is {len(raw)} bytes, over the {MAX_PAYLOAD_BYTES}-byte limit; "
            "keep info small"
        )
    body = _b64encode(raw)
    return f"{body}.{_sign(key, body)}"


def _verify(keys: Sequence[bytes], token: str | None, *, now: float, leeway: float) -> Principal:
    if not token:
        raise Unauthorized(MISSING)
    # The length bound comes first, so an attacker's megabyte costs one len() call.
    if len(token) > _MAX_TOKEN_CHARS:
        raise Unauthorized(MALFORMED)
    match = _TOKEN_RE.fullmatch(token)
    if match is None:
        raise Unauthorized(MALFORMED)
    body, signature = match.groups()
    # Comparing the canonical encodings (not decoded bytes) also refuses non-canonical base64
    # spellings of a valid signature, so each payload has exactly one valid token.
    if not any(hmac.compare_digest(_sign(key, body), signature) for key in keys):
        raise Unauthorized(INVALID_SIGNATURE)
    user_id, exp, info, tags = _claims(body)
    # Expiry is checked after the signature: a forger learns nothing about our clock.
    if now >= exp + leeway:
        raise Unauthorized(EXPIRED)
    return Principal(user_id=UserId(user_id), info=info, tags=tags)


def _claims(body: str) -> tuple[str, float, dict[str, object], frozenset[str]]:
    """Decode and type-check a signed payload; any surprise is a malformed token.

    Only a secret holder can get here, but a bug in another language's minter must still
    end in a clean 401, never in a server error or a half-checked Principal.
    """
    try:
        payload: object = json.loads(
            _b64decode(body).decode("utf-8"), parse_constant=_refuse_constant
        )
    except (ValueError, RecursionError):  # binascii, Unicode and JSON errors are ValueErrors
        _malformed()
    if not isinstance(payload, dict) or not payload.keys() <= _CLAIMS:
        _malformed()
    version, user_id, exp = payload.get("v"), payload.get("sub"), payload.get("exp")
    info, tags = payload.get("info", {}), payload.get("tags", [])
    # type() rather than isinstance(): True == 1 and 1.0 == 1 must not pass as version 1.
    if type(version) is not int or version != TOKEN_VERSION:
        _malformed()
    if not isinstance(user_id, str) or not user_id:
        _malformed()
    if isinstance(exp, bool) or not isinstance(exp, int | float) or not _finite(exp):
        _malformed()
    if not isinstance(info, dict):
        _malformed()
    if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        _malformed()
    return user_id, float(exp), info, frozenset(tags)


def _finite(number: float) -> bool:
    try:
        return math.isfinite(number)
    except OverflowError:  # an int beyond float range, such as 1e400 written out
        return False


def _refuse_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")  # NaN, Infinity, -Infinity


def _malformed() -> NoReturn:
    raise Unauthorized(MALFORMED) from None
