"""Per-server settings of the gevent transport."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from mlsockets import config
from mlsockets.config import Settings
from mlsockets.exceptions import ConfigurationError
from mlsockets.protocol.connection import DEFAULT_MAX_MESSAGE_SIZE
from mlsockets.protocol.deflate import DeflateConfig

__all__ = ["ServerOptions"]


@dataclass(frozen=True, slots=True)
class ServerOptions:
    """How a server treats its WebSocket connections.

    Attributes:
        max_message_size: largest incoming message in bytes (1009 beyond it); None: no limit.
        max_queue: outbound bytes a connection may have waiting in user space before it
            counts as a slow consumer and is dropped (1008) with a WARNING. A single message
            larger than this is still sent when the queue was below the limit.
        ping_interval: seconds of silence from a client before the server pings it; 0 or
            None turns heartbeats off.
        ping_timeout: seconds to wait for any data after a ping before closing with 1011.
        handshake_timeout: seconds a client has to send its complete request head.
        close_timeout: seconds to wait for the peer's Close frame (and for pending output)
            before the TCP connection is closed anyway.
        compression: permessage-deflate settings, or None to refuse compression.
        shutdown_grace: seconds to let connections finish their closing handshake on
            SIGTERM / SIGINT before the process exits.
    """

    max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE
    max_queue: int = 1 << 20
    ping_interval: float | None = 20.0
    ping_timeout: float = 20.0
    handshake_timeout: float = 10.0
    close_timeout: float = 5.0
    compression: DeflateConfig | None = field(default_factory=DeflateConfig)
    shutdown_grace: float = 10.0

    def __post_init__(self) -> None:
        if self.max_message_size is not None and self.max_message_size <= 0:
            raise ConfigurationError("max_message_size must be positive or None")
        if self.max_queue <= 0:
            raise ConfigurationError("max_queue must be positive")
        for name in ("ping_timeout", "handshake_timeout", "close_timeout", "shutdown_grace"):
            if getattr(self, name) <= 0:
                raise ConfigurationError(f"{name} must be positive")
        if self.ping_interval is not None and self.ping_interval < 0:
            raise ConfigurationError("ping_interval must be >= 0")

    def replace(self, **changes: object) -> ServerOptions:
        """A copy with some settings changed (validated again)."""
        return replace(self, **changes)  # type: ignore[arg-type]

    @classmethod
    def from_settings(cls, settings: Settings) -> ServerOptions:
        """The transport's part of the process settings (:mod:`mlsockets.config`)."""
        return cls(
            max_message_size=settings.max_message_size,
            max_queue=settings.max_queue,
            ping_interval=settings.ping_interval,
            ping_timeout=settings.ping_timeout,
            handshake_timeout=settings.handshake_timeout,
            close_timeout=settings.close_timeout,
            compression=DeflateConfig() if settings.compression else None,
            shutdown_grace=settings.shutdown_grace,
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServerOptions:
        """The options of :func:`mlsockets.config.load`: the TOML file of
        ``$MLSOCKETS_CONFIG`` and the ``MLSOCKETS_*`` / ``WS_*`` variables (the gunicorn
        worker's source of settings).

        Raises:
            ConfigurationError: a bad value or an unknown ``MLSOCKETS_*`` variable; the message
                names it, where it came from and what is allowed.
        """
        return cls.from_settings(config.load(environ=environ))
