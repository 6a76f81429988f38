"""Admission of WebSocket handshakes: Origin allow-list, per-address rate limit, authentication.

Every adapter (the Flask extension, a plain WSGI app) runs the same checks in the same order
through :meth:`Admission.admit`, and turns a refusal into an HTTP response through
:meth:`Admission.status_for` and :meth:`Admission.headers_for`: the one place where the
handshake maps errors to HTTP (ARCHITECTURE.md, "Exceptions"). Call protocol, in an adapter::

    request = HandshakeRequest.from_environ(environ)
    try:
        principal = admission.admit(request)
    except MLSocketsError as exc:
        status, message = admission.status_for(exc)     # 401, 403, 429 (500 for anything else)
        return respond(status, message, admission.headers_for(exc))
    upgrade.accept(principal, ...)

Pure: no I/O; the rate limiter's time comes from an injected clock.
"""

from __future__ import annotations

import ipaddress
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from mlsockets.auth import ANONYMOUS, HandshakeRequest, Principal
from mlsockets.exceptions import ConfigurationError, Forbidden, TooManyRequests, Unauthorized

__all__ = [
    "Authenticate",
    "HandshakeCheck",
    "OriginPolicy",
    "HandshakeRateLimiter",
    "ReplaceableCheck",
    "Admission",
    "UNKNOWN_ADDRESS",
]

#: The hook that says who is connecting; None (or an anonymous Principal) is nobody.
Authenticate = Callable[[HandshakeRequest], Principal | None]

#: The rate-limit key shared by every request whose remote address is unknown.
UNKNOWN_ADDRESS = "unknown"

ORIGIN_NOT_ALLOWED = "origin not allowed"
ORIGIN_REQUIRED = "origin required"


class HandshakeCheck(Protocol):
    """A check run before authentication: returns None or raises a client-safe error."""

    def check(self, request: HandshakeRequest) -> None: ...


# --- Origin -----------------------------------------------------------------------------------

# RFC 6454 section 4: an origin's port is the scheme's default port when the URI has none, so
# "https://example.com" and "https://example.com:443" are the same origin.
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_SCHEME_RE = re.compile(r"[a-z][a-z0-9+.-]*")
# Strict on purpose, and always used with fullmatch: whitespace, controls, paths, userinfo
# and raw Unicode (browsers send IDNs as punycode) never match, so no lenient parser can
# "repair" a hostile value into an allowed one.
_AUTHORITY_RE = re.compile(
    r"(?:\[(?P<ipv6>[0-9a-f:.]+)\]|(?P<host>[a-z0-9_-][a-z0-9_.-]*))(?::(?P<port>[0-9]{1,5}))?"
)


class _Origin(NamedTuple):
    scheme: str
    host: str
    port: int | None


def _parse_authority(authority: str, default_port: int | None) -> tuple[str, int | None] | None:
    """``host[:port]`` (case-insensitive) -> (lower-case host, port); None when malformed."""
    # ASCII first: str.lower() folds some non-ASCII into ASCII (the Kelvin sign into "k").
    match = _AUTHORITY_RE.fullmatch(authority.lower()) if authority.isascii() else None
    if match is None:
        return None
    port = default_port if match["port"] is None else int(match["port"])
    if port is not None and port > 65535:
        return None
    if match["ipv6"] is None:
        return match["host"], port
    try:
        # One spelling per address: [::1] and [0:0::1] are the same host.
        return ipaddress.IPv6Address(match["ipv6"]).compressed, port
    except ValueError:
        return None


def _parse_origin(value: str) -> _Origin | None:
    """A serialized origin (RFC 6454 section 6.2), normalized; None for anything else.

    "null" (sandboxed frames, file: pages) and lists of origins are not single origins, so
    they come back as None and only the "*" policy lets them through.
    """
    if not value.isascii():  # before lower(), which folds the Kelvin sign into "k"
        return None
    scheme, separator, authority = value.partition("://")
    scheme = scheme.lower()
    if not separator or not _SCHEME_RE.fullmatch(scheme):
        return None
    parsed = _parse_authority(authority, _DEFAULT_PORTS.get(scheme))
    return None if parsed is None else _Origin(scheme, *parsed)


