"""A lean HTTP/1.1 request-head parser for pywsgi (``WSGIHandler.MessageClass``).

pywsgi parses request heads with ``http.client.parse_headers``, which runs the e-mail
package's feed parser: the largest single cost of a WebSocket handshake. This reads the same
lines with the same limits (100 header lines, 64 KiB per line; beyond them the request is
refused with 400) and offers the part of the ``http.client.HTTPMessage`` interface that pywsgi
and gunicorn use.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

__all__ = ["RequestHead", "MAX_HEADERS", "MAX_LINE"]

MAX_HEADERS = 100
MAX_LINE = 65536


class RequestHead:
    """Header lines of one request, in order; look-ups are case-insensitive.

    ``status`` is empty when the head was read completely and well-formed, else it says why
    (pywsgi then answers 400).
    """

    __slots__ = ("status", "_items", "_index")

    def __init__(self, rfile: Any, *_: Any) -> None:
        self.status = ""
        self._items: list[tuple[str, str]] = []
        self._index: dict[str, str] | None = None
        items = self._items
        lines = 0
        while True:
            line = rfile.readline(MAX_LINE + 1)
            if len(line) > MAX_LINE:
                self.status = "Line too long"
                return
            if line in (b"\r\n", b"\n", b""):
                return
            # Folded lines count too: else endless continuation lines grow one header forever.
            lines += 1
            if lines > MAX_HEADERS:
                self.status = "Too many headers"
                return
            text = line.decode("latin-1")
            if text[0] in " \t" and items:  # obsolete line folding (RFC 7230 section 3.2.4)
                name, value = items[-1]
                # One space replaces the fold; a blank continuation adds nothing.
                items[-1] = (name, f"{value} {text.strip()}".strip())
                continue
            name, sep, value = text.partition(":")
            if not sep or not name or name != name.strip():
                self.status = "Invalid header line"
                return
            items.append((name, value.strip()))

    def _lookup(self) -> dict[str, str]:
        index = self._index
        if index is None:
            index = {}
            for name, value in self._items:
                key = name.lower()
                index[key] = f"{index[key]}, {value}" if key in index else value
            self._index = index
        return index

    def lowered(self) -> dict[str, str]:
        """Lower-case names to values; repeated headers joined with ", "."""
        return self._lookup()

    def get(self, name: str, default: Any = None) -> Any:
        return self._lookup().get(name.lower(), default)

    getheader = get

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._lookup()

    def __getitem__(self, name: str) -> str | None:
        return self._lookup().get(name.lower())

    def __delitem__(self, name: str) -> None:
        key = name.lower()
        if key not in self._lookup():
            raise KeyError(name)
        self._items = [(n, v) for n, v in self._items if n.lower() != key]
        self._index = None

    def items(self) -> list[tuple[str, str]]:
        return list(self._items)

    def keys(self) -> list[str]:
        return [name for name, _ in self._items]

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self._items)

    @property
    def headers(self) -> Iterator[str]:
        """Raw header lines, as pywsgi's ``get_environ`` reads them."""
        for name, value in self._items:
            yield f"{name}: {value}\r\n"

    @property
    def typeheader(self) -> str | None:
        return self._lookup().get("content-type")
