"""When and how soon the envelope client reconnects (pure: no I/O, no clock).

:class:`Backoff` spaces the attempts: capped exponential growth with "full jitter" (each
delay is drawn uniformly between 0 and the capped exponential value), so that clients
dropped together by a restarting server do not come back in lockstep. :func:`retryable`
decides whether an error is worth another attempt.
"""

from __future__ import annotations

import random
import ssl
from collections.abc import Callable
from dataclasses import dataclass

from mlsockets.exceptions import (
    ConfigurationError,
    ConnectionClosed,
    InvalidHandshake,
    ProtocolError,
)

__all__ = ["Backoff", "FATAL_CLOSE_CODES", "RETRYABLE_STATUSES", "retryable"]

#: Close codes after which reconnecting would only repeat the failure (RFC 6455 section
#: 7.4.1): protocol error, unsupported data, invalid data, policy violation (the server
#: refused us: rate limited, access revoked, slow consumer), missing extension.
FATAL_CLOSE_CODES = frozenset({1002, 1003, 1007, 1008, 1010})

#: HTTP statuses of a refused handshake that may succeed later; any other refusal (401,
#: 403, 404 ...) stops the reconnection.
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delays between reconnection attempts.

    Attributes:
        initial: the cap of the first delay, in seconds (the first attempt after a drop
            also waits a random fraction of it).
        maximum: the largest cap, in seconds.
        factor: growth of the cap per failed attempt.
        max_attempts: consecutive failed attempts before giving up; None: never give up.
    """

    initial: float = 0.5
    maximum: float = 30.0
    factor: float = 2.0
    max_attempts: int | None = None

    def __post_init__(self) -> None:
        if self.initial < 0 or self.maximum < self.initial or self.factor < 1:
            raise ConfigurationError("Backoff needs 0 <= initial <= maximum and factor >= 1")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ConfigurationError("Backoff.max_attempts must be at least 1 (or None)")

    def cap(self, failures: int) -> float:
        """The largest delay after ``failures`` consecutive failed attempts."""
        # Cap the exponent first: factor ** failures overflows a float after ~1000 failures.
        growth = self.factor ** min(failures, 64)
        return min(self.maximum, self.initial * growth)

    def delay(self, failures: int, rand: Callable[[], float] = random.random) -> float:
        """A delay drawn uniformly in ``[0, cap(failures)]`` ("full jitter")."""
        return self.cap(failures) * rand()


def retryable(exc: BaseException) -> bool:
    """Whether reconnecting after ``exc`` may succeed.

    Yes for network errors and timeouts, closes other than :data:`FATAL_CLOSE_CODES`, a
    server that broke the protocol, and refusals with a status in
    :data:`RETRYABLE_STATUSES`; a normal close (1000 / 1001, e.g. a rolling restart) too.
    No for certificate errors and other refusals (bad credentials stay bad).
    """
    if isinstance(exc, InvalidHandshake):
        return exc.status in RETRYABLE_STATUSES
    if isinstance(exc, ConnectionClosed):
        return exc.code not in FATAL_CLOSE_CODES
    if isinstance(exc, ssl.SSLCertVerificationError):
        return False
    return isinstance(exc, (OSError, ProtocolError))
