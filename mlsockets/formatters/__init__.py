"""Application-level codecs (pure): envelopes, JSON, msgpack. See docs/design-app.md.

Importing this package does not import msgpack; the msgpack formatter loads it on first use.
"""

from mlsockets.formatters.base import FORMATTERS, Formatter, choose, get_formatter
from mlsockets.formatters.envelope import ClientEnvelope, EnvelopeError, parse_client

__all__ = [
    "FORMATTERS",
    "ClientEnvelope",
    "EnvelopeError",
    "Formatter",
    "choose",
    "get_formatter",
    "parse_client",
]
