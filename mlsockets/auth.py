"""Who is connecting, and the seam between a WSGI app and the server that upgrades.

Values here cross layers, so they are immutable. :class:`Upgrade` is the protocol an adapter
(the gevent handler) offers in ``environ["mlsockets.upgrade"]``; the application (a Flask
view, or any WSGI app) decides with it: accept, or return an ordinary HTTP response.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from types import MappingProxyType
from typing import Protocol
from urllib.parse import parse_qsl

from mlsockets.typing import Message, UserId

__all__ = [
    "Principal",
    "ANONYMOUS",
    "HandshakeRequest",
    "RawWebSocket",
    "Upgrade",
    "UPGRADE_ENVIRON_KEY",
    "SCHEDULER_ENVIRON_KEY",
]

#: Where an mlsockets server puts the :class:`Upgrade` for a WebSocket handshake request.
UPGRADE_ENVIRON_KEY = "mlsockets.upgrade"
#: Where it puts a :class:`mlsockets.scheduling.Scheduler` running on the server's event loop.
SCHEDULER_ENVIRON_KEY = "mlsockets.scheduler"


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated party behind a connection, fixed at the handshake.

    Attributes:
        user_id: the application's user id, or None for an anonymous connection.
        info: public information about the user (shown to presence channel members).
        tags: labels the application can address broadcasts to.
    """

    user_id: UserId | None = None
    info: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))
    tags: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if not isinstance(self.info, MappingProxyType):
            object.__setattr__(self, "info", MappingProxyType(dict(self.info)))

    @property
    def is_anonymous(self) -> bool:
        return self.user_id is None


ANONYMOUS = Principal()


@dataclass(frozen=True, slots=True)
class HandshakeRequest:
    """The parts of a handshake request an application decides on, from a plain environ."""

    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    cookies: Mapping[str, str]
    origin: str | None
    subprotocols: tuple[str, ...]
    remote_addr: str | None

    @classmethod
    def from_environ(cls, environ: Mapping[str, object]) -> HandshakeRequest:
        """Build from a WSGI environ (PEP 3333); header names are lower-cased."""
        headers = {
            key[5:].replace("_", "-").lower(): value
            for key, value in environ.items()
            if key.startswith("HTTP_") and isinstance(value, str)
        }
        cookies: dict[str, str] = {}
        try:
            jar: SimpleCookie = SimpleCookie(headers.get("cookie", ""))
            cookies = {name: morsel.value for name, morsel in jar.items()}
        except CookieError:
            pass
        protocols = headers.get("sec-websocket-protocol", "")
        remote = environ.get("REMOTE_ADDR")
        return cls(
            path=str(environ.get("PATH_INFO", "/")),
            query=MappingProxyType(dict(parse_qsl(str(environ.get("QUERY_STRING", ""))))),
            headers=MappingProxyType(headers),
            cookies=MappingProxyType(cookies),
            origin=headers.get("origin"),
            subprotocols=tuple(p.strip() for p in protocols.split(",") if p.strip()),
            remote_addr=remote if isinstance(remote, str) else None,
        )


class RawWebSocket(Protocol):
    """A blocking WebSocket connection, as an application's handler sees it."""

    @property
    def closed(self) -> bool: ...

    @property
    def subprotocol(self) -> str | None: ...

    def receive(self) -> Message | None:
        """Block until a message arrives; None once the connection is closed."""

    def send(self, message: Message, binary: bool | None = None) -> None:
        """Send a message: ``str`` as text, ``bytes`` as binary (unless ``binary`` says)."""

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake and wait (bounded) for it to finish."""

    def __iter__(self) -> Iterator[Message]: ...


class Upgrade(Protocol):
    """Offered by the server in ``environ["mlsockets.upgrade"]`` for a valid handshake.

    The WSGI application either calls :meth:`accept` or returns any HTTP response (401, 403,
    429...), which the client then receives exactly, with no 101.
    """

    @property
    def request(self) -> HandshakeRequest: ...

    @property
    def accepted(self) -> bool: ...

    def accept(
        self,
        principal: Principal | None = None,
        subprotocol: str | None = None,
        handler: Callable[[RawWebSocket], object] | None = None,
        *,
        on_message: Callable[[RawWebSocket, Message], object] | None = None,
        on_close: Callable[[RawWebSocket], object] | None = None,
        on_open: Callable[[RawWebSocket], object] | None = None,
    ) -> RawWebSocket:
        """Accept the handshake.

        With ``handler``, the 101 is sent only after the WSGI application has returned (its
        response is discarded), then ``handler(ws)`` runs in the connection's greenlet,
        outside any request context. With ``on_message`` (callback mode), the same, but no
        greenlet is held while the connection is idle: ``on_message(ws, message)`` runs in a
        worker greenlet for each message, in order, and ``on_close(ws)`` once at the end;
        ``on_open(ws)`` runs first, right after the 101 (it may send, or close to refuse).
        With neither, the 101 is sent now and the returned WebSocket is used inline,
        gevent-websocket style, until the application returns.

        Raises:
            InvalidState: already accepted, or ``subprotocol`` was not offered.
        """