class OriginPolicy:
    """Which web pages may open a WebSocket to us: the CSRF defence of the handshake.

    Browsers send ``Origin`` on every WebSocket handshake and pages cannot forge it, while a
    WebSocket is exempt from the same-origin policy: without this check, any site a logged-in
    user visits can connect with the user's cookies (RFC 6455 section 10.2).

    Args:
        allowed: origins, each one of: ``"https://example.com"`` (exact; ports, case and
            default ports normalized), ``"https://*.example.com"`` (any subdomain, at any
            depth, but not ``example.com`` itself: list it too if wanted), or ``"*"`` (any
            origin, which turns the check off). A single ``str`` is one origin.
        same_origin: also allow an Origin whose host and port equal the request's ``Host``
            header (the port defaulting from the Origin's scheme). Behind a proxy that rewrites
            ``Host``, list the public origins instead.
        require: refuse requests with no ``Origin`` header. By default they pass: browsers
            always send one, so its absence means a non-browser client, which carries no
            ambient cookies worth forging (authentication still applies).

    An empty ``allowed`` without ``same_origin`` refuses every browser and admits only
    non-browser clients.

    Raises:
        ConfigurationError: an entry that is none of the forms above.
    """

    def __init__(
        self,
        allowed: Iterable[str] = (),
        *,
        same_origin: bool = False,
        require: bool = False,
    ) -> None:
        self._allow_all = False
        self._exact: set[_Origin] = set()
        self._wildcards: set[_Origin] = set()  # host holds the suffix, e.g. ".example.com"
        self._same_origin = same_origin
        self._require = require
        for entry in [allowed] if isinstance(allowed, str) else allowed:
            self._add(entry.strip())

    def _add(self, entry: str) -> None:
        if entry == "*":
            self._allow_all = True
            return
        scheme, separator, authority = entry.partition("://")
        wildcard = authority.startswith("*.")
        origin = _parse_origin(f"{scheme}{separator}{authority[2:] if wildcard else authority}")
        if origin is None:
            raise ConfigurationError(
                f"invalid allowed origin {entry!r}: expected scheme://host[:port] with no path, "
                "scheme://*.domain[:port], or *"
            )
        if wildcard:
            self._wildcards.add(origin._replace(host="." + origin.host))
        else:
            self._exact.add(origin)

    def check(self, request: HandshakeRequest) -> None:
        """Let the request through, or refuse it.

        Raises:
            Forbidden: "origin not allowed", or "origin required" with ``require=True``.
        """
        if request.origin is None:
            if self._require:
                raise Forbidden(ORIGIN_REQUIRED)
            return
        if self._allow_all:
            return
        origin = _parse_origin(request.origin)
        if origin is None or not self._allows(origin, request):
            raise Forbidden(ORIGIN_NOT_ALLOWED)

    def _allows(self, origin: _Origin, request: HandshakeRequest) -> bool:
        if origin in self._exact:
            return True
        for scheme, suffix, port in self._wildcards:
            if origin.scheme == scheme and origin.port == port and origin.host.endswith(suffix):
                return True
        if self._same_origin:
            host = request.headers.get("host")
            if host is not None:
                return _parse_authority(host, _DEFAULT_PORTS.get(origin.scheme)) == (
                    origin.host,
                    origin.port,
                )
        return False


