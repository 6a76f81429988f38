"""The ``mlsockets.json.v1`` formatter: envelopes as JSON in text messages.

Strict on both sides: compact output (``ensure_ascii=False``), NaN and Infinity refused when
encoding and decoding (RFC 8259 has neither; browsers' ``JSON.parse`` rejects them), numbers
that overflow a float refused, nesting capped (a hostile message gets a ``ValueError``, never
a ``RecursionError``), lone UTF-16 surrogates (``"\\ud800"``) refused because they cannot be
re-encoded as UTF-8 when the data is echoed or broadcast.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from itertools import chain, compress, repeat
from operator import is_
from typing import Any

__all__ = ["DEFAULT_MAX_DEPTH", "JSON_SUBPROTOCOL", "JsonFormatter", "check_nesting"]

JSON_SUBPROTOCOL = "mlsockets.json.v1"

#: Deepest nesting of arrays / objects (maps) a decoded message may have.
DEFAULT_MAX_DEPTH = 64

_values = dict.values


def check_nesting(obj: object, max_depth: int, refused: type | None = None) -> None:
    """Raise ``ValueError`` if decoded data nests lists / dicts deeper than ``max_depth``.

    Also refuses any value of type ``refused`` (msgpack timestamps). Decoders produce exact
    ``list`` and ``dict`` types, so exact type checks suffice. Breadth-first, one level at a
    time, with C iterators: Python only loops over the levels. Call it only when the
    message could be too deep (a cheap count first), since it visits every value.
    """
    level: list[Any] = [obj]
    depth = 0
    while True:
        types = set(map(type, level))
        if refused is not None and refused in types:
            raise ValueError(f"{refused.__name__} values are not supported")
        has_list = list in types
        has_dict = dict in types
        if not (has_list or has_dict):
            return
        depth += 1
        if depth > max_depth:
            raise ValueError(f"nesting deeper than {max_depth}")
        if len(types) == 1:
            level = [*chain.from_iterable(level if has_list else map(_values, level))]
            continue
        nested: list[Any] = []
        if has_list:
            nested.extend(chain.from_iterable(_of_type(level, list)))
        if has_dict:
            nested.extend(chain.from_iterable(map(_values, _of_type(level, dict))))
        level = nested


def _of_type(items: list[Any], cls: type) -> Iterator[Any]:
    return compress(items, map(is_, map(type, items), repeat(cls)))


def _finite_float(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):  # e.g. 1e999
        raise ValueError(f"number out of range: {literal[:40]}")
    return value


def _reject_constant(literal: str) -> object:
    raise ValueError(f"{literal} is not allowed")


def _default(obj: object) -> object:
    # Read-only mappings (Principal.info is a MappingProxyType) encode like dicts.
    if isinstance(obj, Mapping):
        return dict(obj)
    raise TypeError(f"cannot encode {type(obj).__name__} as JSON")


class JsonFormatter:
    """Encodes envelopes as compact JSON text; decodes text messages only.

    Args:
        max_depth: deepest nesting of arrays and objects :meth:`decode` accepts.

    Instances are stateless and safe to share between connections and greenlets.
    """

    name: str = "json"
    subprotocol: str = JSON_SUBPROTOCOL
    binary: bool = False

    def __init__(self, *, max_depth: int = DEFAULT_MAX_DEPTH) -> None:
        self.max_depth = max_depth
        self._encoder = json.JSONEncoder(
            ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=_default
        )
        self._decoder = json.JSONDecoder(parse_float=_finite_float, parse_constant=_reject_constant)

    def encode(self, obj: object) -> str:
        """Serialize ``obj`` (JSON types, any ``Mapping``) to a text message.

        Raises:
            TypeError: ``obj`` holds a value JSON cannot represent.
            ValueError: NaN or Infinity, a circular reference, or nesting too deep.
        """
        try:
            return self._encoder.encode(obj)
        except RecursionError:
            raise ValueError("nesting too deep to encode") from None

    def decode(self, message: str | bytes) -> object:
        """Parse one text message.

        Raises:
            ValueError: a binary message, invalid JSON, NaN / Infinity or an out-of-range
                number, nesting deeper than ``max_depth``, or a lone surrogate escape. The
                message is safe to send back to the client.
        """
        if not isinstance(message, str):
            raise ValueError(f"{JSON_SUBPROTOCOL} expects text messages, got a binary message")
        try:
            obj = self._decoder.decode(message)
        except RecursionError:
            raise ValueError(f"invalid JSON: nesting deeper than {self.max_depth}") from None
        except ValueError as exc:  # JSONDecodeError, _finite_float, _reject_constant, int digits
            raise ValueError(f"invalid JSON: {exc}") from None
        # Opening brackets bound the nesting: most messages skip the walk.
        if message.count("[") + message.count("{") > self.max_depth:
            try:
                check_nesting(obj, self.max_depth)
            except ValueError as exc:
                raise ValueError(f"invalid JSON: {exc}") from None
        # Only a \uD800-\uDFFF escape can make a lone surrogate ("\\" is a memchr).
        if "\\" in message and ("\\ud" in message or "\\uD" in message):
            try:
                self._encoder.encode(obj).encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError("invalid JSON: lone surrogate in a string") from None
        return obj

    def __repr__(self) -> str:
        return f"<JsonFormatter {self.subprotocol}>"
