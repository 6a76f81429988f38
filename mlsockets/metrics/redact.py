"""Credentials out of log lines: the access log of a WebSocket server sees tokens in URLs.

Browsers cannot set headers on a WebSocket handshake, so tokens travel in the query string
(``/ws?token=...``), and access logs are kept, shipped and read by many. The transport's
access log line (pywsgi) and gunicorn's (from the environ) go through :func:`redact_query`
and :func:`redacted_environ`. Stdlib only, like the rest of :mod:`mlsockets.metrics`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["REDACTED", "redact_query", "redacted_environ"]

REDACTED = "***"

# A query parameter whose name looks like a credential: token, access_token, api_key,
# secret, password, sig / signature, auth, session, jwt, credential(s).
_SECRET_PARAM = re.compile(
    r"""([?&][^=&\s"']*(?:token|key|secret|pass|sig|auth|session|jwt|credential)[^=&\s"']*=)"""
    r"""[^&\s"']*""",
    re.IGNORECASE,
)

_URL_KEYS = ("QUERY_STRING", "RAW_URI", "REQUEST_URI")


def redact_query(text: str) -> str:
    """``text`` (a URL, a request line, a log line) with the values of credential-like query
    parameters replaced by ``***``: ``GET /ws?token=abc&room=1`` -> ``GET /ws?token=***&room=1``.
    """
    if "=" not in text:
        return text
    return _SECRET_PARAM.sub(rf"\g<1>{REDACTED}", text)


def redacted_environ(environ: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a WSGI environ whose URL fields (``QUERY_STRING``, ``RAW_URI``,
    ``REQUEST_URI``) are redacted, for access loggers that format from the environ."""
    copy = dict(environ)
    for key in _URL_KEYS:
        value = copy.get(key)
        if isinstance(value, str) and "=" in value:
            copy[key] = (
                redact_query("?" + value)[1:] if key == "QUERY_STRING" else redact_query(value)
            )
    return copy