# --- Rate limit -------------------------------------------------------------------------------


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class HandshakeRateLimiter:
    """A token bucket per remote address: ``burst`` handshakes at once, ``rate`` per second after.

    Keys are ``request.remote_addr``; requests with no address share one bucket,
    :data:`UNKNOWN_ADDRESS`. Behind a reverse proxy, the adapter must put the client's address
    in ``REMOTE_ADDR`` (e.g. werkzeug's ProxyFix), or every client shares the proxy's bucket.

    Memory is bounded by ``max_keys`` buckets, kept in least-recently-used order:

    1. A bucket idle for ``burst / rate`` seconds is full again, exactly like a new one, so
       it carries no information: on every call, such buckets are dropped from the old end
       (amortized O(1): each bucket is dropped once). At steady state the table holds only
       the addresses seen in the last ``burst / rate`` seconds.
    2. When a new address arrives and the table still holds ``max_keys`` buckets, the least
       recently used one is evicted although it is not full, and :attr:`evictions` counts it:
       that address gets its burst back early. This is the price of bounded memory, paid only
       when more than ``max_keys`` addresses are active at once (e.g. a spread-out flood).

    Thread-safe: one lock guards the table (no I/O happens under it, so it never blocks a
    greenlet for long).

    Args:
        rate: handshakes per second each address regains, > 0.
        burst: handshakes an address may make at once, >= 1.
        clock: monotonic seconds; inject a fake one in tests.
        max_keys: the most buckets kept, >= 1.

    Raises:
        ConfigurationError: at construction, for a value out of range.
    """

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ) -> None:
        if not (rate > 0 and math.isfinite(rate)):
            raise ConfigurationError(f"handshake rate must be > 0 per second, got {rate!r}")
        if burst < 1:
            raise ConfigurationError(f"handshake burst must be >= 1, got {burst!r}")
        if max_keys < 1:
            raise ConfigurationError(f"rate limiter max_keys must be >= 1, got {max_keys!r}")
        self._rate = float(rate)
        self._burst = float(burst)
        self._refill_time = burst / rate  # idle this long, any bucket is full again
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._lock = threading.Lock()
        #: Non-full buckets evicted because ``max_keys`` was reached (a metric worth alerting on).
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._buckets)

    def check(self, request: HandshakeRequest) -> None:
        """Spend one handshake from the bucket of ``request.remote_addr``.

        Raises:
            TooManyRequests: the bucket is empty; ``retry_after`` is when it holds one again.
        """
        self.hit(request.remote_addr or UNKNOWN_ADDRESS)

    def hit(self, key: str) -> None:
        """Spend one handshake from ``key``'s bucket; :meth:`check` for any other key.

        Raises:
            TooManyRequests: the bucket is empty; ``retry_after`` is when it holds one again.
        """
        with self._lock:
            now = self._clock()
            self._drop_full(now)
            bucket = self._buckets.get(key)
            if bucket is None:
                if len(self._buckets) >= self._max_keys:
                    self._buckets.popitem(last=False)
                    self.evictions += 1
                bucket = self._buckets[key] = _Bucket(self._burst, now)
            else:
                self._buckets.move_to_end(key)
                # A clock that steps back (only fakes do) refills nothing, rather than
                # rewinding ``updated`` and paying the same seconds twice later.
                if now > bucket.updated:
                    refill = (now - bucket.updated) * self._rate
                    bucket.tokens = min(self._burst, bucket.tokens + refill)
                    bucket.updated = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return
            retry_after = (1.0 - bucket.tokens) / self._rate
        raise TooManyRequests(retry_after=retry_after)

    def _drop_full(self, now: float) -> None:
        # LRU order is also ``updated`` order, so the idle buckets are all at the old end.
        # Tokens never go below 0, so ``burst / rate`` idle seconds always refill a bucket.
        while self._buckets:
            key, bucket = next(iter(self._buckets.items()))
            if now - bucket.updated < self._refill_time:
                return
            del self._buckets[key]


# --- Live replacement -------------------------------------------------------------------------


class ReplaceableCheck:
    """A :class:`HandshakeCheck` whose rule can be replaced while requests are admitted.

    The Flask extension wraps its origin policy and rate limiter in one each, so that a
    configuration reload (:func:`mlsockets.config.on_reload`) applies to the next handshake
    without rebuilding the endpoints' :class:`Admission` objects. Replacing is one attribute
    store: a request sees either the old rule or the new one, never a mix.

    Args:
        current: the rule to apply, or None for no check.
    """

    def __init__(self, current: HandshakeCheck | None) -> None:
        self.current = current

    def replace(self, current: HandshakeCheck | None) -> None:
        """Apply ``current`` (None: no check) from the next request on."""
        self.current = current

    def check(self, request: HandshakeRequest) -> None:
        """Run the current rule, if any (it raises the refusal)."""
        current = self.current
        if current is not None:
            current.check(request)


# --- Admission --------------------------------------------------------------------------------


class Admission:
    """The handshake checks of one endpoint, in a fixed order, and their mapping to HTTP.

    Args:
        origin: usually an :class:`OriginPolicy` (403); None skips the check.
        rate_limiter: usually a :class:`HandshakeRateLimiter` (429); None skips it.
        authenticate: request -> Principal, or None for nobody (401), e.g. a
            :class:`~mlsockets.tokens.TokenAuthenticator` or a function reading the session;
            it may raise :class:`~mlsockets.exceptions.Unauthorized` or ``Forbidden`` itself.
        allow_anonymous: admit requests that authenticate to nobody, as
            :data:`~mlsockets.auth.ANONYMOUS`.
        challenge: the ``WWW-Authenticate`` value sent with a 401, e.g. ``'Bearer
            realm="api"'``. RFC 9110 section 15.5.2 requires one on a 401; browsers ignore it
            on a WebSocket handshake, other HTTP clients may use it.

    Raises:
        ConfigurationError: no ``authenticate`` and ``allow_anonymous`` False, which would
            refuse every request; say ``allow_anonymous=True`` to run only the other checks.
    """

    def __init__(
        self,
        origin: HandshakeCheck | None = None,
        rate_limiter: HandshakeCheck | None = None,
        authenticate: Authenticate | None = None,
        allow_anonymous: bool = False,
        *,
        challenge: str | None = None,
    ) -> None:
        if authenticate is None and not allow_anonymous:
            raise ConfigurationError(
                "Admission with no authenticate hook refuses everyone: pass authenticate=... "
                "or allow_anonymous=True"
            )
        self._origin = origin
        self._rate_limiter = rate_limiter
        self._authenticate = authenticate
        self._allow_anonymous = allow_anonymous
        self._challenge = challenge

    def admit(self, request: HandshakeRequest) -> Principal:
        """Run the checks and return who is connecting; the adapter then accepts the upgrade.

        The order matters: the Origin check is free and refuses cross-site pages before they
        cost anything; the rate limit comes before authentication so that token guessing and
        session lookups are throttled too.

        Raises:
            Forbidden: the origin is not allowed (403), or ``authenticate`` refused.
            TooManyRequests: the address is over its rate (429).
            Unauthorized: nobody authenticated and anonymous connections are not allowed, or
                ``authenticate`` refused (401).
        """
        if self._origin is not None:
            self._origin.check(request)
        if self._rate_limiter is not None:
            self._rate_limiter.check(request)
        principal = self._authenticate(request) if self._authenticate is not None else None
        if principal is None:
            principal = ANONYMOUS
        if principal.is_anonymous and not self._allow_anonymous:
            raise Unauthorized()
        return principal

    @staticmethod
    def status_for(exc: BaseException) -> tuple[int, str]:
        """The HTTP status and client-safe body for a refusal raised by :meth:`admit`.

        Anything but ``Unauthorized``, ``Forbidden`` and ``TooManyRequests`` is a bug in a
        hook: it maps to 500 with no detail, and the adapter must log it with its traceback.
        """
        if isinstance(exc, Unauthorized | Forbidden | TooManyRequests):
            return exc.status, exc.message
        return 500, "internal server error"

    def headers_for(self, exc: BaseException) -> tuple[tuple[str, str], ...]:
        """Extra response headers for a refusal: ``Retry-After``, ``WWW-Authenticate``."""
        if isinstance(exc, TooManyRequests) and exc.retry_after is not None:
            # RFC 9110 section 10.2.3: whole seconds, rounded up so that a client that waits
            # exactly that long finds a token in its bucket.
            return (("Retry-After", str(max(1, math.ceil(exc.retry_after)))),)
        if isinstance(exc, Unauthorized) and self._challenge is not None:
            return (("WWW-Authenticate", self._challenge),)
        return ()
